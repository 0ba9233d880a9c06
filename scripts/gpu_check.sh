#!/usr/bin/env bash
# The CUDA checks of the benchmark issue, as one short script for a lent GPU machine (no network there):
# the step-time table on CUDA, the no-host-device-sync check of every setting of our optimizer
# (torch.cuda.set_sync_debug_mode("error")), the trainer overhead, and the model FLOP utilisation of
# a bf16 cell of the base preset. Its output: <out>/cuda.json and cuda.md, and log.txt.
#
#   here, once:   bash scripts/gpu_wheels.sh        (fills .whl/ from PyPI)
#   there:        bash scripts/gpu_check.sh OUT_DIR  (the .whl and cache folders carried along)
#
# A local dry run of the plumbing, on the CPU: PYTHON=.venv/bin/python DEVICE=cpu BENCH_ARGS=--quick \
#   bash scripts/gpu_check.sh /tmp/gpu-check
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"
if [ ! -d .whl ] || ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run scripts/gpu_wheels.sh where PyPI answers, and carry .whl" >&2
    exit 2
fi
site=$(mktemp -d /tmp/factorial-site.XXXX)
"$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD/src" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
{
    nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"
    "$py" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # shellcheck disable=SC2086
    timeout "${BENCH_TIMEOUT:-420}" "$py" -m factorial.bench --device "$device" --out "$out" ${BENCH_ARGS:-}
} 2>&1 | tee "$out/log.txt"
