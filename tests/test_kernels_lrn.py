"""Specification of the local response normalisation kernels in `minigrad.kernels.lrn`.

Both versions (the fused Numba loop on NumPy float32/float64, and the xp-generic one on every backend) must
equal a plain Python loop over the channels written straight from the definitions:

    window(i) = [i - size//2, i + (size-1)//2] clipped to [0, C-1]
    s_i = k + alpha * sum_{j in window(i)} x_j^2,    y_i = x_i * s_i^(-beta)
    dx_i = g_i s_i^(-beta) - 2 alpha beta x_i * sum_{j : i in window(j)} g_j x_j s_j^(-beta-1)

The reference runs in float64 on the inputs rounded to the dtype under test. `alpha` is the coefficient
actually used, so the paper's convention (alpha) and Caffe's (alpha / size) are both just values of it.

Tolerances, stated once (TOL): the outputs are O(1) numbers here.
- float32: rtol 2e-5, atol 2e-6. The kernels round s, s^beta and the products to float32 (a few ulps each);
  the Numba version accumulates its running window sums in float64, so they add no drift of their own.
- float64: rtol 1e-11, atol 1e-12 (running sums add and subtract, and the versions sum in different orders).
The finite-difference checks use minigrad.gradcheck's own float64 tolerances (atol 1e-6, rtol 1e-4).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import break_numba_kernel, spy_on

import minigrad as mg
import minigrad.functional as F
from minigrad import kernels as K
from minigrad.backend import to_device, to_numpy

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}

needs_numba = pytest.mark.skipif(not K.numba_available(), reason="Numba is not usable here")

SIZES = [1, 2, 3, 4, 5, 7]
BETAS = [0.75, 0.5, 1.0, 0.6]
# name: (alpha actually used, k, scale of the activations), as a function of the window size.
SETTINGS = {
    # The paper: alpha 1e-4 not divided by the size, k 2, activations of a few tens (conv1's ReLU outputs)
    # so that alpha * sum x^2 is comparable with k.
    "paper": lambda size: (1e-4, 2.0, 30.0),
    # Caffe / PyTorch: alpha / size with alpha 0.5 (large, so the normaliser really varies), k 1.
    "caffe": lambda size: (0.5 / size, 1.0, 1.0),
}
CHANNELS = [1, 3, 8]  # 1 and 3: smaller than most windows


# ----------------------------------------------------------------------------- the plain-loop reference


def window(i, size, channels):
    """The channels in the window of channel i, clipped."""
    return range(max(0, i - size // 2), min(channels - 1, i + (size - 1) // 2) + 1)


def reference(x, g, size, alpha, beta, k):
    """(y, s, dx) in float64 by plain loops over the channels, for x and g of shape (N, C, ...)."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    channels = x.shape[1]
    s = np.empty_like(x)
    for i in range(channels):
        total = np.zeros_like(x[:, 0])
        for j in window(i, size, channels):
            total += x[:, j] ** 2
        s[:, i] = k + alpha * total
    y = x * s**-beta
    dx = np.empty_like(x)
    for i in range(channels):
        back = np.zeros_like(x[:, 0])
        for j in range(channels):  # every output j whose window contains i: no mirrored-window shortcut here
            if i in window(j, size, channels):
                back += g[:, j] * x[:, j] * s[:, j] ** (-beta - 1)
        dx[:, i] = g[:, i] * s[:, i] ** -beta - 2 * alpha * beta * x[:, i] * back
    return y, s, dx


def random_case(shape, setting, size, dtype, seed=0):
    """x (ReLU-like: non-negative with zeros, and a few negatives for generality) and g, rounded to dtype."""
    alpha, k, scale = SETTINGS[setting](size)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x = np.where(x > -0.5, x, 0.0) * scale
    g = rng.standard_normal(shape)
    return x.astype(dtype), g.astype(dtype), alpha, k


def check_version(forward, backward, xp, x, g, size, alpha, beta, k):
    """Run one version on backend xp and compare y, scale and dx with the reference at the dtype's tolerance."""
    dtype = x.dtype.type
    where = f"size {size}, alpha {alpha}, beta {beta}, k {k}, x {x.shape} {x.dtype}"
    y_ref, s_ref, dx_ref = reference(x, g, size, alpha, beta, k)
    y, scale = forward(xp.asarray(x), size, alpha, beta, k)
    assert y.dtype == dtype and scale.dtype == dtype
    assert y.shape == x.shape and scale.shape == x.shape
    np.testing.assert_allclose(to_numpy(y), y_ref, **TOL[dtype], err_msg=f"y, {where}")
    np.testing.assert_allclose(to_numpy(scale), s_ref, **TOL[dtype], err_msg=f"scale, {where}")
    dx = backward(xp.asarray(g), xp.asarray(x), scale, size, alpha, beta)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_allclose(to_numpy(dx), dx_ref, **TOL[dtype], err_msg=f"dx, {where}")


