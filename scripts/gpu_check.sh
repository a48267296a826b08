#!/usr/bin/env bash
# Everything the GPU path needs measured, in one run of at most 8 minutes, on a machine with an NVIDIA GPU,
# CuPy, numba-cuda and (for the comparison columns) PyTorch with CUDA. Run from the repository root:
#
#     scripts/gpu_check.sh            # or: OUT=/some/folder PYTHON=python3 scripts/gpu_check.sh
#
# Steps, in order of importance (a step starts only while enough of the 8 minutes is left for it):
#   1. the environment: nvidia-smi, CuPy / CUDA / numba-cuda / torch versions
#   2. pytest -m gpu: every gpu-marked test on real CuPy (ops, kernels against their twins, amp)
#   3. minigrad selfcheck --device gpu: gradchecks, layers vs the CPU, GPU kernels, alexnet-tiny training,
#      the paper's net at batch 128 (images/s, peak memory), fp16 and TF32 against fp32 (JSON kept)
#   4. alexnet train --device gpu --precision fp16 on alexnet-tiny (2 short epochs; metrics.jsonl shown)
#   5. benchmarks/train_step.py, the paper's net at batch 128, fp32 / tf32 / fp16, each beside PyTorch+cuDNN
#      in the same mode, with the split by layer kind
#   6. benchmarks/layers.py --device gpu: each layer against cuDNN (if time is left)
# Everything is written under $OUT (default: a new folder under $TMPDIR or /tmp): one log per step,
# selfcheck.json, and summary.txt (the figures the issue asks for: images/s per precision beside PyTorch's,
# the ratio against its target, and the time one ImageNet epoch of 1.28M images would take).
# Exits 1 if the environment, the gpu tests, the selfcheck or the fp16 training run failed (the benchmarks only
# print).
set -u -o pipefail
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM  # the real GPU, not Numba's simulator
py=${PYTHON:-python3}
budget_s=${GPU_CHECK_BUDGET_S:-480}
start=$SECONDS
failed=()
skipped=()
echo "logs: $out (time budget ${budget_s} s)"

