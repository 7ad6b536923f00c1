# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv; torch is pinned to the CPU build that lies on this machine's disk.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
# Blender 5.0 is tested too: a second venv with the backend and bpy 5.0.1 (the `blender`
# extra pins 4.5.15) runs the Blender-side tests (bake, add-on).
VENV5  := .venv-bpy5
PY5    := $(VENV5)/bin/python
STAMP5 := $(VENV5)/.installed
# setuptools warns on every editable install that mapped folders (backend/ -> dimitra.backend)
# could shadow the package; they cannot, as `dimitra` is the only name installed.
export PYTHONWARNINGS := ignore:Editable installation:UserWarning

.PHONY: install install-bpy5 test test-bpy5 demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e '.[backend,train,blender,scale,dev]'
	touch $(STAMP)

install-bpy5: $(STAMP5)

$(STAMP5): pyproject.toml Makefile
	test -x $(PY5) || $(PYTHON) -m venv $(VENV5)
	$(PY5) -m pip install --quiet --upgrade pip
	$(PY5) -m pip install --quiet $(TORCH) -e '.[backend,dev]' bpy==5.0.1
	touch $(STAMP5)

test: install $(STAMP5)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra
	$(MAKE) test-bpy5

test-bpy5: install $(STAMP5)
	DIMITRA_SERVER_PYTHON=$(CURDIR)/$(PY5) $(PY5) -m pytest -q -ra tests/blender tests/addon

demo: install
	$(PY) -m dimitra.backend.demo --out demo_output

bench: install
	$(PY) -m tests.benchmarks.run

clean:
	rm -rf $(VENV) $(VENV5) demo_output .pytest_cache build dist
