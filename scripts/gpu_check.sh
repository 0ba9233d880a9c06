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
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
{
    nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"
    "$py" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # shellcheck disable=SC2086
    timeout "${BENCH_TIMEOUT:-420}" "$py" -m factorial.bench --device "$device" --out "$out" ${BENCH_ARGS:-}
} 2>&1 | tee "$out/log.txt"