step() { echo; echo "== $* ($((SECONDS - start)) s) =="; }
check() {  # check NAME STATUS: remember a failed step
    if [ "$2" -ne 0 ]; then failed+=("$1 (exit $2)"); echo "FAILED: $1 (exit $2)"; fi
}
# limit MAX MIN: the timeout for a step that may take MAX seconds; prints 0 when less than MIN is left
limit() {
    local left=$((budget_s - (SECONDS - start)))
    if [ "$left" -lt "$2" ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

step environment
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    $py - <<'EOF'
import numpy, numba
import cupy
print("cupy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "| numpy", numpy.__version__,
      "| numba", numba.__version__)
try:
    from numba import cuda
    print("numba.cuda:", getattr(cuda, "implementation", "?"), "| available:", cuda.is_available())
except Exception as exc:
    print("numba.cuda: not importable:", exc)
try:
    import torch
    print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
except Exception as exc:
    print("torch: not importable:", exc)
EOF
} 2>&1 | tee "$out/environment.txt"
check environment "${PIPESTATUS[0]}"

t=$(limit 130 40)
step "gpu-marked tests on real CuPy (timeout ${t} s)"
if [ "$t" -gt 0 ]; then
    timeout "$t" $py -m pytest -q -m gpu -n 8 -p no:cacheprovider > "$out/pytest_gpu.txt" 2>&1
    check "pytest -m gpu" $?
    tail -25 "$out/pytest_gpu.txt"
else skipped+=("pytest -m gpu"); fi

t=$(limit 110 60)
step "minigrad selfcheck --device gpu (timeout ${t} s)"
if [ "$t" -gt 0 ]; then
    timeout "$t" $py -m minigrad selfcheck --device gpu --json "$out/selfcheck.json" \
        --plugin alexnet.selfcheck:checks 2>&1 | tee "$out/selfcheck.txt"
    check "minigrad selfcheck" "${PIPESTATUS[0]}"
else skipped+=("minigrad selfcheck"); fi

t=$(limit 40 25)
step "alexnet train --device gpu --precision fp16: alexnet-tiny, 2 short epochs, through the GPU kernels, the batch prefetcher and the loss scaler (timeout ${t} s)"
if [ "$t" -gt 0 ]; then
    rm -rf "$out/train_fp16"
    timeout "$t" $py -m alexnet train --device gpu --precision fp16 --data bundled --epochs 2 --batch-size 128 \
        --max-train-images 2560 --no-plots --no-progress --out "$out/train_fp16" 2>&1 | tee "$out/train_fp16.txt"
    check "alexnet train --precision fp16" "${PIPESTATUS[0]}"
    cat "$out/train_fp16/metrics.jsonl" 2>/dev/null
else skipped+=("alexnet train fp16"); fi

for precision in fp32 tf32 fp16; do
    t=$(limit 55 35)
    step "training steps: paper AlexNet, batch 128, $precision, beside PyTorch (timeout ${t} s)"
    if [ "$t" -gt 0 ]; then
        timeout "$t" $py benchmarks/train_step.py --model alexnet --device gpu --batch-size 128 \
            --precision "$precision" --budget 6 --split-steps 2 2>&1 | tee "$out/train_step_$precision.txt"
    else skipped+=("train_step $precision"); fi
done

t=$(limit 45 30)
step "per-layer benchmark on the GPU (timeout ${t} s)"
if [ "$t" -gt 0 ]; then
    timeout "$t" $py benchmarks/layers.py --device gpu --budget 0.5 2>&1 | tee "$out/layers_gpu.txt"
else skipped+=("layers.py"); fi

step summary
$py - "$out" <<'EOF' | tee "$out/summary.txt"
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
env = (out / "environment.txt").read_text() if (out / "environment.txt").exists() else ""
print("GPU:", env.splitlines()[1] if len(env.splitlines()) > 1 else "?")
pytest_log = out / "pytest_gpu.txt"
if pytest_log.exists():
    lines = [l for l in pytest_log.read_text().splitlines() if re.search(r"\d+ (passed|failed|skipped)", l)]
    print("pytest -m gpu:", lines[-1].strip("= ") if lines else "no summary line (timed out?)")
report = out / "selfcheck.json"
if report.exists():
    sc = json.loads(report.read_text())
    print(f"selfcheck: {sc['passed']} passed, {sc['failed']} failed, {sc['skipped']} skipped (exit {sc['exit_code']})")
    for c in sc["checks"]:
        if c["status"] == "fail" or c["group"] in ("alexnet", "kernels"):
            print(f"  {c['status'].upper():<4} {c['group']}/{c['name']}: {c['detail']}")
targets = {"fp32": 0.8, "tf32": 0.6, "fp16": 0.5}
print()
print(f"paper AlexNet, batch 128: {'precision':<9} {'minigrad img/s':>14} {'torch img/s':>12} {'ratio':>6} {'target':>7}"
      f" {'1.28M-image epoch (minigrad)':>29}")
for precision, target in targets.items():
    log = out / f"train_step_{precision}.txt"
    rates = {}
    if log.exists():
        for line in log.read_text().splitlines():
            m = re.match(r"(minigrad|torch)\s+([\d.]+) img/s", line)
            if m:
                rates[m.group(1)] = float(m.group(2))
    ours, theirs = rates.get("minigrad"), rates.get("torch")
    ratio = f"{ours / theirs:.2f}" if ours and theirs else "?"
    met = "" if ratio == "?" else (" met" if ours / theirs >= target else " MISSED")
    epoch = f"{1.28e6 / ours / 60:.1f} min" if ours else "?"
    print(f"{'':<26}{precision:<9} {ours or '?':>14} {theirs or '?':>12} {ratio:>6} {target:>6}x{met} {epoch:>22}")
EOF

echo
echo "time used: $((SECONDS - start)) s of ${budget_s} s"
if [ ${#skipped[@]} -gt 0 ]; then echo "not run for lack of time: ${skipped[*]}"; fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]} (logs: $out)"
    exit 1
fi
echo "all checks passed (logs: $out)"
