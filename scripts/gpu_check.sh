#!/usr/bin/env bash
# The device checks, in one go, for a machine with an NVIDIA GPU and CuPy (run from the repository root):
# the gpu-marked tests, the op/layer/model gradient checks on the GPU, a short training run, and the
# GPU benchmarks. Logs go to $OUT (or ./gpu-check-out), the training run to $RUN_DIR (default $OUT/run-tiny).
# Usage: scripts/gpu_check.sh [FASHION_MNIST_DIR]
set -u
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
data=${1:-bundled}
step() { echo; echo "== $* =="; }

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
$py -c "import cupy, numpy, numba; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__)"

step "gpu-marked tests (real CuPy)"
timeout 120 $py -m pytest -q -m gpu -n 8 -p no:cacheprovider 2>&1 | tail -15 | tee "$out/pytest_gpu.txt"

step "minigrad gradcheck --device gpu"
timeout 45 $py -m minigrad.cli gradcheck --device gpu > "$out/gradcheck_gpu.txt" 2>&1; echo "exit $?"
tail -2 "$out/gradcheck_gpu.txt"

step "alexnet train on the GPU (alexnet-tiny, data: $data)"
timeout 90 $py -m alexnet.cli train --device gpu --data "$data" --epochs 3 --out "${RUN_DIR:-$out/run-tiny}" --no-progress \
    --no-plots 2>&1 | tee "$out/train_gpu.txt"

step "training steps: paper AlexNet, batch 128"
timeout 60 $py benchmarks/train_step.py --model alexnet --device gpu --batch-size 128 2>&1 | tee "$out/train_step_gpu.txt"

step "per-layer benchmark on the GPU"
timeout 60 $py benchmarks/layers.py --device gpu 2>&1 | tee "$out/layers_gpu.txt"
