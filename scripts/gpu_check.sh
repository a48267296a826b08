#!/usr/bin/env bash
# The device checks, in one go, for a machine with an NVIDIA GPU and CuPy (run from the repository root):
# the gpu-marked tests, the op and layer gradient checks on the GPU, a short training run, and the GPU
# benchmarks. Logs go to $OUT (default: a new folder under $TMPDIR or /tmp, printed at the start), the
# training run to $RUN_DIR (default $OUT/run-tiny). Exits 1 if any step failed (the benchmarks only print).
# Usage: scripts/gpu_check.sh [FASHION_MNIST_DIR]
set -u -o pipefail
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$out"
echo "logs: $out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
data=${1:-bundled}
failed=()
step() { echo; echo "== $* =="; }
check() {  # check NAME STATUS: remember a failed step
    if [ "$2" -ne 0 ]; then failed+=("$1 (exit $2)"); echo "FAILED: $1 (exit $2)"; fi
}

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
$py -c "import cupy, numpy, numba; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__)"
check environment $?

step "gpu-marked tests (real CuPy)"
timeout 120 $py -m pytest -q -m gpu -n 8 -p no:cacheprovider > "$out/pytest_gpu.txt" 2>&1
check "gpu tests" $?
tail -15 "$out/pytest_gpu.txt"

step "minigrad gradcheck --device gpu (every op and layer)"
timeout 45 $py -m minigrad.cli gradcheck --device gpu > "$out/gradcheck_gpu.txt" 2>&1
check "minigrad gradcheck" $?
tail -2 "$out/gradcheck_gpu.txt"

step "alexnet train on the GPU (alexnet-tiny, data: $data)"
timeout 90 $py -m alexnet.cli train --device gpu --data "$data" --epochs 3 --out "${RUN_DIR:-$out/run-tiny}" --no-progress \
    --no-plots 2>&1 | tee "$out/train_gpu.txt"
check "alexnet train" $?

step "training steps: paper AlexNet, batch 128"
timeout 60 $py benchmarks/train_step.py --model alexnet --device gpu --batch-size 128 2>&1 | tee "$out/train_step_gpu.txt"

step "per-layer benchmark on the GPU"
timeout 60 $py benchmarks/layers.py --device gpu 2>&1 | tee "$out/layers_gpu.txt"

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]}"
    exit 1
fi
echo "all checks passed (logs: $out)"
