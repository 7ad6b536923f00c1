# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv; torch is pinned to the CPU build that lies on this machine's disk.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
# The add-on is also tested under Blender 5.0 (bpy 5.0.1, no torch); its tests start the
# backend with the main venv's Python.
VENV5  := .venv-bpy5
PY5    := $(VENV5)/bin/python
STAMP5 := $(VENV5)/.installed

.PHONY: install install-bpy5 test test-bpy5 demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e '.[backend,train,blender,dev]'
	touch $(STAMP)

install-bpy5: $(STAMP5)

$(STAMP5): Makefile
	test -x $(PY5) || $(PYTHON) -m venv $(VENV5)
	$(PY5) -m pip install --quiet bpy==5.0.1 "numpy<2" pyzmq==27.3.0 "pytest>=8" "pytest-timeout>=2.3"
	touch $(STAMP5)

test: install $(STAMP5)
	$(PY) -m pytest -q -ra
	$(MAKE) test-bpy5

test-bpy5: install $(STAMP5)
	DIMITRA_SERVER_PYTHON=$(CURDIR)/$(PY) $(PY5) -m pytest -q -ra tests/addon

demo: install
	$(PY) -m backend.demo --out demo_output

bench: install
	$(PY) -m tests.benchmarks.run

clean:
	rm -rf $(VENV) $(VENV5) demo_output .pytest_cache build dist
