"""`minigrad selfcheck`: does the GPU path work on this machine? One command that says so, or says why not.

    minigrad selfcheck                      # on the GPU; exit 0 all passed, 1 a check failed, 3 no GPU usable
    minigrad selfcheck --device cpu         # the same checks on the CPU, smaller (how the tests run them)
    minigrad selfcheck --json report.json   # also write every result as JSON

What it runs, group by group (one row each):
- gradcheck: every op and layer of the registry in `minigrad.checks` against finite differences, in float64;
- layers: every layer's forward and backward on the device against a reference on the same inputs (float32):
  on a GPU the CPU; on the CPU the generic kernels (`force_generic`), the plain twins of the Numba loops;
- kernels: the numba-cuda GPU kernels (`minigrad.kernels.gpu`) against their generic twins (GPU only);
- model checks from plugins: packages register functions in the entry-point group `minigrad.selfcheck`
  (`alexnet` adds: train alexnet-tiny and check the loss falls; the paper's net at batch 128, images/s and
  peak device memory; fp16 and TF32 training against fp32). minigrad never imports them by name.

A plugin's function takes nothing and returns `SelfCheck`s; each check's `run(context)` returns an `Outcome`
(passed, failed or skipped, a detail line, optional metrics). `context.quick` is True on the CPU: a check
then does less work (fewer steps, smaller batches), so the CPU run takes seconds.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minigrad import backend, nn
from minigrad.backend import Device
from minigrad.tensor import Tensor

ENTRY_POINT_GROUP = "minigrad.selfcheck"
EXIT_PASSED, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 3  # (2 is argparse's: a usage error)


@dataclass(frozen=True)
class Context:
    """Where the checks run. `quick`: do less work (the CPU run)."""

    device: Device
    quick: bool


@dataclass(frozen=True)
class Outcome:
    """What one check found. passed: True, False, or None when the check did not apply here (skipped)."""

    passed: bool | None
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SelfCheck:
    """One row of the report: `run(context)` does the work and returns an Outcome (an exception fails it)."""

    name: str
    group: str
    run: Callable[[Context], Outcome]


@dataclass
class Result:
    """A check's outcome as reported: status 'pass', 'fail' or 'skip', with its time in seconds."""

    group: str
    name: str
    status: str
    detail: str
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the error relative to the array's scale (0 for two zeros)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    return error / scale if scale > 0 else error


# ----------------------------------------------------------------------------- gradient checks


def _gradcheck(name: str) -> Callable[[Context], Outcome]:
    def run(context: Context) -> Outcome:
        from minigrad.checks import run_check

        report = run_check(name, context.device)
        return Outcome(
            report.passed, f"max relative error {report.max_rel_error:.1e}", {"max_rel_error": report.max_rel_error}
        )

    return run


def gradcheck_checks() -> list[SelfCheck]:
    """One check per entry of the gradient-check registry (every op and layer), float64."""
    from minigrad.checks import CHECKS

    return [SelfCheck(name, "gradcheck", _gradcheck(name)) for name in CHECKS]


# ----------------------------------------------------------------------------- layers against a reference

LAYER_TOLERANCE = 1e-4  # float32: GEMMs on another device sum in another order (relative to each array's scale)


@dataclass(frozen=True)
class LayerCase:
    """A layer, built from the seeded CPU generator, and the shape (and scale) of its float32 input."""

    name: str
    make: Callable[[], nn.Module]
    x_shape: tuple[int, ...]
    x_scale: float = 1.0


