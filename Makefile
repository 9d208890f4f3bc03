# Two commands on a fresh machine:
#   make demo   the main job on the built-in phantom (no download)
#   make test   the test suite (what .ci/run calls)
# Each creates .venv and installs the pinned requirements when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_out
DEMO_ARGS ?=

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

.PHONY: venv demo test lint bench
venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m launch.demo --out $(DEMO_OUT) $(DEMO_ARGS)

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -rs -n 2 --dist loadgroup

lint: $(VENV)/.installed
	$(PY) -m ruff check .

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done
