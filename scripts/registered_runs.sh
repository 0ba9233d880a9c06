#!/usr/bin/env bash
# The pre-registered runs of a set of studies at one scale, on the seeds of the rules they name: one thread a
# cell, two cells at a time, seed by seed (SEED_MAJOR=1: all studies of a seed, then the next seed), so that
# each seed-paired comparison comes from one machine even when a session (and its machine) ends between two
# seeds. Only from a clean commit; resumable: run it again (the runs stored in results/ are not retrained).
#   bash scripts/registered_runs.sh RULES SCALE STUDY...     (confirm_cpu.sh and deep_cpu.sh call it)
set -euo pipefail
cd "$(dirname "$0")/.."
rules=${1:?usage: scripts/registered_runs.sh RULES SCALE STUDY...}
scale=${2:?usage: scripts/registered_runs.sh RULES SCALE STUDY...}
shift 2
make --no-print-directory setup
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "registered_runs.sh: the working tree has changes; pre-registered runs come from a clean commit" >&2
  exit 2
fi
seeds=$(.venv/bin/python -c "from factorial.report.rules import load_rules; print(*load_rules('$rules').confirmatory_seeds)")
run() {
  status=0
  .venv/bin/python -m factorial.sweep --exp "$1" --scale "$scale" --jobs 2 --cpus-per-cell 1 --seeds "$2" -- logger=none || status=$?
  [ "$status" -le 1 ] || exit "$status"   # 1: a cell failed (the next call retries it); else stop
}
if [ "${SEED_MAJOR:-0}" = 1 ]; then
  for seed in $seeds; do for exp in "$@"; do run "$exp" "$seed"; done; done
else
  for exp in "$@"; do for seed in $seeds; do run "$exp" "$seed"; done; done
fi
