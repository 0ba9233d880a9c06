# factorial — every target sets up .venv first, so on a fresh clone `make test` or `make sweep` is enough.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup test test-fast clean-venv sweep table smoke

# `make help` (also plain `make`): the targets, their variables, the studies and scales.
help:
	@echo "factorial: reproducible ablation studies of the Adafactor optimizer (README.md, docs/)"
	@echo ""
	@echo "  make smoke                     a four-cell study at smoke scale: about a minute, plumbing only"
	@echo "  make sweep [EXP=] [SCALE=] [JOBS=] [ARGS=]   run a study, then build its tables (default EXP=table2 SCALE=cpu)"
	@echo "  make table [EXP=] [SCALE=] [TABLE_ARGS=]      rebuild results/EXP/SCALE/ from its runs.jsonl.gz and runs/EXP/SCALE/"
	@echo "  make bench [BENCH_ARGS=--quick]               optimizer speed and memory: results/bench/"
	@echo "  make test | test-fast [TEST_WORKERS=auto]    the test suite on every core (test-fast skips the slow end-to-end tests)"
	@echo "  make setup | clean-venv        create (or remove) .venv with the pinned dependencies"
	@echo ""
	@echo "  JOBS=auto (default): one cell per CPU core (one per GPU on a GPU machine); LAUNCHER=local|submitit_local|slurm"
	@echo "  runs go to runs/, or to \$$FACTORIAL_RUNS when set (sweep, table and dashboard alike)"
	@echo "  studies (EXP=): $(basename $(notdir $(wildcard experiments/*.yaml)))"
	@echo "  scales (SCALE=): $(basename $(notdir $(wildcard conf/scale/*.yaml)))"
	@echo ""
	@echo "  .venv/bin/python -m factorial.train --help    every config group, row and key of one cell"
	@echo "  .venv/bin/python -m factorial.sweep --help    the sweep's options and what each study runs"
	@echo "  .venv/bin/python -m factorial.train -m scale=smoke row=A,B   a sweep from the command line, as Hydra's -m"

setup: $(STAMP)

# Re-installs when pyproject.toml changes. torch==2.13.0 resolves to the CPU wheel on CPU machines;
# see README ("GPU machines") for a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# pytest-xdist workers: one per core (auto), or a number; 0 runs in this process (for pdb).
TEST_WORKERS ?= auto

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

clean-venv:
	rm -rf $(VENV)

# A study (experiments/$(EXP).yaml) at a scale (conf/scale/$(SCALE).yaml), resumable: re-running skips
# finished cells. `make sweep EXP=fig1 SCALE=smoke JOBS=2 ARGS="logger=none"` (JOBS=auto: one cell per core,
# or per GPU); LAUNCHER=submitit_local|slurm with PARTITION= and TIME= (minutes) for submitit/SLURM, and
# CPUS=, GPUS=, MEM= (GB, SLURM only) per cell.
EXP ?= table2
SCALE ?= cpu
JOBS ?= auto
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

# The first minute: the smoke study at smoke scale (four tiny cells, local logs only), then its tables.
smoke: setup
	@$(MAKE) --no-print-directory sweep EXP=smoke SCALE=smoke ARGS="logger=none $(ARGS)"

# A study's tables, figures and REPORT.md from what its runs wrote: results/$(EXP)/$(SCALE)/.
# TABLE_ARGS="--source wandb" reads the runs from W&B instead; TABLE_ARGS="--wandb" also logs a summary run.
TABLE_ARGS ?=

table: setup
	$(PY) -m factorial.table --exp $(EXP) --scale $(SCALE) $(TABLE_ARGS)

# A study's W&B dashboards, from results/$(EXP)/$(SCALE)/ (make table first): a saved workspace of the project
# filtered to group $(EXP)/$(SCALE), and a report. Online only; DASHBOARD_ARGS="--entity E --project P" to choose.
DASHBOARD_ARGS ?=

.PHONY: dashboard
dashboard: setup
	$(PY) -m factorial.dashboard --exp $(EXP) --scale $(SCALE) $(DASHBOARD_ARGS)

# Optimizer step time against torch/transformers peers, state bytes, and the trainer's overhead:
# results/bench/<device>.{json,md}. `make bench BENCH_ARGS=--quick` checks the plumbing in seconds
# (into results/bench/<device>-quick.*; a run with fewer measurements goes to <device>-partial.*);
# `.venv/bin/pip install -e '.[bench]'` adds transformers' Adafactor to the comparison.
BENCH_ARGS ?=

.PHONY: bench
bench: setup
	$(PY) -m factorial.bench $(BENCH_ARGS)
