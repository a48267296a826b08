"""The numba-cuda GPU kernels (minigrad.kernels.gpu) against their generic twins and plain loops.

Without a GPU the kernels run under Numba's CUDA simulator, which executes every GPU thread as Python on
NumPy arrays. The simulator is chosen by NUMBA_ENABLE_CUDASIM=1 when Numba is first imported, and the other
tests in this process use Numba's CPU kernels: so this file runs the kernels in a child process (this very
file, run as a script) once per process, and the tests compare what it returns with the references here.
The simulator runs each thread in Python: shapes stay tiny. On a real GPU the `gpu`-marked tests at the end
run the same cases on CuPy arrays against the generic twins on CuPy.

Tolerances: max-pool, col2im, im2col and (in the simulator) the SGD update give the generic twin's bits;
LRN sums its windows in another order: float32 1e-6, float64 1e-13 relative to the array's scale; float16
sums in float32, so it is compared with a float64 loop (5e-3, about 4 float16 ulps).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- the cases (shared by both processes)


def _pool_input(shape: tuple[int, ...], dtype: Any, seed: int) -> np.ndarray:
    """Small integers (many ties), one NaN, and a plane of -inf when there are two planes or more."""
    x = np.random.default_rng(seed).integers(-3, 3, shape).astype(dtype)
    x.flat[5] = np.nan
    if shape[0] * shape[1] > 1:
        x[-1, -1] = -np.inf
    return x


# name: (kh, kw, stride, padding, x shape, dtype)
POOL_CASES = {
    "3x3/2": (3, 3, 2, 0, (2, 2, 7, 7), np.float32),
    "3x3/2 pad 1": (3, 3, 2, 1, (1, 2, 6, 5), np.float32),
    "2x2 (stride = kernel)": (2, 2, None, 0, (1, 2, 4, 6), np.float32),
    "3x2 stride (2, 1) pad (1, 1)": (3, 2, (2, 1), (1, 1), (1, 1, 5, 6), np.float64),
    "3x3/2 float16": (3, 3, 2, 0, (1, 2, 7, 7), np.float16),
}

# name: (size, alpha, beta, k, x shape, dtype, x scale)
LRN_CASES = {
    "paper (size 5, beta 0.75)": (5, 1e-2, 0.75, 2.0, (2, 7, 2, 3), np.float32, 10.0),
    "size 4, beta 0.6 (pow)": (4, 1e-2, 0.6, 1.0, (1, 6, 2, 2), np.float32, 5.0),
    "size 2, beta 0.5": (2, 1e-1, 0.5, 1.0, (1, 5, 3), np.float32, 3.0),
    "size 1, beta 1": (1, 1e-1, 1.0, 1.0, (2, 3, 2), np.float32, 3.0),
    "float64": (5, 1e-2, 0.75, 2.0, (1, 7, 2, 2), np.float64, 10.0),
    "float16": (5, 1e-3, 0.75, 2.0, (1, 7, 2, 2), np.float16, 30.0),
}

# name: (kh, kw, stride, padding, x shape)
UNFOLD_CASES = {
    "3x3 pad 1": (3, 3, 1, 1, (1, 2, 4, 5)),
    "3x3/2": (3, 3, 2, 0, (2, 1, 7, 7)),
    "3x2 stride (2, 1) pad (1, 0)": (3, 2, (2, 1), (1, 0), (1, 2, 5, 4)),
    "1x1": (1, 1, 1, 0, (2, 2, 2, 3)),
}


def _lrn_input(name: str) -> tuple[np.ndarray, np.ndarray]:
    *_, shape, dtype, scale = LRN_CASES[name]
    gen = np.random.default_rng(len(name))
    return (gen.standard_normal(shape) * scale).astype(dtype), gen.standard_normal(shape).astype(dtype)


def _drift_input() -> tuple[np.ndarray, np.ndarray]:
    """Channel 1 is huge, the rest small: a running sum would keep its rounding error after it leaves."""
    x = np.full((1, 9, 2), 1e-3, dtype=np.float32)
    x[0, 1] = 3e3
    return x, np.ones_like(x)


def _sgd_arrays(dtype: Any) -> list[np.ndarray]:
    gen = np.random.default_rng(7)
    return [gen.standard_normal(37).astype(dtype) for _ in range(3)]


def gpu_results(xp: Any = np) -> dict[str, list[np.ndarray]]:
    """Every case through the GPU kernels (simulated on NumPy, or on CuPy), as NumPy arrays by case name.

    A case that raises records the traceback under "<name>!error" instead.
    """
    from minigrad import backend
    from minigrad.kernels import gpu

    def run(name: str, compute: Callable[[], list[Any]]) -> None:
        try:
            results[name] = [backend.to_numpy(a) for a in compute()]
        except Exception:
            results[name + "!error"] = [np.array(traceback.format_exc())]

    results: dict[str, list[np.ndarray]] = {}
    for name, (kh, kw, stride, padding, shape, dtype) in POOL_CASES.items():

        def pool(kh=kh, kw=kw, stride=stride, padding=padding, shape=shape, dtype=dtype) -> list[Any]:
            x = xp.asarray(_pool_input(shape, dtype, 1))
            out, argmax = gpu.max_pool2d_forward_gpu(x, kh, kw, stride, padding)
            dout = xp.asarray(np.random.default_rng(2).standard_normal(out.shape).astype(dtype))
            return [out, argmax, gpu.max_pool2d_backward_gpu(dout, argmax, x.shape, kh, kw, stride, padding)]

        run(f"pool {name}", pool)
    run("pool all -inf, padded", lambda: list(gpu.max_pool2d_forward_gpu(xp.full((1, 1, 4, 4), -np.inf), 3, 3, 2, 1)))
    for name, (size, alpha, beta, k, *_) in LRN_CASES.items():

        def lrn(name=name, size=size, alpha=alpha, beta=beta, k=k) -> list[Any]:
            x, g = (xp.asarray(a) for a in _lrn_input(name))
            y, scale = gpu.lrn_forward_gpu(x, size, alpha, beta, k)
            return [y, scale, gpu.lrn_backward_gpu(g, x, scale, size, alpha, beta)]

        run(f"lrn {name}", lrn)

    def drift() -> list[Any]:
        x, g = (xp.asarray(a) for a in _drift_input())
        y, scale = gpu.lrn_forward_gpu(x, 3, 1.0, 0.75, 1.0)
        return [y, scale, gpu.lrn_backward_gpu(g, x, scale, 3, 1.0, 0.75)]

    run("lrn drift", drift)
    for name, (kh, kw, stride, padding, shape) in UNFOLD_CASES.items():

        def unfold(kh=kh, kw=kw, stride=stride, padding=padding, shape=shape) -> list[Any]:
            gen = np.random.default_rng(3)
            x = xp.asarray(gen.standard_normal(shape).astype(np.float32))
            cols = gpu.im2col_gpu(x, kh, kw, stride, padding)
            dcols = xp.asarray(gen.standard_normal(cols.shape).astype(np.float32))
            return [cols, gpu.col2im_gpu(dcols, shape, kh, kw, stride, padding)]

        run(f"unfold {name}", unfold)
    x_bias = xp.asarray(np.random.default_rng(4).standard_normal((2, 4, 3, 4)).astype(np.float32))
    run("im2col bias rows, 2 groups", lambda: [gpu.im2col_bias_rows_gpu(x_bias, 3, 3, 1, 1, groups=2)])
    for dtype in (np.float32, np.float64):

        def sgd(dtype=dtype) -> list[Any]:
            w, grad, v = (xp.asarray(a) for a in _sgd_arrays(dtype))
            gpu.sgd_momentum_step_gpu(w, grad, v, 0.9, 5e-4 * 0.01, 0.01)
            return [w, v]

        run(f"sgd {np.dtype(dtype).name}", sgd)
    return results


# ----------------------------------------------------------------------------- references


def reference_results(name: str, xp: Any = np) -> list[np.ndarray]:
    """The generic twins' results for a case (on `xp`), as NumPy arrays."""
    from minigrad import backend, kernels

    kind, _, case = name.partition(" ")
    if kind == "pool":
        kh, kw, stride, padding, shape, dtype = POOL_CASES[case]
        x = xp.asarray(_pool_input(shape, dtype, 1))
        out, argmax = kernels.max_pool2d_forward_generic(x, kh, kw, stride, padding)
        dout = xp.asarray(np.random.default_rng(2).standard_normal(out.shape).astype(dtype))
        arrays = [out, argmax, kernels.max_pool2d_backward_generic(dout, argmax, x.shape, kh, kw, stride, padding)]
    elif kind == "lrn":
        size, alpha, beta, k, *_ = LRN_CASES[case]
        x, g = (xp.asarray(a) for a in _lrn_input(case))
        y, scale = kernels.lrn_forward_generic(x, size, alpha, beta, k)
        arrays = [y, scale, kernels.lrn_backward_generic(g, x, scale, size, alpha, beta)]
    elif kind == "unfold":
        kh, kw, stride, padding, shape = UNFOLD_CASES[case]
        gen = np.random.default_rng(3)
        x = xp.asarray(gen.standard_normal(shape).astype(np.float32))
        cols = kernels.im2col_generic(x, kh, kw, stride, padding)
        dcols = xp.asarray(gen.standard_normal(cols.shape).astype(np.float32))
        arrays = [cols, kernels.col2im_generic(dcols, shape, kh, kw, stride, padding)]
    else:  # sgd
        w, grad, v = (xp.asarray(a) for a in _sgd_arrays(np.dtype(case)))
        kernels.sgd_momentum_step_generic(w, grad, v, 0.9, 5e-4 * 0.01, 0.01)
        arrays = [w, v]
    return [backend.to_numpy(a) for a in arrays]


