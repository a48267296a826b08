"""Specification of `minigrad.kernels.matmul_cpu`: a @ b in one block of rows or columns per core.

`matmul_split` equals the plain `a @ b` (to round-off: a block may round in another order inside the BLAS),
cuts through the larger operand, and writes into `out` when given; `matmul2d` sends only large NumPy float
products there. `F.linear` and `F.matmul` use it: their results and gradients equal the plain products',
on NumPy and on the strict CuPy stand-in (which always takes the plain products).

Tolerances, relative to the largest magnitude of the expected result (sums of hundreds of products cancel,
so an element's own size says little): float32 1e-5, float64 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host

import minigrad as mg
from minigrad import functional as F
from minigrad import kernels as K
from minigrad.kernels import cpu_threads, matmul_cpu

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(got, want, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


@pytest.fixture
def cuts(monkeypatch):
    """Records how each split_over_cores call of matmul_cpu cuts its product: ('rows' | 'columns', count)."""
    seen = []
    real = matmul_cpu.split_over_cores

    def spy(count, body, workers=None):
        seen.append((body.__name__, count))
        return real(count, body, workers)

    monkeypatch.setattr(matmul_cpu, "split_over_cores", spy)
    return seen


def operands(m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize(
    ("shape", "cut"),
    [((40, 30, 7), "rows"), ((7, 30, 40), "columns"), ((5, 200, 3), "rows"), ((3, 2, 3), "rows")],
    ids=["a larger", "b larger", "thin", "fewer rows than workers"],
)
def test_matmul_split_equals_the_plain_product_and_cuts_the_larger_operand(cuts, dtype, workers, shape, cut):
    a, b = operands(*shape, dtype)
    got = K.matmul_split(a, b, workers=workers)
    assert got.dtype == dtype and got.shape == (shape[0], shape[2])
    assert_close(got, a @ b, dtype)
    assert cuts == [(cut, shape[0] if cut == "rows" else shape[2])]


@pytest.mark.parametrize("view", ["transposed", "sliced"])
def test_matmul_split_takes_views_and_writes_into_out(view):
    rng = np.random.default_rng(1)
    if view == "transposed":  # as the linear layer passes w.T and grad.T
        a, b = rng.standard_normal((50, 30)).astype(np.float32).T, rng.standard_normal((60, 50)).astype(np.float32).T
    else:
        a, b = (
            rng.standard_normal((30, 50)).astype(np.float32)[:, :40],
            rng.standard_normal((50, 65)).astype(np.float32)[:40, 5:],
        )
    out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    assert K.matmul_split(a, b, out=out, workers=3) is out
    assert_close(out, a @ b, np.float32)


@pytest.mark.parametrize(
    ("case", "split"),
    [
        ("large float32", True),
        ("large float64", True),
        ("below the threshold", False),
        ("float16", False),
        ("mixed dtypes", False),
        ("a batch of matrices", False),
        ("inside force_generic", False),
    ],
)
def test_matmul2d_splits_only_large_numpy_float_products(cuts, case, split):
    m = k = n = 96  # 96**3 multiply-adds: above SPLIT_MIN_MULTIPLY_ADDS
    dtype = {"large float64": np.float64, "float16": np.float16}.get(case, np.float32)
    a, b = operands(m, k, n, dtype)
    if case == "below the threshold":
        a, b = a[:8, :8], b[:8, :8]
    elif case == "mixed dtypes":
        b = b.astype(np.float64)
    elif case == "a batch of matrices":
        a, b = np.stack([a, a]), np.stack([b, b])
    if case == "inside force_generic":
        with K.force_generic():
            got = K.matmul2d(a, b)
    else:
        got = K.matmul2d(a, b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-3 if dtype == np.float16 else 1e-5, atol=1e-3)
    assert (len(cuts) == 1) is split


def test_the_threshold_is_where_openblas_starts_its_own_threads():
    assert matmul_cpu.SPLIT_MIN_MULTIPLY_ADDS == 64 * 64 * 128


# ----------------------------------------------------------------------------- the ops that use it


@pytest.fixture
def three_cores(monkeypatch):
    """Every split in three blocks, whatever this machine's BLAS runs."""
    monkeypatch.setattr(cpu_threads, "cpu_gemm_threads", lambda: 3)


def leaves(device, dtype, *shapes):
    rng = np.random.default_rng(7)
    return [mg.tensor(rng.standard_normal(s).astype(dtype), device=device, requires_grad=True) for s in shapes]


def forward_backward(op, device, dtype, shapes):
    tensors = leaves(device, dtype, *shapes)
    y = op(*tensors)
    upstream = np.random.default_rng(8).standard_normal(y.shape).astype(dtype)
    y.backward(mg.tensor(upstream, device=device))
    return [to_host(y.data)] + [to_host(t.grad.data) for t in tensors]


# (op, shapes): fc6's shape at a smaller size (the weight is the larger operand, cut by output features),
# a linear layer whose batch is the larger operand, and a square matmul
OPS = {
    "linear, weight larger": (F.linear, [(4, 300), (500, 300), (500,)]),
    "linear, batch larger": (F.linear, [(600, 90), (40, 90), (40,)]),
    "matmul": (F.matmul, [(120, 90), (90, 110)]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_linear_and_matmul_on_all_cores_equal_the_plain_products(name, device, dtype, three_cores, cuts):
    op, shapes = OPS[name]
    with K.force_generic():
        plain = forward_backward(op, device, dtype, shapes)
    tuned = forward_backward(op, device, dtype, shapes)
    for got, want in zip(tuned, plain):
        assert_close(got, want, dtype)
    assert len(cuts) == (3 if device == "cpu" else 0)  # the stand-in's arrays never take the split


def test_a_linear_layer_with_a_small_batch_cuts_the_weight_by_output_features(three_cores, cuts):
    """x (4, 300) @ w.T (300, 500): each core reads its own block of w's rows and all of x, and the products of
    the backward pass also read w (or write dW) once, in blocks."""
    forward_backward(F.linear, "cpu", np.float32, OPS["linear, weight larger"][1])
    y, dx, dw = cuts
    assert y == ("columns", 500)  # the columns of w.T: w's rows, the output features
    assert dx == ("columns", 300)  # grad (4, 500) @ w (500, 300): w's columns
    assert dw == ("rows", 500)  # grad.T (500, 4) @ x (4, 300): dW's rows, the output features
