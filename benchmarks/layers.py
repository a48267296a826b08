"""Time forward + backward of every layer of the paper's AlexNet, against the GEMM ceiling and PyTorch.

    python benchmarks/layers.py [--batch-size 32] [--device cpu|gpu] [--repeat 7] [--layers conv1 lrn1 ...]
                                [--stat min|median] [--budget S] [--no-torch] [--no-breakdown]
                                [--keep-freed-memory]

The layers and their shapes come from `build_model('alexnet')`: conv1..conv5 (groups=2 for conv2, 4, 5), the
ReLUs, the two LRNs, the three overlapping max-pools, fc6..fc8 and the two dropouts. Each layer gets a random
input of its real shape (batch 32 by default, float32) and a random upstream gradient, and one timed run is
`y = layer(x); y.backward(grad)`. conv1's input needs no gradient (the data never does), as in training.

Columns: the time of one forward + backward in ms (the fastest of the repetitions by default: other processes
only ever add time), median/best (a spread above ~1.1 means the machine was busy), GFLOP/s of the GEMMs
(a multiply-add counts 2; forward + backward = 3x the forward GEMM, 2x for conv1, which skips dX), that rate as
a share of the GEMM ceiling (a large float32 matrix product measured in the same run), and PyTorch's time for
the same op with the same shapes (torch.nn.functional) with the ratio ours/torch, when torch is importable.
Then totals, each layer kind's share, the two speed criteria (every conv >= 50% of the ceiling; lrn1 cheaper than
conv1), and where each conv's time goes (im2col, the three GEMMs, col2im, the rest), timed inside the real op.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
TORCH_CHILD_FLAG = "--torch-child"

# PyTorch is timed in a child process of this script (--torch-child): its OpenMP threads keep spinning for a
# while after each op, and in one process with minigrad's timings they would take the cores minigrad needs.
if TORCH_CHILD_FLAG in sys.argv:
    import torch  # noqa: F401

import minigrad  # noqa: E402

# isort: split
import numpy as np  # noqa: E402

import minigrad.functional.conv as plain_conv  # noqa: E402  (the op: the plain definition, used on the GPU)
import minigrad.kernels.conv_cpu as conv_ops  # noqa: E402  (the CPU-tuned path the op runs on NumPy)
from alexnet.model import AlexNet, build_model, summarize  # noqa: E402
from minigrad import backend, nn  # noqa: E402
from minigrad.backend import Device  # noqa: E402
from minigrad.kernels import cpu_gemm_threads  # noqa: E402
from minigrad.tensor import Tensor  # noqa: E402

KINDS = ("conv", "lrn", "pool", "fc", "other")


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def blas_description() -> str:
    """Which BLAS NumPy calls, from threadpoolctl when installed (what is loaded), else NumPy's build info."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return "; ".join(
                f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, {p.get('num_threads')} threads)"
                for p in pools
            )
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} [{blas.get('openblas configuration', '').strip()}]"
    except Exception:  # older NumPy without mode="dicts", or a build that lacks the entry
        return "unknown (numpy.show_config() prints it)"


def numba_description() -> str:
    try:
        import numba
    except ImportError:
        return "not installed"
    return f"{numba.__version__} (serial kernels, split over minigrad's threads)"


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")


def thread_settings() -> str:
    """The thread variables as the user set them (minigrad sets none) and the cores minigrad's CPU ops use."""
    values = ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in THREAD_VARIABLES)
    return f"{values}; minigrad's CPU ops on {cpu_gemm_threads()} cores (its own threads, the BLAS on one each)"


def machine_lines(device: Device, torch_line: str | None) -> list[str]:
    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores ({usable_cores()} usable), "
        f"load average {os.getloadavg()[0]:.2f} (1 min)",
        f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba_description()}, "
        f"minigrad {minigrad.__version__}",
        f"BLAS: {blas_description()}",
        thread_settings(),
    ]
    if device.kind == "gpu":
        xp = device.xp
        try:
            name = xp.cuda.runtime.getDeviceProperties(device.index)["name"]
            name = name.decode() if isinstance(name, bytes) else name
        except Exception:
            name = "unknown GPU"
        lines.append(f"GPU: {name}, CuPy {xp.__version__}, CUPY_TF32={os.environ.get('CUPY_TF32', '(unset)')}")
    if torch_line is not None:
        lines.append(torch_line)
    return lines


