"""Images per second of whole training steps (forward, cross-entropy, backward, SGD step), minigrad vs PyTorch.

    python benchmarks/train_step.py [--model alexnet|alexnet-small|alexnet-tiny] [--batch-size N]
                                    [--device cpu|gpu] [--precision fp32|tf32|fp16] [--steps N]
                                    [--no-torch] [--no-split] [--keep-freed-memory]

One step is what the training loop does for a batch: zero the gradients, forward, cross-entropy, backward,
and the paper's SGD update (momentum 0.9, weight decay 5e-4). The batch is random data that already sits on
the device, so loading and augmenting images is not counted. After two warm-up steps, `--steps` steps are
timed one by one (by default as many as fit in `--budget` seconds, 3 to 50); img/s = batch / median step time.

--precision runs both libraries in the same mode: fp32 (TF32 off in both); tf32 (CuPy's float32 products on
TF32 tensor cores through `minigrad.backend.set_tf32`; torch.backends' allow_tf32 for cuBLAS and cuDNN);
fp16 (`minigrad.amp.MixedPrecision`: float16 compute, float32 master weights, dynamic loss scaling; torch:
autocast to float16 with a GradScaler). On the CPU tf32 is fp32 (NumPy has no TF32), and fp16 runs NumPy's
float16 loops (no BLAS): a correctness check there, not a speed figure; torch is not compared in fp16 on the CPU.

PyTorch gets the same network, translated module by module from the minigrad model (same convs, groups, LRN
with alpha*size since torch divides alpha by the size, pools, dropout, FC layers, same initial weights), the
same batch and torch.optim.SGD with the same hyper-parameters, on as many threads as there are usable cores.
On a GPU both report the peak device memory of the timed steps (CuPy's pool; torch's reserved memory).

The split by layer kind (minigrad only) comes from a few extra steps in which every op's forward and backward
is timed (on the GPU with a synchronisation after each, which slows those steps down a little); in fp16 the
casts between float16 and float32 are a kind of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

# PyTorch runs in a child process that loads torch before minigrad (see the same lines in layers.py).
if "--torch-child" in sys.argv:
    import torch  # noqa: F401

import minigrad  # noqa: E402

# isort: split
import numpy as np  # noqa: E402
from layers import (  # noqa: E402  (benchmarks/layers.py)
    add_run_options,
    gemm_ceiling,
    import_torch,
    machine_lines,
    malloc_line,
    run_torch_child,
    start_run,
    synchronize,
    torch_description,
)

from alexnet.model import CONFIGS, AlexNet, build_model, summarize  # noqa: E402
from minigrad import backend, nn, optim  # noqa: E402
from minigrad import functional as F  # noqa: E402
from minigrad.amp import PRECISIONS, MixedPrecision  # noqa: E402
from minigrad.backend import Device  # noqa: E402
from minigrad.tensor import Function, Tensor  # noqa: E402

DEFAULT_BATCH = {"alexnet": 32}  # the paper's network is slow on a CPU; the small ones get the paper's 128

# which layer kind each op belongs to (anything else, e.g. the flatten's Reshape, is "other ops")
KIND = {
    "Conv2d": "conv",
    "LocalResponseNorm": "lrn",
    "MaxPool2d": "pool",
    "Linear": "fc",
    "ReLU": "relu",
    "Dropout": "dropout",
    "CrossEntropy": "loss",
    "Cast": "casts (fp16)",
}


# ----------------------------------------------------------------------------- minigrad


def gemm_flops_per_step(model: AlexNet, batch: int) -> int:
    """FLOPs of the conv and FC matrix products in one step: 3x the forward (2x for the first layer: no dX)."""
    total = 0
    first = True
    for row in summarize(model):
        if row.name.startswith(("conv", "fc")):
            forward = (row.flops - int(np.prod(row.output_shape))) * batch  # summarize adds the bias adds
            total += forward * (2 if first else 3)
            first = False
    return total


def random_batch(model: AlexNet, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cfg = model.config
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((batch, cfg.in_channels, cfg.image_size, cfg.image_size), dtype=np.float32)
    y = gen.integers(0, cfg.num_classes, size=batch)
    return x, y


def minigrad_step(
    model: AlexNet, device: Device, x_host: np.ndarray, y_host: np.ndarray, precision: str
) -> Callable[[], float]:
    if precision == "fp32":
        backend.set_tf32(False)  # even when CUPY_TF32=1 is set: fp32 means fp32 in both libraries
    mp = MixedPrecision(model, precision)
    opt = optim.SGD(mp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = Tensor(backend.to_device(x_host, device))
    y = backend.to_device(y_host, device)

    def step() -> float:
        mp.zero_grad()
        loss = F.cross_entropy(mp(x), y)
        mp.backward(loss)
        mp.step(opt)
        synchronize(device)
        return float(loss.item())

    step.mixed_precision = mp  # type: ignore[attr-defined]  (the split reuses it: one fp16 copy of the model)
    return step


def function_classes() -> list[type]:
    found, stack = [], [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


@contextlib.contextmanager
def op_timers(device: Device, totals: dict[str, float]) -> Iterator[None]:
    """While open, every op's forward and backward adds its time to totals[kind]."""
    patched = []

    def timed(method: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def wrapper(self: Function, *args: Any, **kwargs: Any) -> Any:
            synchronize(device)
            start = time.perf_counter()
            out = method(self, *args, **kwargs)
            synchronize(device)
            totals[kind] += time.perf_counter() - start
            return out

        return wrapper

    for cls in function_classes():
        for name in ("forward", "backward"):
            if name in cls.__dict__:
                method = cls.__dict__[name]
                patched.append((cls, name, method))
                setattr(cls, name, timed(method, KIND.get(cls.__name__, "other ops")))
    try:
        yield
    finally:
        for cls, name, method in patched:
            setattr(cls, name, method)


def split_by_kind(mp: MixedPrecision, device: Device, x_host: np.ndarray, y_host: np.ndarray, steps: int) -> None:
    """Print the time of one step by layer kind (ops timed one by one over `steps` extra steps)."""
    opt = optim.SGD(mp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = Tensor(backend.to_device(x_host, device))
    y = backend.to_device(y_host, device)
    totals: dict[str, float] = defaultdict(float)
    whole = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        with op_timers(device, totals):
            mp.zero_grad()
            loss = F.cross_entropy(mp(x), y)
            mp.backward(loss)
        synchronize(device)
        t = time.perf_counter()
        mp.step(opt)  # fp16: unscaling, the inf/NaN check and the copy into float16 count with the update
        synchronize(device)
        totals["sgd step"] += time.perf_counter() - t
        whole += time.perf_counter() - start
    totals["rest (graph, Python)"] = whole - sum(totals.values())
    order = [
        "conv", "lrn", "pool", "fc", "relu", "dropout", "loss", "casts (fp16)", "other ops", "sgd step",
        "rest (graph, Python)",
    ]  # fmt: skip
    print(f"minigrad step by layer kind (mean of {steps} instrumented steps, {1e3 * whole / steps:.0f} ms each):")
    for kind in order:
        if kind in totals:
            ms = 1e3 * totals[kind] / steps
            print(f"  {kind:<22} {ms:9.1f} ms {100 * totals[kind] / whole:5.1f}%")


# ----------------------------------------------------------------------------- torch


def torch_model(torch: ModuleType, model: AlexNet, dev: str) -> Any:
    """The same network in torch.nn, module by module, with the same initial weights."""
    tnn = torch.nn
    layers = []
    for m in [*model.features, nn.Flatten(), *model.classifier]:
        if isinstance(m, nn.Conv2d):
            t = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, groups=m.groups)
        elif isinstance(m, nn.Linear):
            t = tnn.Linear(m.in_features, m.out_features)
        elif isinstance(m, nn.LocalResponseNorm):
            alpha = m.alpha if m.alpha_over_size else m.alpha * m.size  # torch divides alpha by size
            t = tnn.LocalResponseNorm(m.size, alpha, m.beta, m.k)
        elif isinstance(m, nn.MaxPool2d):
            t = tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        elif isinstance(m, nn.ReLU):
            t = tnn.ReLU()
        elif isinstance(m, nn.Dropout):
            t = tnn.Dropout(m.p)
        elif isinstance(m, nn.Flatten):
            t = tnn.Flatten()
        else:
            raise TypeError(f"no torch equivalent for {type(m).__name__}")
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(backend.to_numpy(m.weight.data)))
                t.bias.copy_(torch.from_numpy(backend.to_numpy(m.bias.data)))
        layers.append(t)
    return tnn.Sequential(*layers).to(dev).train()


