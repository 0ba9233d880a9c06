#!/usr/bin/env bash
# The CUDA checks of the benchmark issues, as one short script for a lent GPU machine (no network there), in
# this order: the compiled path (Adafactor(compile=True)) against the reference on the device for every
# Adafactor row of Table 2 and the other knobs (largest relative differences, and an 8192x512 matrix against
# float64); the step-time table of the base preset with fused Adam, transformers' Adafactor and the compiled
# path (with and without its CUDA graphs), how often those graphs were captured and replayed, and the Targets
# table; the no-host-device-sync check of every setting of our optimizer (torch.cuda.set_sync_debug_mode
# ("error")); and a bf16 cell of the base preset with the default optimizer path and with optim.compile=true
# (model FLOP utilisation, and the optimizer's share of a cell's step). Its output: <out>/cuda-partial.json
# and .md, and log.txt.
#
#   here, once:   bash scripts/gpu_wheels.sh        (fills .whl/ from PyPI)
#   there:        bash scripts/gpu_check.sh OUT_DIR  (the .whl and cache folders carried along)
#
# BENCH_ARGS replaces the default measurement list below (--compiled --parity are always added);
# BENCH_TIMEOUT (seconds, default 420) stops the benchmark with SIGINT, after which it writes what it has
# measured (marked "Interrupted") and the script exits 124, so the whole script stays within 8 minutes.
#
# A local dry run of the plumbing, on the CPU (a few minutes: the compiled path compiles each case):
#   PYTHON=.venv/bin/python DEVICE=cpu BENCH_ARGS=--quick bash scripts/gpu_check.sh /tmp/gpu-check
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
bench_args=${BENCH_ARGS:---presets base --rounds 10 --no-variants --no-kernels --no-overhead}
mkdir -p "$out"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
{
    nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"
    "$py" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # shellcheck disable=SC2086
    timeout -s INT -k 30 "${BENCH_TIMEOUT:-420}" "$py" -m factorial.bench --device "$device" --out "$out" \
        $bench_args --compiled --parity
} 2>&1 | tee "$out/log.txt"