def torch_description(torch: ModuleType, device: Device) -> str:
    if device.kind == "gpu":
        tf32 = torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        where = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, TF32 {tf32}"
    else:
        where = f"{torch.get_num_threads()} threads"
    return f"PyTorch {torch.__version__} ({where}; timed in a child process that loaded it before minigrad)"


def import_torch(enabled: bool, device: Device) -> ModuleType | None:
    """torch, or None (not wanted, not installed, or no CUDA when the GPU is benchmarked)."""
    if not enabled:
        return None
    try:
        import torch
    except ImportError:
        print("(torch is not importable: no comparison columns)")
        return None
    if device.kind == "gpu" and not torch.cuda.is_available():
        print("(torch sees no CUDA device: no comparison columns)")
        return None
    torch.set_num_threads(usable_cores())
    if device.kind == "gpu":  # TF32 in both or in neither: torch's cuDNN convolutions use it by default
        tf32 = os.environ.get("CUPY_TF32") == "1"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return torch


def run_torch_child(script: str, argv: list[str]) -> dict[str, Any] | None:
    """Run `script argv --torch-child` in a fresh interpreter and return the JSON it prints last.

    It inherits this process's environment, which minigrad leaves as the user set it. None (with the reason
    printed) when torch is not importable or the child fails.
    """
    proc = subprocess.run(
        [sys.executable, script, *argv, TORCH_CHILD_FLAG], capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        print(f"(the PyTorch child process failed: no comparison columns)\n{proc.stderr[-2000:]}")
        return None
    for line in lines[:-1]:  # what import_torch said, e.g. that torch is not installed
        print(line)
    result = json.loads(lines[-1])
    return None if result.get("skip") else result


def synchronize(device: Device, torch: ModuleType | None = None) -> None:
    if device.kind == "gpu":
        backend.synchronize(device)
        if torch is not None:
            torch.cuda.synchronize()


# ----------------------------------------------------------------------------- timing


def measure(fn: Callable[[], object], repeat: int, budget_s: float) -> list[float]:
    """Seconds of each timed call of `fn` (which must synchronize itself), after warming up.

    Cheap calls run `repeat` times; expensive ones fewer (at least 3), so one layer costs about `budget_s`.
    """
    start = time.perf_counter()
    fn()  # first call: Numba loads its cached kernels, the allocator and the thread pools warm up
    first = time.perf_counter() - start
    if first < 0.25:
        fn()
    n = max(3, min(repeat, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], stat: str) -> float:
    return min(times) if stat == "min" else statistics.median(times)


def gemm_ceiling(device: Device, size: int, repeat: int) -> float:
    """GFLOP/s of a size^3 float32 matrix product (NumPy on the CPU, CuPy on the GPU), best of `repeat`."""
    xp = device.xp
    gen = np.random.default_rng(1)
    a = backend.to_device(gen.standard_normal((size, size), dtype=np.float32), device)
    b = backend.to_device(gen.standard_normal((size, size), dtype=np.float32), device)
    c = xp.empty((size, size), dtype=xp.float32)

    def product() -> None:
        xp.matmul(a, b, out=c)
        synchronize(device)

    times = measure(product, repeat, budget_s=3.0)
    return 2 * size**3 / min(times) / 1e9


def torch_gemm(torch: ModuleType, device: Device, size: int, repeat: int) -> float:
    dev = "cuda" if device.kind == "gpu" else "cpu"
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    c = torch.empty(size, size, device=dev)

    def product() -> None:
        torch.matmul(a, b, out=c)
        synchronize(device, torch)

    return 2 * size**3 / min(measure(product, repeat, budget_s=3.0)) / 1e9


# ----------------------------------------------------------------------------- the layers


@dataclass
class Case:
    """One layer of the network with the shapes it sees at this batch size."""

    name: str
    kind: str  # conv, lrn, pool, fc, other
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    gemm_flops: int  # forward + backward, a multiply-add counted as 2
    needs_dx: bool = True
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)


