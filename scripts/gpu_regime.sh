#!/usr/bin/env bash
# The gpu-scale no-warmup screen (experiments/regime_gpu.yaml at conf/scale/gpu.yaml) on a lent GPU
# machine without network: its four cells at once on the one GPU, under a time limit; the runs' small
# files (config, meta, metrics, summary, train.log; no checkpoints) come back as OUT_DIR/runs.tar.gz,
# to unpack in the repository's root, and the sweep's output as OUT_DIR/sweep.log. A cell the limit
# stops keeps its metrics so far; the same command later resumes it from its last checkpoint, where
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
if [ ! -d .whl ] || ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run scripts/gpu_wheels.sh where PyPI answers, and carry .whl" >&2
    exit 2
fi
site=$(mktemp -d /tmp/factorial-site.XXXX)
"$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD/src" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
rc=0
# shellcheck disable=SC2086
timeout "${REGIME_TIMEOUT:-240}" "$py" -m factorial.sweep --exp regime_gpu --scale gpu --jobs 4 -- logger=none ${ARGS:-} \
    > "$out/sweep.log" 2>&1 || rc=$?
tr '\r' '\n' < "$out/sweep.log" | grep -v ' step [0-9]*/' | tail -20 || true
tar -czf "$out/runs.tar.gz" --exclude='checkpoints' --exclude='.lock' --exclude='wandb' runs/regime_gpu
echo "sweep exit $rc"
