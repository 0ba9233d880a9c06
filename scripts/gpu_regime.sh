#!/usr/bin/env bash
# The gpu-scale no-warmup screen (experiments/regime_gpu.yaml at conf/scale/gpu.yaml) on a lent GPU
# machine without network: its four cells at once on the one GPU, under a time limit; the runs' small
# files (config, meta, metrics, summary, train.log; no checkpoints) come back as OUT_DIR/runs.tar.gz,
# to unpack in runs/, and the sweep's output as OUT_DIR/sweep.log. The runs root is $FACTORIAL_RUNS, else
# the repository's runs/. The runs stored in results/regime_gpu/gpu/runs.jsonl.gz count as finished; with
# REGIME_RERUN=1 the sweep ignores the stores and trains every cell again (to replace stored runs, drop them
# from the store first: make table refuses a run directory that differs from its stored run).
# A cell the limit stops keeps its metrics so far; the same command later resumes it from its last checkpoint, where
# the checkpoints were kept.
#
#   here, once:   bash scripts/gpu_wheels.sh          (fills .whl/ from PyPI)
#   there:        bash scripts/gpu_regime.sh OUT_DIR  (.whl and cache/ carried along)
#
# Extra sweep overrides in ARGS (e.g. ARGS="train.device=cpu train.steps=6" for a dry run of the plumbing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_regime.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
rc=0
results=results
if [ "${REGIME_RERUN:-0}" = 1 ]; then results=$(mktemp -d); fi  # no store: every cell is trained
# shellcheck disable=SC2086
timeout "${REGIME_TIMEOUT:-240}" "$py" -m factorial.sweep --exp regime_gpu --scale gpu --jobs 4 --results "$results" -- logger=none ${ARGS:-} \
    > "$out/sweep.log" 2>&1 || rc=$?
tr '\r' '\n' < "$out/sweep.log" | grep -v ' step [0-9]*/' | tail -20 || true
tar -czf "$out/runs.tar.gz" --exclude='checkpoints' --exclude='.lock' --exclude='wandb' -C "${FACTORIAL_RUNS:-runs}" regime_gpu
echo "sweep exit $rc"
