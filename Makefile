# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv; torch is pinned to the CPU build that lies on this machine's disk.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e '.[backend,train,blender,dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -ra

demo: install
	$(PY) -m backend.demo --out demo_output

bench: install
	$(PY) -m tests.benchmarks.run

clean:
	rm -rf $(VENV) demo_output .pytest_cache