GRID = list(itertools.product(SIZES, CHANNELS, SETTINGS))
GRID_IDS = [f"size{size}-C{c}-{setting}" for size, c, setting in GRID]


# ----------------------------------------------------------------------------- both versions equal the loops


@needs_numba
@pytest.mark.parametrize(("size", "channels", "setting"), GRID, ids=GRID_IDS)
def test_numba_equals_the_plain_loop(size, channels, setting, dtype):
    x, g, alpha, k = random_case((2, channels, 3, 5), setting, size, dtype)
    for beta in BETAS:  # 0.75, 0.5 and 1 take the square-root shortcuts, 0.6 takes pow
        check_version(K.lrn_forward_numba, K.lrn_backward_numba, np, x, g, size, alpha, beta, k)


@pytest.mark.parametrize(("size", "channels", "setting"), GRID, ids=GRID_IDS)
def test_generic_equals_the_plain_loop(xp, size, channels, setting, dtype):
    x, g, alpha, k = random_case((2, channels, 3, 5), setting, size, dtype)
    for beta in BETAS:
        check_version(K.lrn_forward_generic, K.lrn_backward_generic, xp, x, g, size, alpha, beta, k)


@needs_numba
@pytest.mark.parametrize("size", SIZES)
def test_numba_and_generic_agree(size, dtype):
    """A larger case: many channels, positions split over several Numba blocks (P = 1100 > 1024)."""
    x, g, alpha, k = random_case((3, 20, 22, 50), "paper", size, dtype, seed=size)
    y_n, s_n = K.lrn_forward_numba(x, size, alpha, 0.75, k)
    y_g, s_g = K.lrn_forward_generic(x, size, alpha, 0.75, k)
    np.testing.assert_allclose(y_n, y_g, **TOL[dtype])
    np.testing.assert_allclose(s_n, s_g, **TOL[dtype])
    dx_n = K.lrn_backward_numba(g, x, s_n, size, alpha, 0.75)
    dx_g = K.lrn_backward_generic(g, x, s_g, size, alpha, 0.75)
    np.testing.assert_allclose(dx_n, dx_g, **TOL[dtype])
    # ... and one image against the loops, so the agreement is not a shared mistake.
    y_ref, _, dx_ref = reference(x[:1], g[:1], size, alpha, 0.75, k)
    np.testing.assert_allclose(y_n[:1], y_ref, **TOL[dtype])
    np.testing.assert_allclose(dx_n[:1], dx_ref, **TOL[dtype])


@pytest.fixture(params=["numba", "generic"])
def version(request):
    if request.param == "numba":
        if not K.numba_available():
            pytest.skip("Numba is not usable here")
        return K.lrn_forward_numba, K.lrn_backward_numba
    return K.lrn_forward_generic, K.lrn_backward_generic


@pytest.mark.parametrize("shape", [(4, 6), (2, 6, 7), (1, 6, 2, 3, 4)], ids=["2-D", "3-D", "5-D"])
def test_other_ranks_normalise_over_axis_1(version, shape, dtype):
    forward, backward = version
    x, g, alpha, k = random_case(shape, "caffe", 3, dtype)
    check_version(forward, backward, np, x, g, 3, alpha, 0.75, k)


def test_non_contiguous_inputs(version, dtype):
    forward, backward = version
    x, g, alpha, k = random_case((3, 5, 4, 6), "caffe", 5, dtype)
    x_t, g_t = x.transpose(0, 1, 3, 2), g.transpose(0, 1, 3, 2)  # views with the last two axes swapped
    check_version(forward, backward, np, x_t, g_t, 5, alpha, 0.75, k)


def test_window_sums_do_not_drift_after_a_large_dynamic_range(version, dtype):
    """A few huge channels, then many small ones, and a small k. A plain running (or cumulative) sum would keep
    the huge squares' rounding error (1e-7 * 1e6 in float32, 1e-16 * 1e6 in float64) in the small channels'
    sums after the huge ones have left the window. The Numba kernels' compensated float64 running sums must
    not; the generic version adds each window on its own, so it cannot.
    """
    forward, backward = version
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 1.0, (2, 40, 3, 3)) * 0.1
    x[:, :4] *= 1e4
    g = rng.standard_normal(x.shape)
    x, g = x.astype(dtype), g.astype(dtype)
    check_version(forward, backward, np, x, g, 5, 1.0, 0.75, 1e-3)


# ----------------------------------------------------------------------------- finite differences


