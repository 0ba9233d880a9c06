# factorial — every target sets up .venv first, so on a fresh clone `make test` or `make sweep` is enough.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast clean-venv sweep table

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
# with PARTITION= and TIME= (minutes) for submitit/SLURM, and CPUS=, GPUS=, MEM= (GB, SLURM only) per cell.
EXP ?= table2
SCALE ?= cpu
JOBS ?= 1
LAUNCHER ?= local
PARTITION ?=
TIME ?=
CPUS ?=
GPUS ?=
MEM ?=
ARGS ?=
SUBMIT_ARGS = $(strip $(if $(PARTITION),--partition $(PARTITION)) $(if $(TIME),--time-min $(TIME)) \
	$(if $(CPUS),--cpus-per-cell $(CPUS)) $(if $(GPUS),--gpus-per-cell $(GPUS)) $(if $(MEM),--mem-per-cell $(MEM)))

# The sweep ends by building the study's tables (also when some cell failed: status 1).
sweep: setup
	@$(PY) -m factorial.sweep --exp $(EXP) --scale $(SCALE) --jobs $(JOBS) --launcher $(LAUNCHER) $(SUBMIT_ARGS) -- $(ARGS); \
	status=$$?; \
	if [ $$status -le 1 ]; then $(PY) -m factorial.table --exp $(EXP) --scale $(SCALE) $(TABLE_ARGS) || status=$$?; fi; \
	exit $$status

# A study's tables, figures and REPORT.md from what its runs wrote: results/$(EXP)/$(SCALE)/.
# TABLE_ARGS="--source wandb" reads the runs from W&B instead; TABLE_ARGS="--wandb" also logs a summary run.
TABLE_ARGS ?=

table: setup
	$(PY) -m factorial.table --exp $(EXP) --scale $(SCALE) $(TABLE_ARGS)

# Optimizer step time against torch/transformers peers, state bytes, and the trainer's overhead:
# results/bench/<device>.{json,md}. `make bench BENCH_ARGS=--quick` checks the plumbing in seconds;
# `.venv/bin/pip install -e '.[bench]'` adds transformers' Adafactor to the comparison.
BENCH_ARGS ?=

.PHONY: bench
bench: setup
	$(PY) -m factorial.bench $(BENCH_ARGS)
