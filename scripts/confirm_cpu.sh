#!/usr/bin/env bash
# The confirmation runs of the rules in experiments/rules/paper.yaml at `cpu` scale: table2 (44 cells),
# fig1 (2) and table3 (6) on the rules' confirmatory seeds, seed by seed; fig1 first within a seed, so that
# table2 shares its every-step RMS(U) runs of A and G with warmup. Resumable (scripts/registered_runs.sh).
#   bash scripts/confirm_cpu.sh            # then: make table EXP=<study> SCALE=cpu for fig1, table3, table2
set -euo pipefail
SEED_MAJOR=1 exec bash "$(dirname "$0")/registered_runs.sh" paper cpu fig1 table3 table2