def set_torch_precision(torch: ModuleType, precision: str) -> None:
    """TF32 in cuBLAS and cuDNN for tf32 only (fp16 runs under autocast; fp32 is plain float32)."""
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def torch_step(
    torch: ModuleType, model: AlexNet, device: Device, x_host: np.ndarray, y_host: np.ndarray, precision: str
) -> Callable[[], float]:
    dev = "cuda" if device.kind == "gpu" else "cpu"
    set_torch_precision(torch, precision)
    net = torch_model(torch, model, dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.from_numpy(x_host).to(dev)
    y = torch.from_numpy(y_host).to(dev)
    fp16 = precision == "fp16"
    scaler = torch.amp.GradScaler(dev, enabled=fp16)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.float16, enabled=fp16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        synchronize(device, torch)
        return float(loss.item())

    return step


def peak_memory_line(device: Device, ours: int | None, theirs: int | None) -> str | None:
    """Peak device memory of the timed steps, ours (CuPy's pool) beside torch's (reserved), in GiB."""
    if device.kind != "gpu" or ours is None:
        return None
    line = f"peak device memory: minigrad {ours / 2**30:.2f} GiB (CuPy's pool)"
    return line + (f", torch {theirs / 2**30:.2f} GiB (reserved)" if theirs is not None else "")


# ----------------------------------------------------------------------------- main


def time_steps(step: Callable[[], float], steps: int | None, budget_s: float) -> tuple[list[float], list[float]]:
    """Seconds of each timed step and the losses (the two warm-up steps' first), after two warm-up steps."""
    losses = [step(), step()]
    times: list[float] = []
    while True:
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
        if steps is not None:
            if len(times) >= steps:
                break
        elif len(times) >= 50 or (len(times) >= 3 and sum(times) >= budget_s):
            break
    return times, losses


def report(label: str, times: list[float], losses: list[float], batch: int, flops: int, ceiling: float) -> float:
    med = statistics.median(times)
    rate = flops / med / 1e9
    print(
        f"{label:<9} {batch / med:8.1f} img/s | step {1e3 * med:8.1f} ms median, {1e3 * min(times):8.1f} min "
        f"({len(times)} steps) | GEMM work {rate:6.1f} GFLOP/s = {100 * rate / ceiling:3.0f}% of the ceiling | "
        f"loss {losses[2]:.3f} -> {losses[-1]:.3f}"
    )
    return med


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="alexnet-tiny")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 for alexnet, 128 for the others")
    parser.add_argument("--device", default="cpu", help="cpu (NumPy + Numba) or gpu (CuPy)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the same mode in both libraries")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: what fits in --budget)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed steps per library")
    parser.add_argument("--split-steps", type=int, default=2, help="instrumented steps for the split by kind")
    parser.add_argument("--no-split", action="store_true", help="skip the split by layer kind")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    add_run_options(parser)
    return parser.parse_args()


