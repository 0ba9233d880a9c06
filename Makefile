# factorial — every target sets up .venv first, so on a fresh clone `make test` or `make sweep` is enough.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast train clean-venv sweep

setup: $(STAMP)

# Re-installs when pyproject.toml changes. torch==2.13.0 resolves to the CPU wheel on CPU machines;
# see README ("GPU machines") for a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)

# A study (experiments/$(EXP).yaml) at a scale (conf/scale/$(SCALE).yaml), resumable: re-running skips
# finished cells. `make sweep EXP=fig1 SCALE=smoke JOBS=2 ARGS="logger=none"`; LAUNCHER=submitit_local|slurm
# with PARTITION= and TIME= (minutes) for submitit/SLURM.
EXP ?= table2
SCALE ?= cpu
JOBS ?= 1
LAUNCHER ?= local
PARTITION ?=
TIME ?=
ARGS ?=

sweep: setup
	$(PY) -m factorial.sweep --exp $(EXP) --scale $(SCALE) --jobs $(JOBS) --launcher $(LAUNCHER) $(if $(PARTITION),--partition $(PARTITION)) $(if $(TIME),--time-min $(TIME)) -- $(ARGS)
