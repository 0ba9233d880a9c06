#!/usr/bin/env bash
# The pre-registered runs of the deep post-LN regime (experiments/rules/deep.yaml) at `cpu_deep` scale:
# table2_deep (32 cells) and then deep_lr (16), on the rules' seeds, one thread a cell, two cells at a time.
# Seed by seed, so that each seed-paired comparison comes from one machine even when a session (and its
# machine) ends between two seeds. Resumable: run it again (from a clean clone of a commit with the same
# rules) to go on; the runs stored in results/ are not trained again.
#   bash scripts/deep_cpu.sh      # then: make table EXP=table2_deep SCALE=cpu_deep (and EXP=deep_lr)
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory setup
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "deep_cpu.sh: the working tree has changes; pre-registered runs come from a clean commit" >&2
  exit 2
fi
seeds=$(.venv/bin/python -c "from factorial.report.rules import load_rules; print(*load_rules('deep').confirmatory_seeds)")
for exp in table2_deep deep_lr; do
  for seed in $seeds; do
    status=0
    .venv/bin/python -m factorial.sweep --exp "$exp" --scale cpu_deep --jobs 2 --cpus-per-cell 1 --seeds "$seed" -- logger=none || status=$?
    [ "$status" -le 1 ] || exit "$status"   # 1: a cell failed (the next call retries it); else stop
  done
done