def kind_of(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.LocalResponseNorm):
        return "lrn"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    return "other"


def model_cases(model: AlexNet, batch: int) -> list[Case]:
    """Every layer of `model` in order, named like the paper's (conv1, relu1, lrn1, pool1, ..., fc8)."""
    cfg = model.config
    rows = summarize(model)  # one row per module of [*features, Flatten, *classifier]: the output shapes
    modules = [*model.features, nn.Flatten(), *model.classifier]
    shape: tuple[int, ...] = (cfg.in_channels, cfg.image_size, cfg.image_size)
    cases, block, first = [], 0, True
    for module, row in zip(modules, rows):
        in_shape, shape = shape, tuple(row.output_shape)
        kind = kind_of(module)
        if isinstance(module, nn.Flatten):  # a reshape (a view): nothing to time
            continue
        if kind in ("conv", "fc"):
            block += 1
        prefix = "drop" if isinstance(module, nn.Dropout) else type(module).__name__.lower()
        name = f"{kind if kind != 'other' else prefix}{block}"
        flops = 0
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            flops = 2 * batch * int(np.prod(shape)) * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            flops = 2 * batch * module.in_features * module.out_features
        needs_dx = not first  # the data needs no gradient: skip dX in the first layer
        if flops:
            flops *= 3 if needs_dx else 2  # forward, dW and (unless first) dX: three GEMMs of the same size
        cases.append(Case(name, kind, module, (batch, *in_shape), (batch, *shape), flops, needs_dx))
        first = False
    return cases