GRADCHECK_CASES = {
    # name: (shape, size, alpha, beta, k, scale of x)
    "paper, size 5": ((2, 7, 3, 3), 5, 1e-4, 0.75, 2.0, 30.0),
    "caffe, size 4 (even)": ((2, 6, 2, 3), 4, 0.5 / 4, 0.75, 1.0, 1.0),
    "size 2, beta 0.5": ((1, 5, 2, 2), 2, 0.4, 0.5, 1.0, 1.0),
    "size 7 > C = 3, beta 1": ((2, 3, 2, 2), 7, 0.3, 1.0, 1.0, 1.0),
    "size 3, beta 0.6": ((2, 4, 3), 3, 0.3, 0.6, 0.5, 1.0),
    "size 1": ((2, 3, 2, 2), 1, 0.5, 0.75, 1.0, 1.0),
}


def lrn_gradcheck(case, device="cpu"):
    shape, size, alpha, beta, k, scale = GRADCHECK_CASES[case]
    data = np.random.default_rng(11).standard_normal(shape) * scale
    x = mg.Tensor(to_device(data, device), requires_grad=True)
    # alpha is passed as the coefficient to use; alpha_over_size=False keeps it as it is.
    report = mg.gradcheck(lambda t: F.local_response_norm(t, size, alpha, beta, k), x, name=case)
    assert report.passed, report.table()


@needs_numba
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_numba_path(case, spies):
    lrn_gradcheck(case)
    assert "lrn_backward_numba" in spies and "lrn_backward_generic" not in spies


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_generic_path(case, device, spies):
    with K.force_generic():
        lrn_gradcheck(case, device)
    assert "lrn_backward_generic" in spies and "lrn_backward_numba" not in spies


# ----------------------------------------------------------------------------- dispatch


NAMES = [f"lrn_{d}_{v}" for d in ("forward", "backward") for v in ("numba", "generic")]


@pytest.fixture
def spies(monkeypatch):
    """Wrap the four versions so a test can see which ones the dispatchers called."""
    return spy_on(monkeypatch, "minigrad.kernels.lrn", NAMES)


def forward_and_backward(xp=np, dtype=np.float32):
    x = mg.Tensor(xp.asarray(np.random.default_rng(4).standard_normal((2, 6, 3, 3)).astype(dtype)), requires_grad=True)
    y = F.local_response_norm(x, 5)
    y.backward(xp.ones(y.shape, dtype=dtype))
    return y, x.grad


@needs_numba
@pytest.mark.parametrize("dtype_", DTYPES, ids=["float32", "float64"])
def test_numpy_float_input_takes_the_numba_path(spies, monkeypatch, dtype_):
    monkeypatch.delenv("MINIGRAD_DISABLE_NUMBA", raising=False)
    forward_and_backward(dtype=dtype_)
    assert spies == ["lrn_forward_numba", "lrn_backward_numba"]


def test_force_generic_takes_the_generic_path(spies):
    with K.force_generic():
        forward_and_backward()
    assert spies == ["lrn_forward_generic", "lrn_backward_generic"]


def test_environment_variable_disables_numba(spies, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DISABLE_NUMBA", "1")
    forward_and_backward()
    assert spies == ["lrn_forward_generic", "lrn_backward_generic"]


def test_device_arrays_take_the_generic_path(spies, xp):
    if xp is np:
        pytest.skip("NumPy arrays are not device arrays")
    forward_and_backward(xp)
    assert spies == ["lrn_forward_generic", "lrn_backward_generic"]


def test_float16_takes_the_generic_path_and_keeps_its_dtype(spies):
    y, dx = forward_and_backward(dtype=np.float16)
    assert spies == ["lrn_forward_generic", "lrn_backward_generic"]
    assert y.dtype == np.float16 and dx.dtype == np.float16


@needs_numba
def test_a_failing_kernel_warns_once_and_falls_back(monkeypatch):
    break_numba_kernel(monkeypatch, "lrn", "lrn_forward_kernel")
    x, g, alpha, k = random_case((2, 6, 3, 3), "caffe", 5, np.float64)
    with pytest.warns(RuntimeWarning, match="pretend the JIT failed"):
        y, scale = K.lrn_forward(x, 5, alpha, 0.75, k)
    y_ref, _, dx_ref = reference(x, g, 5, alpha, 0.75, k)
    np.testing.assert_allclose(y, y_ref, **TOL[np.float64])
    np.testing.assert_allclose(K.lrn_backward(g, x, scale, 5, alpha, 0.75), dx_ref, **TOL[np.float64])
    assert not K.numba_available()


# ----------------------------------------------------------------------------- argument checks


def test_bad_arguments_are_errors(version):
    forward, backward = version
    with pytest.raises(ValueError, match="size must be >= 1"):
        forward(np.ones((1, 3, 2, 2), np.float32), 0, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\)"):
        forward(np.ones(3, np.float32), 5, 1e-4, 0.75, 2.0)
    x = np.ones((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="grad has shape"):
        backward(np.ones((1, 3, 2, 1), np.float32), x, x, 5, 1e-4, 0.75)
