# Sourced by scripts/gpu_check.sh and scripts/gpu_regime.sh, from the repository's root, with $py set:
# installs the carried wheels of .whl/ (scripts/gpu_wheels.sh) into a temporary directory and puts it
# and src/ on PYTHONPATH, so the image's own Python (with its CUDA torch) runs factorial unchanged.
if [ ! -d .whl ] || ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run scripts/gpu_wheels.sh where PyPI answers, and carry .whl" >&2
    exit 2
fi
site=$(mktemp -d /tmp/factorial-site.XXXX)
"$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD/src" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