def random_arrays(case: Case, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    x = gen.standard_normal(case.in_shape, dtype=np.float32)
    g = gen.standard_normal(case.out_shape, dtype=np.float32)
    return x, g


def ours_step(case: Case, device: Device, seed: int) -> Callable[[], None]:
    x_host, g_host = random_arrays(case, seed)
    x = Tensor(backend.to_device(x_host, device), requires_grad=case.needs_dx)
    g = backend.to_device(g_host, device)
    params = case.module.parameters()

    def step() -> None:
        for p in params:  # as after optimizer.zero_grad(): the backward pass stores fresh gradients
            p.grad = None
        x.grad = None
        y = case.module(x)
        y.backward(g)
        synchronize(device)

    return step


def torch_layer(torch: ModuleType, module: nn.Module, dev: str) -> tuple[Callable[[Any], Any], list[Any]]:
    """The torch.nn.functional call that does what `module` does, and its parameter tensors."""
    F = torch.nn.functional

    def param(p: Any) -> Any:
        return torch.from_numpy(backend.to_numpy(p.data).copy()).to(dev).requires_grad_(True)

    if isinstance(module, nn.Conv2d):
        w, b = param(module.weight), param(module.bias)
        return lambda x: F.conv2d(x, w, b, module.stride, module.padding, groups=module.groups), [w, b]
    if isinstance(module, nn.Linear):
        w, b = param(module.weight), param(module.bias)
        return lambda x: F.linear(x, w, b), [w, b]
    if isinstance(module, nn.LocalResponseNorm):
        # torch divides alpha by size; the paper does not: hand torch alpha*size to get the paper's formula
        alpha = module.alpha if module.alpha_over_size else module.alpha * module.size
        return lambda x: F.local_response_norm(x, module.size, alpha, module.beta, module.k), []
    if isinstance(module, nn.AvgPool2d):  # a subclass of MaxPool2d: test it first
        return lambda x: F.avg_pool2d(x, module.kernel_size, module.stride, module.padding), []
    if isinstance(module, nn.MaxPool2d):
        return lambda x: F.max_pool2d(x, module.kernel_size, module.stride, module.padding), []
    if isinstance(module, nn.ReLU):
        return F.relu, []
    if isinstance(module, nn.Dropout):
        return lambda x: F.dropout(x, module.p, training=True), []
    raise TypeError(f"no torch equivalent for {type(module).__name__}")


def torch_step(torch: ModuleType, case: Case, device: Device, seed: int) -> Callable[[], None]:
    dev = "cuda" if device.kind == "gpu" else "cpu"
    x_host, g_host = random_arrays(case, seed)
    x = torch.from_numpy(x_host).to(dev).requires_grad_(case.needs_dx)
    g = torch.from_numpy(g_host).to(dev)
    fn, params = torch_layer(torch, case.module, dev)

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        y = fn(x)
        y.backward(g)
        synchronize(device, torch)

    return step


def check_same(torch: ModuleType, case: Case, device: Device, seed: int) -> float | None:
    """Largest relative difference between our forward output and torch's (None for dropout: random)."""
    if case.kind == "other" and isinstance(case.module, nn.Dropout):
        return None
    dev = "cuda" if device.kind == "gpu" else "cpu"
    x_host, _ = random_arrays(case, seed)
    with minigrad.no_grad():
        ours = backend.to_numpy(case.module(Tensor(backend.to_device(x_host, device))).data)
    fn, _ = torch_layer(torch, case.module, dev)
    with torch.no_grad():
        theirs = fn(torch.from_numpy(x_host).to(dev)).cpu().numpy()
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


# ----------------------------------------------------------------------------- where a convolution's time goes


@contextlib.contextmanager
def conv_piece_timers(device: Device, totals: dict[str, float], gemm_role: Callable[[Any], str]) -> Iterator[None]:
    """While open, the conv op's im2col, col2im and matrix products add their time to totals (in place).

    Both of the op's paths are instrumented: the CPU-tuned one (NumPy) and the plain definition (GPU).
    `gemm_role(out)` names a product by the array it writes: 'Y' (forward), 'dW' or 'dX' (backward).
    """
    xp = device.xp
    saved = {
        "ChunkedIm2col": conv_ops.ChunkedIm2col,
        "col2im": conv_ops.col2im,
        "split_over_cores": conv_ops.split_over_cores,
        "plain im2col": plain_conv.im2col,
        "plain col2im": plain_conv.col2im,
    }
    matmul = xp.matmul
    # Products that split_over_cores runs on several threads at once are timed as the whole split's wall
    # time (their own times would add up to CPU time): inside a split, a product only says what it is.
    split_roles: set[str] | None = None

    def timed(fn: Callable[..., Any], key: str | None) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if split_roles is not None:
                out = fn(*args, **kwargs)
                split_roles.add(key or gemm_role(out))
                return out
            synchronize(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(device)
            totals[key or gemm_role(out)] += time.perf_counter() - start
            return out

        return wrapper

    def timed_split(*args: Any, **kwargs: Any) -> Any:
        nonlocal split_roles
        split_roles = set()
        start = time.perf_counter()
        try:
            return saved["split_over_cores"](*args, **kwargs)
        finally:
            roles, split_roles = split_roles, None
            for role in roles:  # one: the conv op splits one kind of product at a time
                totals[role] += time.perf_counter() - start

    class TimedIm2col(saved["ChunkedIm2col"]):  # the conv op unfolds through this class: time its setup and calls
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            timed(super().__init__, "im2col")(*args, **kwargs)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return timed(super().__call__, "im2col")(*args, **kwargs)

    conv_ops.ChunkedIm2col = TimedIm2col
    conv_ops.col2im = timed(saved["col2im"], "col2im")
    conv_ops.split_over_cores = timed_split
    plain_conv.im2col = timed(saved["plain im2col"], "im2col")
    plain_conv.col2im = timed(saved["plain col2im"], "col2im")
    xp.matmul = timed(matmul, None)  # both paths call xp.matmul: only the conv GEMMs are caught
    try:
        yield
    finally:
        conv_ops.ChunkedIm2col, conv_ops.col2im = saved["ChunkedIm2col"], saved["col2im"]
        conv_ops.split_over_cores = saved["split_over_cores"]
        plain_conv.im2col, plain_conv.col2im = saved["plain im2col"], saved["plain col2im"]
        xp.matmul = matmul


def print_conv_breakdown(cases: list[Case], device: Device, ceiling: float, runs: int, seed: int) -> None:
    """For each conv layer: im2col, each GEMM (and its own rate), col2im, and the rest of fwd+bwd."""
    convs = [(i, c) for i, c in enumerate(cases) if c.kind == "conv"]
    if not convs:
        return
    print(
        f"where a conv layer's fwd+bwd goes (minigrad, ms; the fastest of {runs} instrumented runs; "
        "GEMM rates as % of the ceiling):"
    )
    print(
        f"{'layer':<7} {'total':>7} {'im2col':>7} {'Y=W@cols':>15} {'dW=cols@dY.T':>15} {'dcols=W.T@dY':>15} "
        f"{'col2im':>7} {'rest':>6}  (rest: transposes, allocation, graph; on the CPU the bias and db are in the GEMMs)"
    )
    for i, c in convs:
        conv = c.module
        assert isinstance(conv, nn.Conv2d)
        k = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        o_g = conv.out_channels // conv.groups
        nl = c.out_shape[0] * c.out_shape[2] * c.out_shape[3]
        gemm_flops = 2 * o_g * k * nl * conv.groups  # each of the three products

        def role(out: Any, o_g: int = o_g, k: int = k) -> str:
            # The CPU path works through the batch in chunks of n images (or image by image): Y is (O/G, n*L),
            # dW^T (K + 1, O/G) with the bias row (K without a bias), dcols (K, n*L). The plain path (GPU)
            # stacks the groups: Y (G, O/G, N*L), dW (G, O/G, K), dcols (G, K, N*L).
            rows, columns = out.shape[-2:]
            if (columns == o_g and rows in (k, k + 1)) or (out.ndim == 3 and (rows, columns) == (o_g, k)):
                return "dW"
            return {o_g: "Y", k: "dX"}.get(rows, "gemm")

        step = ours_step(c, device, seed + i)
        step()
        best: tuple[float, dict[str, float]] | None = None
        for _ in range(runs):
            totals: dict[str, float] = defaultdict(float)
            with conv_piece_timers(device, totals, role):
                start = time.perf_counter()
                step()
                whole = time.perf_counter() - start
            if best is None or whole < best[0]:
                best = (whole, totals)
        assert best is not None
        whole, totals = best
        ms = {key: 1e3 * v for key, v in totals.items()}
        cells = []
        for key in ("Y", "dW", "dX"):
            if key in ms:
                rate = gemm_flops / ms[key] / 1e6
                cells.append(f"{ms[key]:6.1f} ({100 * rate / ceiling:3.0f}%)")
            else:
                cells.append("-")
        rest = 1e3 * whole - sum(ms.values())
        print(
            f"{c.name:<7} {1e3 * whole:7.1f} {ms['im2col']:7.1f} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
            f"{ms.get('col2im', 0.0):7.1f} {rest:6.1f}"
        )


# ----------------------------------------------------------------------------- report


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def print_table(cases: list[Case], stat: str, ceiling: float, with_torch: bool) -> None:
    head = f"{'layer':<7} {'input shape':<16} {'ms':>8} {'med/min':>7} {'GFLOP/s':>8} {'%GEMM':>6}"
    if with_torch:
        head += f" {'torch ms':>9} {'ours/torch':>10}"
    print(head)
    print("-" * len(head))
    for c in cases:
        t = summary(c.ours, stat)
        spread = statistics.median(c.ours) / min(c.ours)
        line = f"{c.name:<7} {fmt_shape(c.in_shape):<16} {1e3 * t:8.2f} {spread:7.2f}"
        if c.gemm_flops:
            rate = c.gemm_flops / t / 1e9
            line += f" {rate:8.1f} {100 * rate / ceiling:5.0f}%"
        else:
            line += f" {'-':>8} {'-':>6}"
        if with_torch and c.theirs:
            tt = summary(c.theirs, stat)
            line += f" {1e3 * tt:9.2f} {t / tt:10.2f}"
        print(line)
    print("-" * len(head))
    total = sum(summary(c.ours, stat) for c in cases)
    flops = sum(c.gemm_flops for c in cases)
    rate = flops / total / 1e9
    line = f"{'total':<7} {'':<16} {1e3 * total:8.1f} {'':>7} {rate:8.1f} {100 * rate / ceiling:5.0f}%"
    if with_torch and all(c.theirs for c in cases):
        total_t = sum(summary(c.theirs, stat) for c in cases)
        line += f" {1e3 * total_t:9.1f} {total / total_t:10.2f}"
    print(line)


def print_shares(cases: list[Case], stat: str, with_torch: bool) -> None:
    def shares(pick: Callable[[Case], list[float]]) -> str:
        total = sum(summary(pick(c), stat) for c in cases)
        parts = []
        for kind in KINDS:
            t = sum(summary(pick(c), stat) for c in cases if c.kind == kind)
            if any(c.kind == kind for c in cases):
                parts.append(f"{kind} {100 * t / total:4.1f}% ({1e3 * t:.0f} ms)")
        return ", ".join(parts)

    print(f"share of the time, minigrad: {shares(lambda c: c.ours)}")
    if with_torch and all(c.theirs for c in cases):
        print(f"share of the time, torch:    {shares(lambda c: c.theirs)}")
    print("(other = ReLU and dropout)")


def print_criteria(cases: list[Case], stat: str, ceiling: float) -> None:
    by_name = {c.name: c for c in cases}
    convs = [c for c in cases if c.kind == "conv"]
    if convs:
        rates = {c.name: 100 * c.gemm_flops / summary(c.ours, stat) / 1e9 / ceiling for c in convs}
        ok = all(r >= 50 for r in rates.values())
        detail = ", ".join(f"{n} {r:.0f}%" for n, r in rates.items())
        print(f"[{'PASS' if ok else 'FAIL'}] every conv layer >= 50% of the GEMM ceiling: {detail}")
    if "lrn1" in by_name and "conv1" in by_name:
        lrn, conv = summary(by_name["lrn1"].ours, stat), summary(by_name["conv1"].ours, stat)
        ok = lrn < conv
        print(
            f"[{'PASS' if ok else 'FAIL'}] lrn1 fwd+bwd cheaper than conv1 fwd+bwd: "
            f"{1e3 * lrn:.1f} ms vs {1e3 * conv:.1f} ms ({lrn / conv:.2f}x)"
        )


# ----------------------------------------------------------------------------- main


KEEP_FREED_MEMORY_HELP = (
    "minigrad.keep_freed_memory() in both processes, as the alexnet command does (default: glibc's malloc)"
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark here shares: --seed, --keep-freed-memory and the hidden torch-child flag."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-freed-memory", action="store_true", help=KEEP_FREED_MEMORY_HELP)
    parser.add_argument(TORCH_CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)


def start_run(args: argparse.Namespace) -> tuple[Device, bool]:
    """Apply --keep-freed-memory (the torch child gets the same flag) and open the device, failing early with
    the reason when the GPU is not usable. Returns (device, whether freed memory is kept)."""
    kept = args.keep_freed_memory and minigrad.keep_freed_memory()
    device = Device(args.device)
    device.xp  # noqa: B018
    return device, kept


def malloc_line(kept: bool) -> str:
    """The header line that says how freed memory was handled (it moves times by up to ~10% on the CPU)."""
    if kept:
        return "malloc: freed memory kept for reuse in both processes (--keep-freed-memory, as `alexnet train` does)"
    return "malloc: glibc's defaults (`alexnet train` keeps freed memory for reuse: --keep-freed-memory)"


def torch_child(args: argparse.Namespace, device: Device, cases: list[Case], size: int) -> None:
    """The --torch-child half: time torch on the same cases (same weights and seeded data), print JSON."""
    torch = import_torch(True, device)
    if torch is None:  # import_torch said why
        print(json.dumps({"skip": True}))
        return
    result: dict[str, Any] = {"ceiling": torch_gemm(torch, device, size, args.repeat), "times": {}, "mismatches": []}
    for i, c in enumerate(cases):
        result["times"][c.name] = measure(torch_step(torch, c, device, args.seed + i), args.repeat, args.budget)
        diff = check_same(torch, c, device, args.seed + i)
        if diff is not None and diff > 1e-3:
            result["mismatches"].append(f"{c.name} (relative difference {diff:.1e})")
    result["line"] = torch_description(torch, device)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu (NumPy + Numba) or gpu (CuPy)")
    parser.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (e.g. conv1 lrn1 pool1)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per layer (fewer for the slow layers)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per layer and library")
    parser.add_argument("--stat", choices=("min", "median"), default="min", help="what 'ms' reports")
    parser.add_argument("--gemm-size", type=int, default=None, help="matrix size of the ceiling (2048 CPU, 8192 GPU)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the im2col/GEMM/col2im split of the convs")
    add_run_options(parser)
    args = parser.parse_args()
    device, kept = start_run(args)
    minigrad.manual_seed(args.seed)
    model = build_model("alexnet").to(device)  # the paper's network (init on the CPU, then moved)
    cases = model_cases(model, args.batch_size)
    if args.layers:
        unknown = sorted(set(args.layers) - {c.name for c in cases})
        if unknown:
            parser.error(f"unknown layers {unknown}; choose from {' '.join(c.name for c in cases)}")
        cases = [c for c in cases if c.name in args.layers]

    size = args.gemm_size or (8192 if device.kind == "gpu" else 2048)
    if args.torch_child:
        torch_child(args, device, cases, size)
        return
    load_before = os.getloadavg()[0]
    ceiling = gemm_ceiling(device, size, args.repeat)
    for i, c in enumerate(cases):  # all of ours first, then all of torch's: their thread pools never interleave
        c.ours = measure(ours_step(c, device, args.seed + i), args.repeat, args.budget)
    ceiling_after = gemm_ceiling(device, size, args.repeat)
    breakdown = []
    if not args.no_breakdown:  # printed at the end, measured before torch is imported
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print_conv_breakdown(cases, device, max(ceiling, ceiling_after), 4, args.seed)
        breakdown = buffer.getvalue().splitlines()

    torch_result = None if args.no_torch else run_torch_child(__file__, sys.argv[1:])
    torch_ceiling, mismatches, torch_line = None, [], None
    if torch_result is not None:
        torch_ceiling, mismatches = torch_result["ceiling"], torch_result["mismatches"]
        torch_line = torch_result["line"]
        for c in cases:
            c.theirs = torch_result["times"][c.name]

    print(f"AlexNet (paper) layers, forward + backward, batch {args.batch_size}, float32, device {device}")
    for line in machine_lines(device, torch_line):
        print(line)
    print(malloc_line(kept))
    ceil = max(ceiling, ceiling_after)
    print(
        f"GEMM ceiling ({size}^3 float32, {'CuPy' if device.kind == 'gpu' else 'NumPy'}, best of several): "
        f"{ceiling:.0f} GFLOP/s before the layers, {ceiling_after:.0f} after; using {ceil:.0f}"
        + (f" | torch.matmul {torch_ceiling:.0f} GFLOP/s" if torch_ceiling else "")
    )
    spread = statistics.median([statistics.median(c.ours) / min(c.ours) for c in cases])
    noisy = abs(ceiling - ceiling_after) > 0.15 * ceil or spread > 1.1
    print(
        f"'ms' is the {'fastest' if args.stat == 'min' else 'median'} of 3-{args.repeat} runs per layer; "
        f"load average at the start {load_before:.2f}, typical med/min {spread:.2f}"
        + (" -- the machine was busy (or the ceiling moved): rerun for clean numbers" if noisy else "")
    )
    print()
    print_table(cases, args.stat, ceil, torch_result is not None)
    print()
    print_shares(cases, args.stat, torch_result is not None)
    print_criteria(cases, args.stat, ceil)
    if breakdown:
        print()
        print("\n".join(breakdown))
    if mismatches:
        print(f"WARNING: torch's forward output differs from ours in {', '.join(mismatches)}")


if __name__ == "__main__":
    main()
