#!/usr/bin/env bash
# The pre-registered runs of the deep post-LN regime (experiments/rules/deep.yaml) at `cpu_deep` scale:
# table2_deep (32 cells) on each of the rules' seeds, then deep_lr (16). Resumable (scripts/registered_runs.sh).
#   bash scripts/deep_cpu.sh      # then: make table EXP=table2_deep SCALE=cpu_deep (and EXP=deep_lr)
set -euo pipefail
exec bash "$(dirname "$0")/registered_runs.sh" deep cpu_deep table2_deep deep_lr