def torch_child(
    args: argparse.Namespace, model: AlexNet, device: Device, x_host: np.ndarray, y_host: np.ndarray
) -> None:
    """The PyTorch half (--torch-child): same initial weights and batch, results as JSON on the last line."""
    torch = import_torch(True, device)
    if torch is not None and device.kind == "cpu" and args.precision == "fp16":
        print("(torch is not compared in fp16 on the CPU)")
        torch = None
    if torch is None:  # said why
        print(json.dumps({"skip": True}))
        return
    step = torch_step(torch, model, device, x_host, y_host, args.precision)
    if device.kind == "gpu":
        torch.cuda.reset_peak_memory_stats()
    times, losses = time_steps(step, args.steps, args.budget)
    peak = torch.cuda.max_memory_reserved() if device.kind == "gpu" else None
    print(json.dumps({"times": times, "losses": losses, "line": torch_description(torch, device), "peak": peak}))


def main() -> None:
    args = parse_args()
    device, kept = start_run(args)
    batch = args.batch_size or DEFAULT_BATCH.get(args.model, 128)
    minigrad.manual_seed(args.seed)
    model = build_model(args.model).to(device).train()
    x_host, y_host = random_batch(model, batch, args.seed)
    if args.torch_child:
        torch_child(args, model, device, x_host, y_host)
        return
    flops = gemm_flops_per_step(model, batch)
    params = model.num_parameters()
    step = minigrad_step(model, device, x_host, y_host, args.precision)  # tf32: switches CuPy's products first
    ceiling = gemm_ceiling(device, 8192 if device.kind == "gpu" else 2048, repeat=5)
    backend.reset_peak_gpu_memory(device)
    ours_times, ours_losses = time_steps(step, args.steps, args.budget)
    ours_peak = backend.peak_gpu_memory(device)
    split_lines: list[str] = []
    if not args.no_split:  # (torch runs in its own process afterwards: the two never share the cores)
        split_lines = _capture(lambda: split_by_kind(step.mixed_precision, device, x_host, y_host, args.split_steps))
    torch_result = None if args.no_torch else run_torch_child(__file__, sys.argv[1:])

    cfg = model.config
    print(
        f"training step: {cfg.name} ({cfg.in_channels}x{cfg.image_size}x{cfg.image_size} -> {cfg.num_classes}, "
        f"{params:,} parameters), batch {batch}, precision {args.precision}, device {device}"
    )
    for line in [*machine_lines(device, torch_result and torch_result["line"]), malloc_line(kept)]:
        print(line)
    print(precision_line(args.precision, device, step.mixed_precision))
    library = f"CuPy, {backend.gemm_compute_type()}" if device.kind == "gpu" else "NumPy"
    print(
        f"float32 GEMM ceiling {ceiling:.0f} GFLOP/s ({library}); conv + FC matrix products per step: "
        f"{flops / 1e9:.1f} GFLOP (a multiply-add counts 2)"
    )
    print()
    med = report("minigrad", ours_times, ours_losses, batch, flops, ceiling)
    if torch_result is not None:
        med_t = report("torch", torch_result["times"], torch_result["losses"], batch, flops, ceiling)
        print(f"minigrad / torch step time: {med / med_t:.2f} (below 1: minigrad is faster)")
        print(f"minigrad speed as a fraction of torch's: {med_t / med:.2f}x")
    memory = peak_memory_line(device, ours_peak, torch_result and torch_result.get("peak"))
    if memory:
        print(memory)
    if step.mixed_precision.precision == "fp16":
        print(f"fp16 steps skipped by the loss scaler (inf/NaN gradients): {step.mixed_precision.skipped_steps}")
    if split_lines:
        print()
        print("\n".join(split_lines))


def precision_line(precision: str, device: Device, mp: MixedPrecision) -> str:
    """What --precision means in this run, for the header."""
    if precision == "fp16":
        return "precision fp16: float16 compute, float32 master weights, loss scaling (torch: autocast, GradScaler)"
    if precision == "tf32":
        if device.kind != "gpu":
            return "precision tf32: NumPy has no TF32, so this is fp32"
        return f"precision tf32: CuPy float32 products {'on TF32 tensor cores' if mp.tf32 else 'NOT switched to TF32'}"
    return "precision fp32: TF32 off in both libraries"


def _capture(fn: Callable[[], None]) -> list[str]:
    """What `fn` prints, as lines (so the report comes out in one piece at the end)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fn()
    return buffer.getvalue().splitlines()


if __name__ == "__main__":
    main()