def lrn_loop(x: np.ndarray, g: np.ndarray, size: int, alpha: float, beta: float, k: float) -> list[np.ndarray]:
    """LRN forward and backward as plain float64 loops over the channel windows: [y, scale, dx]."""
    x64, g64 = (
        x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1),
        g.astype(np.float64).reshape(x.shape[0], x.shape[1], -1),
    )
    c = x64.shape[1]
    before, after = size // 2, (size - 1) // 2
    scale = np.empty_like(x64)
    for i in range(c):
        window = range(max(0, i - before), min(c, i + after + 1))
        scale[:, i] = k + alpha * sum(x64[:, j] ** 2 for j in window)
    y = x64 * scale**-beta
    dx = np.empty_like(x64)
    for i in range(c):
        mirrored = range(max(0, i - after), min(c, i + before + 1))
        back = sum(g64[:, j] * x64[:, j] * scale[:, j] ** (-beta - 1) for j in mirrored)
        dx[:, i] = g64[:, i] * scale[:, i] ** -beta - 2 * alpha * beta * x64[:, i] * back
    return [a.reshape(x.shape) for a in (y, scale, dx)]


def relative(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| relative to the largest |expected|."""
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


LRN_TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}


def assert_like_reference(name: str, got: list[np.ndarray], expected: list[np.ndarray], exact_sgd: bool) -> None:
    """The comparison rules of the module docstring."""
    assert len(got) == len(expected)
    kind = name.split(" ")[0]
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        if kind == "lrn":
            assert relative(a, b) <= LRN_TOLERANCE[a.dtype], relative(a, b)
        elif kind == "sgd" and not exact_sgd:
            assert relative(a, b) <= 4 * np.finfo(a.dtype).eps, relative(a, b)
        else:
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- the simulator, in a child process


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """Every case's results from the kernels run by Numba's CUDA simulator in a child process."""
    out = tmp_path_factory.mktemp("gpu_sim") / "results.npz"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"the simulator process failed:\n{proc.stdout}\n{proc.stderr}"
    with np.load(out, allow_pickle=False) as npz:
        counts = json.loads(str(npz["__counts__"]))
        return {name: [npz[f"{name}/{i}"] for i in range(count)] for name, count in counts.items()}


def _simulated_case(simulated: dict[str, list[np.ndarray]], name: str) -> list[np.ndarray]:
    if name + "!error" in simulated:
        pytest.fail(f"{name} raised in the simulator:\n{simulated[name + '!error'][0]}")
    return simulated[name]


SIMULATED_CASES = [
    *(f"pool {n}" for n in POOL_CASES),
    *(f"lrn {n}" for n in LRN_CASES if n != "float16"),
    *(f"unfold {n}" for n in UNFOLD_CASES),
    "sgd float32",
    "sgd float64",
]


@pytest.mark.parametrize("name", SIMULATED_CASES)
def test_simulated_kernel_matches_its_generic_twin(simulated, name):
    assert_like_reference(name, _simulated_case(simulated, name), reference_results(name), exact_sgd=True)


@pytest.mark.parametrize("name", [f"pool {n}" for n in POOL_CASES])
def test_simulated_max_pool_keeps_the_rules(simulated, name):
    """First maximum wins ties, NaN wins, and every window's gradient lands on its winner exactly once."""
    out, argmax, dx = _simulated_case(simulated, name)
    kh, kw, stride, padding, shape, dtype = POOL_CASES[name.partition(" ")[2]]
    x = _pool_input(shape, dtype, 1)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    sh, sw = (kh, kw) if stride is None else (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    real = np.pad(np.ones(x.shape, dtype=bool), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    expected_dx = np.zeros(xpad.shape, dtype=np.float64)
    for n, c, i, j in np.ndindex(*out.shape):
        rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
        offsets = np.flatnonzero(real[n, c, rows, cols])  # padding never wins
        values = xpad[n, c, rows, cols].ravel()[offsets]
        nans = np.flatnonzero(np.isnan(values))
        first = offsets[nans[0] if len(nans) else int(np.argmax(values))]  # np.argmax: the first maximum
        assert argmax[n, c, i, j] == first
        assert np.array_equal(out[n, c, i, j], xpad[n, c, rows, cols].ravel()[first], equal_nan=True)
        expected_dx[n, c, i * sh + first // kw, j * sw + first % kw] += dout[n, c, i, j]
    expected_dx = expected_dx[:, :, ph : ph + shape[2], pw : pw + shape[3]]
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-3 if dtype == np.float16 else 1e-6)


def test_simulated_max_pool_of_minus_infinity_names_the_first_real_position(simulated):
    out, argmax = _simulated_case(simulated, "pool all -inf, padded")
    assert np.all(out == -np.inf)
    # window (0, 0) starts in the padding: its first real position is offset (1, 1) = 4; the others start inside
    np.testing.assert_array_equal(argmax[0, 0], [[4, 3], [1, 0]])


@pytest.mark.parametrize("name", list(LRN_CASES))
def test_simulated_lrn_matches_a_float64_loop(simulated, name):
    size, alpha, beta, k, _, dtype, _ = LRN_CASES[name]
    x, g = _lrn_input(name)
    tolerance = {np.float16: 5e-3, np.float32: 2e-6, np.float64: 1e-12}[dtype]
    for got, expected in zip(_simulated_case(simulated, f"lrn {name}"), lrn_loop(x, g, size, alpha, beta, k)):
        assert relative(got, expected) <= tolerance


def test_simulated_lrn_sums_each_window_afresh(simulated):
    """After a huge channel leaves the windows, the small ones come out as if it had never been there."""
    x, g = _drift_input()
    y, scale, dx = _simulated_case(simulated, "lrn drift")
    y_ref, scale_ref, dx_ref = lrn_loop(x, g, 3, 1.0, 0.75, 1.0)
    far = slice(4, None)  # channels whose windows never held channel 1
    np.testing.assert_allclose(y[0, far], y_ref[0, far], rtol=1e-6)
    np.testing.assert_allclose(scale[0, far], scale_ref[0, far], rtol=1e-6)
    np.testing.assert_allclose(dx[0, far], dx_ref[0, far], rtol=1e-6)


@pytest.mark.parametrize("name", list(UNFOLD_CASES))
def test_simulated_col2im_is_the_adjoint_of_im2col(simulated, name):
    """<im2col(x), c> == <x, col2im(c)>, with both sides from the GPU kernels."""
    shape = UNFOLD_CASES[name][-1]
    gen = np.random.default_rng(3)
    x = gen.standard_normal(shape).astype(np.float32)
    cols_x, _ = _simulated_case(simulated, f"unfold {name}")
    dcols = gen.standard_normal(cols_x.shape).astype(np.float32)
    _, dx = _simulated_case(simulated, f"unfold {name}")
    lhs = np.sum(cols_x.astype(np.float64) * dcols)
    rhs = np.sum(x.astype(np.float64) * dx)
    assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(lhs))


def test_simulated_im2col_bias_rows_are_the_columns_plus_a_row_of_ones(simulated):
    from minigrad.kernels import im2col_generic

    (cols,) = _simulated_case(simulated, "im2col bias rows, 2 groups")
    x = np.random.default_rng(4).standard_normal((2, 4, 3, 4)).astype(np.float32)
    plain = im2col_generic(x, 3, 3, 1, 1).reshape(2, 2 * 9, 2, 12)  # (G, C/G*KH*KW, N, OH*OW)
    assert cols.shape == (2, 2 * 9 + 1, 2, 12)
    np.testing.assert_array_equal(cols[:, :-1], plain)
    np.testing.assert_array_equal(cols[:, -1], np.ones((2, 2, 12), dtype=np.float32))


# ----------------------------------------------------------------------------- without the simulator


def test_without_a_gpu_the_kernels_say_why():
    from minigrad import backend
    from minigrad.kernels import gpu

    if backend.gpu_available() and gpu.gpu_kernels_usable():
        pytest.skip("numba.cuda runs on this machine's GPU")
    reason = gpu.gpu_kernels_unavailable_reason()
    assert reason
    with pytest.raises(gpu.GpuKernelsUnavailable, match=re.escape(reason[:30])):
        gpu.max_pool2d_forward_gpu(np.zeros((1, 1, 4, 4), dtype=np.float32), 2, 2)
    assert not gpu.use_gpu_kernels_for(np.zeros(3))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda g: g.max_pool2d_forward_gpu(np.zeros((1, 1, 4, 4), dtype=np.int32), 2, 2), TypeError, "floating"),
        (
            lambda g: g.max_pool2d_forward_gpu(np.zeros((1, 4, 4), dtype=np.float32), 2, 2),
            ValueError,
            r"\(N, C, H, W\)",
        ),
        (
            lambda g: g.max_pool2d_forward_gpu(np.zeros((1, 1, 2, 2), dtype=np.float32), 3, 3),
            ValueError,
            "does not fit",
        ),
        (
            lambda g: g.max_pool2d_backward_gpu(
                np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.int32), (1, 1, 4, 4), 2, 2
            ),
            ValueError,
            "argmax has shape",
        ),
        (lambda g: g.lrn_forward_gpu(np.zeros((3,), np.float32), 5, 1e-4, 0.75, 2.0), ValueError, r"\(N, C, \.\.\.\)"),
        (lambda g: g.col2im_gpu(np.zeros((2, 3, 3, 1, 2, 2), np.float32), (1, 1, 4, 4), 3, 3), ValueError, "cols"),
        (lambda g: g.im2col_bias_rows_gpu(np.zeros((1, 3, 4, 4), np.float32), 3, 3, groups=2), ValueError, "groups"),
        (
            lambda g: g.sgd_momentum_step_gpu(
                np.zeros(3, np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32), 0.9, 0, 0.1
            ),
            ValueError,
            "one shape and dtype",
        ),
    ],
)
def test_wrappers_check_their_arguments_before_anything_runs(call, error, message):
    from minigrad.kernels import gpu

    with pytest.raises(error, match=message):
        call(gpu)


