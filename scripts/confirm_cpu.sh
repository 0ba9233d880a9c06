#!/usr/bin/env bash
# The confirmation runs of the rules in experiments/rules/paper.yaml at `cpu` scale: table2 (44 cells),
# fig1 (2) and table3 (6) on the rules' confirmatory seeds, one thread a cell, two cells at a time.
# Seed by seed, so that each seed-paired comparison comes from one machine even when a session (and its
# machine) ends between two seeds; fig1 first within a seed, so that table2 shares its every-step RMS(U)
# runs of A and G with warmup. Resumable: run it again (from a clean clone of the same commit) to go on.
#   bash scripts/confirm_cpu.sh            # then: make table EXP=<study> SCALE=cpu for fig1, table3, table2
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory setup
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "confirm_cpu.sh: the working tree has changes; confirmation runs come from a clean commit" >&2
  exit 2
fi
seeds=$(.venv/bin/python -c "from factorial.report.rules import load_rules; print(*load_rules().confirmatory_seeds)")
for seed in $seeds; do
  for exp in fig1 table3 table2; do
    status=0
    .venv/bin/python -m factorial.sweep --exp "$exp" --scale cpu --jobs 2 --cpus-per-cell 1 --seeds "$seed" -- logger=none || status=$?
    [ "$status" -le 1 ] || exit "$status"   # 1: a cell failed (the next call retries it); else stop
  done
done
