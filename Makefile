# GNU make. `make demo` / `make test` set everything up on first use (see README "Install").
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Interpreter that creates the venv: Python 3.11 preferred (the pins need >= 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Re-run the install steps whenever a file that decides what gets installed changes.
STAMP := $(VENV)/.setup-stamp
SETUP_INPUTS := constraints.txt setup.cfg setup.py pyproject.toml
PYTEST_ARGS ?=

.PHONY: setup test demo lint gpu-wheels

setup: $(STAMP)

# Only created when missing: an existing venv is topped up by the steps below, never removed.
$(PY):
	@test -n "$(PYTHON)" || { echo "no python3.11 / python3 found to create $(VENV)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# (a) torch first: basicsr's sdist setup.py imports torch. (b) basicsr without build isolation, so that it sees
# that torch. (c) this project, editable, with the mmagic, dev and export (ONNX) extras. All pip calls honour
# constraints.txt.
$(STAMP): $(SETUP_INPUTS) | $(PY)
	$(PIP) install -c constraints.txt torch torchvision numpy setuptools wheel
	$(PIP) install --no-build-isolation -c constraints.txt basicsr==1.4.2
	$(PIP) install --no-build-isolation -c constraints.txt -e '.[mmagic,dev,export]'
	$(PY) -m ssl_plugin.basicsr_plugin install
	touch $@

# pytest exit code 5 means "no tests collected": that is a failure, not a green run.
test: setup
	@rc=0; $(PY) -m pytest -q tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

demo: setup
	$(PY) -m ssl_plugin.demo

lint: setup
	$(VENV)/bin/ruff check .

# Wheels that benchmarks/gpu_check.sh installs offline on a GPU machine without basicsr or network (into .gpu_wheels/,
# git-ignored; GPU_PY=3.12 is that machine's Python, for the one compiled wheel).
gpu-wheels: setup
	PYTHON=$(PY) bash benchmarks/gpu_wheels.sh