LAYER_CASES = (
    LayerCase("Conv2d 3x3 pad 1", lambda: nn.Conv2d(3, 8, 3, padding=1), (4, 3, 12, 12)),
    LayerCase("Conv2d 5x5/2, 2 groups", lambda: nn.Conv2d(4, 8, 5, stride=2, padding=2, groups=2), (4, 4, 15, 15)),
    LayerCase("Conv2d 11x11/4", lambda: nn.Conv2d(3, 8, 11, stride=4), (2, 3, 35, 35)),
    LayerCase("Conv2d 3x3, no bias", lambda: nn.Conv2d(6, 4, 3, bias=False), (3, 6, 9, 9)),
    LayerCase("Linear", lambda: nn.Linear(20, 7), (6, 20)),
    LayerCase("ReLU", nn.ReLU, (4, 5, 6)),
    LayerCase("Tanh", nn.Tanh, (4, 5, 6)),
    LayerCase("MaxPool2d 3x3/2", lambda: nn.MaxPool2d(3, 2), (2, 3, 13, 13)),
    LayerCase("MaxPool2d 3x3/2 pad 1", lambda: nn.MaxPool2d(3, 2, padding=1), (2, 3, 12, 11)),
    LayerCase("MaxPool2d 2x2", lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
    LayerCase("AvgPool2d 3x3/2 pad 1", lambda: nn.AvgPool2d(3, 2, padding=1), (2, 3, 9, 9)),
    LayerCase("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d(3), (2, 3, 7, 8)),
    LayerCase("LocalResponseNorm (paper)", lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), (2, 9, 5, 5), 30.0),
    LayerCase(
        "LocalResponseNorm (Caffe)",
        lambda: nn.LocalResponseNorm(4, 1e-2, 0.75, 1.0, alpha_over_size=True),
        (2, 7, 4, 4),
    ),
    LayerCase("Flatten", nn.Flatten, (2, 3, 4, 4)),
)


def _layer_arrays(case: LayerCase, device: Device, seed: int) -> list[np.ndarray]:
    """[output, dL/dx, dL/dparam...] of the layer on `device`, for seeded inputs and upstream gradient."""
    gen = np.random.default_rng(seed)
    x_host = (gen.standard_normal(case.x_shape) * case.x_scale).astype(np.float32)
    backend.manual_seed(seed)
    module = case.make().to(device)
    x = Tensor(backend.to_device(x_host, device), requires_grad=True)
    out = module(x)
    upstream = gen.standard_normal(out.shape).astype(np.float32)
    out.backward(backend.to_device(upstream, device))
    tensors = [out, x.grad, *(p.grad for p in module.parameters())]
    return [backend.to_numpy(t.data) for t in tensors]


def _reference_arrays(case: LayerCase, device: Device, seed: int) -> list[np.ndarray]:
    """The same on the reference: the CPU for a GPU run; the generic kernels for a CPU run."""
    if device.kind == "gpu":
        return _layer_arrays(case, Device("cpu"), seed)
    from minigrad.kernels import force_generic

    with force_generic():
        return _layer_arrays(case, device, seed)


def _compare_layer(case: LayerCase, seed: int) -> Callable[[Context], Outcome]:
    def run(context: Context) -> Outcome:
        ours = _layer_arrays(case, context.device, seed)
        reference = _reference_arrays(case, context.device, seed)
        labels = ["forward", "dx", *(f"d{name}" for name, _ in case.make().named_parameters())]
        errors = {label: relative_error(a, b) for label, a, b in zip(labels, ours, reference)}
        worst = max(errors, key=errors.get)
        against = "the CPU" if context.device.kind == "gpu" else "the generic kernels"
        detail = f"vs {against}: worst {worst} {errors[worst]:.1e} (tolerance {LAYER_TOLERANCE:.0e})"
        return Outcome(errors[worst] <= LAYER_TOLERANCE, detail, {"max_rel_error": errors[worst]})

    return run


def _dropout_rule(context: Context) -> Outcome:
    """Dropout draws its mask on the device, so it cannot match the CPU's: check its rule instead."""
    from minigrad import functional as F

    p, shape = 0.4, (64, 256)
    backend.manual_seed(3)
    x = Tensor(
        backend.to_device(np.linspace(1, 2, shape[0] * shape[1], dtype=np.float32).reshape(shape), context.device),
        requires_grad=True,
    )
    out = F.dropout(x, p, training=True)
    out.backward(backend.to_device(np.ones(shape, dtype=np.float32), context.device))
    y, dx, x_host = out.numpy(), x.grad.numpy(), x.numpy()
    kept = y != 0
    fraction, sigma = kept.mean(), np.sqrt(p * (1 - p) / kept.size)
    scaled_ok = relative_error(y[kept], x_host[kept] / (1 - p)) <= 1e-6
    grad_ok = relative_error(dx, kept / np.float32(1 - p)) <= 1e-6
    ok = abs(fraction - (1 - p)) <= 5 * sigma and scaled_ok and grad_ok
    detail = f"kept {fraction:.3f} (expected {1 - p:.3f} +- {5 * sigma:.3f}); kept values and gradient scaled"
    detail += " by 1/(1-p)" if scaled_ok and grad_ok else " WRONGLY (not by 1/(1-p))"
    return Outcome(ok, detail)


def layer_checks() -> list[SelfCheck]:
    """Every layer's forward and backward on the device against the reference, plus dropout's rule."""
    checks = [SelfCheck(case.name, "layers", _compare_layer(case, seed)) for seed, case in enumerate(LAYER_CASES)]
    return [*checks, SelfCheck("Dropout (mask rule)", "layers", _dropout_rule)]


# ----------------------------------------------------------------------------- GPU kernels against their twins


KERNEL_CASES = ("max-pool 3x3/2", "LRN", "im2col, col2im 5x5", "SGD update")


def _kernel_case(name: str, xp: Any, gen: np.random.Generator) -> tuple[list, list, float]:
    """(the GPU kernel's arrays, the generic twin's arrays, tolerance) of one case, on AlexNet-like shapes."""
    from minigrad import kernels
    from minigrad.kernels import gpu

    def device(*shape: int, scale: float = 1.0) -> Any:
        return xp.asarray((gen.standard_normal(shape) * scale).astype(np.float32))

    if name == "max-pool 3x3/2":
        x, dy = device(8, 16, 27, 27), device(8, 16, 13, 13)
        (y, arg), (y_twin, arg_twin) = (
            gpu.max_pool2d_forward_gpu(x, 3, 3, 2),
            kernels.max_pool2d_forward_generic(x, 3, 3, 2),
        )
        dx = gpu.max_pool2d_backward_gpu(dy, arg, x.shape, 3, 3, 2)
        dx_twin = kernels.max_pool2d_backward_generic(dy, arg_twin, x.shape, 3, 3, 2)
        return [y, arg, dx], [y_twin, arg_twin, dx_twin], 0.0
    if name == "LRN":
        x, dy = device(8, 24, 13, 13, scale=20.0), device(8, 24, 13, 13)
        y, s = gpu.lrn_forward_gpu(x, 5, 1e-4, 0.75, 2.0)
        y_twin, s_twin = kernels.lrn_forward_generic(x, 5, 1e-4, 0.75, 2.0)
        dx, dx_twin = (
            gpu.lrn_backward_gpu(dy, x, s, 5, 1e-4, 0.75),
            kernels.lrn_backward_generic(dy, x, s_twin, 5, 1e-4, 0.75),
        )
        return [y, s, dx], [y_twin, s_twin, dx_twin], 1e-5
    if name == "im2col, col2im 5x5":
        x, cols = device(8, 16, 13, 13), device(16, 5, 5, 8, 13, 13)
        ours = [gpu.im2col_gpu(x, 5, 5, 1, 2), gpu.col2im_gpu(cols, x.shape, 5, 5, 1, 2)]
        return ours, [kernels.im2col_generic(x, 5, 5, 1, 2), kernels.col2im_generic(cols, x.shape, 5, 5, 1, 2)], 0.0
    w, g, v = device(4096), device(4096), device(4096)
    mine, twin = [w.copy(), g, v.copy()], [w.copy(), g, v.copy()]
    gpu.sgd_momentum_step_gpu(*mine, 0.9, 5e-6, 0.01)
    kernels.sgd_momentum_step_generic(*twin, 0.9, 5e-6, 0.01)
    return [mine[0], mine[2]], [twin[0], twin[2]], 1e-6  # a fused multiply-add may round differently


def _gpu_kernel_check(name: str, seed: int) -> Callable[[Context], Outcome]:
    def run(context: Context) -> Outcome:
        if context.device.kind != "gpu":
            return Outcome(None, "GPU kernels run on a GPU (the test suite checks them under numba's CUDA simulator)")
        from minigrad.kernels import gpu

        reason = gpu.gpu_kernels_unavailable_reason()
        if reason is not None:
            return Outcome(None, f"numba.cuda cannot run here: {reason}")
        with context.device.xp.cuda.Device(context.device.index):
            ours, twins, tolerance = _kernel_case(name, context.device.xp, np.random.default_rng(seed))
        error = max(relative_error(backend.to_numpy(a), backend.to_numpy(b)) for a, b in zip(ours, twins))
        return Outcome(error <= tolerance, f"vs the generic twin: {error:.1e} (tolerance {tolerance:.0e})")

    return run


def kernel_checks() -> list[SelfCheck]:
    """The numba-cuda kernels against their generic twins, on the device (skipped on the CPU)."""
    return [SelfCheck(name, "kernels", _gpu_kernel_check(name, seed)) for seed, name in enumerate(KERNEL_CASES)]


# ----------------------------------------------------------------------------- plugins


def _load_plugin(label: str, load: Callable[[], Any]) -> tuple[list[SelfCheck], Result | None]:
    """The checks a plugin returns, or a failed Result saying why it could not be loaded."""
    start = time.perf_counter()
    try:
        checks = list(load()())
        if not all(isinstance(c, SelfCheck) for c in checks):
            raise TypeError("it must return SelfCheck objects")
        return checks, None
    except Exception as exc:
        detail = f"could not load {label}: {type(exc).__name__}: {exc}"
        return [], Result("plugins", label, "fail", detail, time.perf_counter() - start)


def _import_target(spec: str) -> Callable[[], Any]:
    """A loader of 'package.module:function' (it raises, when called, if the spec is malformed)."""

    def load() -> Any:
        module, _, name = spec.partition(":")
        if not module or not name:
            raise ValueError(f"a plugin is given as MODULE:FUNCTION, got {spec!r}")
        return getattr(importlib.import_module(module), name)

    return load


def plugin_checks(extra: Sequence[str] = ()) -> tuple[list[SelfCheck], list[Result]]:
    """The checks of every entry point in ENTRY_POINT_GROUP and of `extra` ('module:function' each, for a
    checkout that is not installed), and a failed Result for each plugin that does not load."""
    targets: dict[str, tuple[str, Callable[[], Any]]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.value.replace(" ", ""), (f"{ep.name} ({ep.value})", ep.load))
    for spec in extra:
        targets.setdefault(spec.replace(" ", ""), (spec, _import_target(spec)))
    checks: list[SelfCheck] = []
    failures: list[Result] = []
    for label, load in targets.values():
        found, failure = _load_plugin(label, load)
        checks += found
        failures += [failure] if failure else []
    if not targets:
        note = (
            f"no plugin registered in the entry-point group {ENTRY_POINT_GROUP} (pip install -e . registers alexnet's)"
        )
        failures.append(Result("plugins", "(none)", "skip", note, 0.0))
    return checks, failures


# ----------------------------------------------------------------------------- running and reporting


def all_checks(plugins: Sequence[str] = ()) -> tuple[list[SelfCheck], list[Result]]:
    """The built-in checks, then the plugins' (and the Results of plugins that failed to load)."""
    found, failures = plugin_checks(plugins)
    return [*gradcheck_checks(), *layer_checks(), *kernel_checks(), *found], failures


def matches(group: str, name: str, patterns: Sequence[str] | None) -> bool:
    """Whether 'group/name' or the name matches one of the shell-style patterns (always, without patterns)."""
    return not patterns or any(fnmatch.fnmatch(f"{group}/{name}", p) or fnmatch.fnmatch(name, p) for p in patterns)


def select(checks: Iterable[SelfCheck], patterns: Sequence[str] | None) -> list[SelfCheck]:
    """The checks that `matches` keeps."""
    return [c for c in checks if matches(c.group, c.name, patterns)]


def run_check(check: SelfCheck, context: Context) -> Result:
    """Run one check; an exception fails it, with its type, message and innermost frame in the detail."""
    start = time.perf_counter()
    try:
        outcome = check.run(context)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        detail = f"{type(exc).__name__}: {exc} ({Path(frame.filename).name}:{frame.lineno})"
        return Result(check.group, check.name, "fail", detail, time.perf_counter() - start)
    status = "skip" if outcome.passed is None else "pass" if outcome.passed else "fail"
    return Result(check.group, check.name, status, outcome.detail, time.perf_counter() - start, dict(outcome.metrics))


def format_row(result: Result) -> str:
    return f"{result.group:<10} {result.name:<34} {result.status.upper():<5} {result.seconds:7.2f} s  {result.detail}"


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def environment(device: Device) -> dict[str, Any]:
    """What the checks run on: versions, and for a GPU what `backend.gpu_info` finds (never raises)."""
    import minigrad

    env: dict[str, Any] = {
        "minigrad": minigrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "device": str(device),
    }
    try:
        import numba

        env["numba"] = numba.__version__
    except Exception as exc:  # the CPU kernels then run their generic twins
        env["numba"] = f"unavailable ({type(exc).__name__})"
    env["gpu"] = backend.gpu_info(device) if device.kind == "gpu" else None
    return env


def environment_lines(env: dict[str, Any]) -> list[str]:
    """The report's header: versions, and the GPU's name, memory and CUDA versions (or why there is none)."""
    versions = f"Python {env['python']}, NumPy {env['numpy']}, Numba {env['numba']}"
    lines = [f"minigrad {env['minigrad']} selfcheck on {env['device']} ({versions})"]
    gpu = env["gpu"]
    if gpu is None:
        return lines
    if gpu["cupy"] is not None:
        lines.append(
            f"CuPy {gpu['cupy']}, CUDA runtime {gpu['cuda_runtime'] or '?'}, driver {gpu['cuda_driver'] or '?'}"
        )
    if gpu["usable"]:
        lines.append(
            f"GPU: {gpu['name'] or '?'} (compute capability {gpu['compute_capability'] or '?'}), "
            f"{_gib(gpu['memory_total'])} ({_gib(gpu['memory_free'])} free)"
        )
    else:
        lines.append(f"no GPU is usable: {gpu['reason']}")
    return lines


def summary(results: Sequence[Result]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for r in results:
        counts[{"pass": "passed", "fail": "failed", "skip": "skipped"}[r.status]] += 1
    return counts


def write_json(path: str | Path, env: dict[str, Any], results: Sequence[Result], exit_code: int) -> None:
    """The whole report as JSON: environment, one object per check, counts and the exit code."""
    report = {
        "environment": env,
        "checks": [asdict(r) for r in results],
        **summary(results),
        "exit_code": exit_code,
    }
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def selfcheck(
    device: str | Device = "gpu",
    json_path: str | Path | None = None,
    only: Sequence[str] | None = None,
    plugins: Sequence[str] = (),
    out: TextIO = sys.stdout,
) -> int:
    """Run the checks on `device`, print a table (rows as they finish), write JSON if asked.

    Returns EXIT_PASSED (0) when nothing failed (skips are fine), EXIT_FAILED (1) when a check failed, and
    EXIT_NO_GPU (3) when the device is a GPU and none is usable (the report says why; no check runs).
    """
    device = Device(device)
    env = environment(device)
    for line in environment_lines(env):
        print(line, file=out)
    if device.kind == "gpu" and not backend.gpu_available():
        print(f"selfcheck: no GPU is usable, so nothing was checked (exit {EXIT_NO_GPU})", file=out)
        print("(`minigrad selfcheck --device cpu` runs the same checks on the CPU)", file=out)
        if json_path is not None:
            write_json(json_path, env, [], EXIT_NO_GPU)
        return EXIT_NO_GPU
    checks, results = all_checks(plugins)
    checks = select(checks, only)
    results = [r for r in results if matches(r.group, r.name, only)]
    context = Context(device, quick=device.kind == "cpu")
    print(f"{'group':<10} {'check':<34} {'':<5} {'time':>9}  detail", file=out)
    for r in results:
        print(format_row(r), file=out, flush=True)
    for check in checks:
        result = run_check(check, context)
        results.append(result)
        print(format_row(result), file=out, flush=True)
    counts = summary(results)
    code = EXIT_FAILED if counts["failed"] else EXIT_PASSED
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped", file=out)
    if json_path is not None:
        write_json(json_path, env, results, code)
    return code