# ----------------------------------------------------------------------------- a real GPU


def _cupy_or_skip() -> Any:
    from minigrad import backend
    from minigrad.kernels import gpu

    reason = gpu.gpu_kernels_unavailable_reason()
    if reason is not None:
        pytest.skip(f"numba.cuda cannot run the kernels here: {reason}")
    return backend.Device("gpu").xp


@pytest.fixture(scope="module")
def on_cupy() -> tuple[Any, dict[str, list[np.ndarray]]]:
    """CuPy, and every case's results from the kernels on a real GPU."""
    xp = _cupy_or_skip()
    return xp, gpu_results(xp)


@pytest.mark.gpu
@pytest.mark.parametrize("name", SIMULATED_CASES)
def test_gpu_kernel_matches_its_generic_twin_on_cupy(on_cupy, name):
    xp, results = on_cupy
    if name + "!error" in results:
        pytest.fail(str(results[name + "!error"][0]))
    assert_like_reference(name, results[name], reference_results(name, xp), exact_sgd=False)


@pytest.mark.gpu
def test_gpu_kernels_take_cupy_arrays_of_any_layout_and_return_cupy_arrays():
    xp = _cupy_or_skip()
    from minigrad.kernels import gpu, max_pool2d_forward_generic

    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 6, 9, 9)).astype(np.float32)).transpose(0, 1, 3, 2)
    assert gpu.use_gpu_kernels_for(x)
    out, argmax = gpu.max_pool2d_forward_gpu(x, 3, 3, 2)  # a transposed (non-contiguous) input
    twin, twin_argmax = max_pool2d_forward_generic(x, 3, 3, 2)
    assert isinstance(out, xp.ndarray) and isinstance(argmax, xp.ndarray)
    assert bool((out == twin).all()) and bool((argmax == twin_argmax).all())


# ----------------------------------------------------------------------------- the child process


def _write_simulated_results(path: str) -> None:
    from minigrad.kernels import gpu

    assert gpu.simulated(), "run with NUMBA_ENABLE_CUDASIM=1"
    results = gpu_results(np)
    arrays = {f"{name}/{i}": a for name, values in results.items() for i, a in enumerate(values)}
    counts = json.dumps({name: len(values) for name, values in results.items()})
    np.savez(path, __counts__=np.array(counts), **arrays)


if __name__ == "__main__":
    _write_simulated_results(sys.argv[1])
