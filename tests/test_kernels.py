"""Specification of the convolution and pooling kernels in `minigrad.kernels`.

Every kernel exists twice: a compiled Numba loop (NumPy float32/float64 on the CPU) and an xp-generic
version (any array module: NumPy, the strict CuPy stand-in, real CuPy). Both must equal a naive
plain-Python loop that is written straight from the definitions, and each other.

Tolerances, stated once:
- im2col and max-pool forward only copy values: results must be EXACTLY equal;
- col2im and max-pool backward add: float32 rtol=atol=1e-6, float64 rtol=atol=1e-12 against the naive loop
  (the kernels are written to add in the naive loop's order, so they are usually bit-identical);
- the adjoint identity <im2col(x), c> == <x, col2im(c)> is checked in float64 with rtol 1e-12.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import break_numba_kernel, spy_on, use_backend  # the same backends as the `xp` fixture, chosen by id

from minigrad import kernels as K
from minigrad.backend import to_numpy

SUM_TOL = {np.float32: {"rtol": 1e-6, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}

needs_numba = pytest.mark.skipif(not K.numba_available(), reason="Numba is not usable here")

# (x shape (N, C, H, W), kh, kw, stride, padding): small, so the naive loops stay fast.
CASES = {
    "3x3 pad 1 (conv3-5)": ((2, 3, 7, 7), 3, 3, (1, 1), (1, 1)),
    "5x5 pad 2 (conv2)": ((2, 2, 9, 9), 5, 5, (1, 1), (2, 2)),
    "11x11 stride 4 (conv1)": ((1, 2, 31, 31), 11, 11, (4, 4), (0, 0)),
    "pool 3x3 stride 2": ((2, 3, 13, 13), 3, 3, (2, 2), (0, 0)),
    "odd sizes, stride 2": ((1, 2, 9, 7), 3, 3, (2, 2), (0, 0)),
    "stride > kernel": ((2, 2, 10, 11), 2, 2, (3, 3), (0, 0)),
    "1x1 kernel": ((2, 3, 5, 6), 1, 1, (1, 1), (0, 0)),
    "1x1 kernel, stride 2": ((1, 2, 5, 6), 1, 1, (2, 2), (0, 0)),
    "batch 1, non-square everything": ((1, 3, 8, 10), 3, 5, (1, 2), (1, 2)),
    "non-square stride and padding": ((2, 2, 9, 12), 2, 4, (2, 3), (0, 1)),
    "padding > kernel // 2 (all-padding windows)": ((1, 2, 4, 5), 2, 2, (1, 1), (2, 2)),
    "kernel = whole input": ((2, 2, 4, 4), 4, 4, (1, 1), (0, 0)),
    "stride not dividing, padding 1": ((2, 1, 8, 8), 3, 3, (3, 2), (1, 1)),
    # the Numba im2col splits padded rows into stride phases; a width that the stride does not divide
    # leaves a ragged last phase, and side padding must land in the right phase
    "11x11 stride 4 padding 2, ragged phases": ((1, 2, 30, 29), 11, 11, (4, 4), (2, 2)),
    "stride 1, side padding only, OW != W": ((1, 2, 6, 7), 3, 3, (1, 1), (0, 2)),
    # stride 1 with OW == W takes the Numba shifted-copy path; these stress its edges
    "same conv, non-square kernel": ((2, 2, 6, 9), 3, 5, (1, 1), (1, 2)),
    "same conv, input smaller than the kernel (offsets that only see padding)": ((1, 2, 2, 3), 5, 5, (1, 1), (2, 2)),
}
case_ids = list(CASES)


@pytest.fixture(params=case_ids)
def case(request):
    return CASES[request.param]


# ----------------------------------------------------------------------------- naive references


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def naive_im2col(x, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    cols = np.zeros((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for b, ch, i, j, r, s in itertools.product(range(n), range(c), range(kh), range(kw), range(oh), range(ow)):
        row, col = r * sh + i - ph, s * sw + j - pw
        if 0 <= row < h and 0 <= col < w:
            cols[ch, i, j, b, r, s] = x[b, ch, row, col]
    return cols


def naive_col2im(cols, x_shape, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    oh, ow = cols.shape[-2:]
    dx = np.zeros(x_shape, dtype=cols.dtype)
    for b, ch, i, j, r, s in itertools.product(range(n), range(c), range(kh), range(kw), range(oh), range(ow)):
        row, col = r * sh + i - ph, s * sw + j - pw
        if 0 <= row < h and 0 <= col < w:
            dx[b, ch, row, col] += cols[ch, i, j, b, r, s]
    return dx


def naive_max_pool_forward(x, kh, kw, stride, padding):
    """Scan each window's real positions in row-major order; '>' keeps the first maximum; first NaN wins."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=np.int64)
    for b, ch, r, s in itertools.product(range(n), range(c), range(oh), range(ow)):
        best, best_k = -np.inf, -1
        for i, j in itertools.product(range(kh), range(kw)):
            row, col = r * sh + i - ph, s * sw + j - pw
            if not (0 <= row < h and 0 <= col < w):
                continue  # padding never wins
            v = x[b, ch, row, col]
            if best_k < 0 or v > best or (np.isnan(v) and not np.isnan(best)):
                best, best_k = v, i * kw + j
        best_k = max(best_k, 0)  # a window of padding only: offset 0 (in the padding, so no gradient)
        out[b, ch, r, s], argmax[b, ch, r, s] = best, best_k
    return out, argmax


def naive_max_pool_backward(dout, argmax, x_shape, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    h, w = x_shape[2:]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for b, ch, r, s in itertools.product(*(range(d) for d in dout.shape)):
        i, j = divmod(int(argmax[b, ch, r, s]), kw)
        row, col = r * sh + i - ph, s * sw + j - pw
        if 0 <= row < h and 0 <= col < w:
            dx[b, ch, row, col] += dout[b, ch, r, s]
    return dx


def random_inputs(case, dtype, seed=0):
    """x, and random cols / dout of the right shapes, all seeded."""
    x_shape, kh, kw, (sh, sw), (ph, pw) = case
    rng = np.random.default_rng(seed)
    oh, ow = out_size(x_shape[2], kh, sh, ph), out_size(x_shape[3], kw, sw, pw)
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = rng.standard_normal((x_shape[1], kh, kw, x_shape[0], oh, ow)).astype(dtype)
    dout = rng.standard_normal((*x_shape[:2], oh, ow)).astype(dtype)
    return x, cols, dout


# The two versions under test, as (im2col, col2im, pool forward, pool backward).
NUMBA = (K.im2col_numba, K.col2im_numba, K.max_pool2d_forward_numba, K.max_pool2d_backward_numba)
GENERIC = (K.im2col_generic, K.col2im_generic, K.max_pool2d_forward_generic, K.max_pool2d_backward_generic)


def check_against_naive(version, xp, case, dtype):
    im2col, col2im, pool_forward, pool_backward = version
    x_shape, kh, kw, stride, padding = case
    x, cols, dout = random_inputs(case, dtype)
    geometry = (kh, kw, stride, padding)

    got = im2col(xp.asarray(x), *geometry)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(to_numpy(got), naive_im2col(x, *geometry))

    got = col2im(xp.asarray(cols), x_shape, *geometry)
    assert got.dtype == dtype and got.shape == x_shape
    np.testing.assert_allclose(to_numpy(got), naive_col2im(cols, x_shape, *geometry), **SUM_TOL[dtype])

    out, argmax = pool_forward(xp.asarray(x), *geometry)
    want_out, want_argmax = naive_max_pool_forward(x, *geometry)
    assert out.dtype == dtype and argmax.dtype == K.ARGMAX_DTYPE
    np.testing.assert_array_equal(to_numpy(out), want_out)
    np.testing.assert_array_equal(to_numpy(argmax), want_argmax)

    got = pool_backward(xp.asarray(dout), argmax, x_shape, *geometry)
    assert got.dtype == dtype and got.shape == x_shape
    want = naive_max_pool_backward(dout, want_argmax, x_shape, *geometry)
    np.testing.assert_allclose(to_numpy(got), want, **SUM_TOL[dtype])


# ----------------------------------------------------------------------------- both versions equal the naive loop


@needs_numba
def test_numba_kernels_equal_the_naive_loop(case, dtype):
    check_against_naive(NUMBA, np, case, dtype)


def test_generic_kernels_equal_the_naive_loop(xp, case, dtype):
    check_against_naive(GENERIC, xp, case, dtype)


@needs_numba
def test_numba_and_generic_agree(xp, case, dtype):
    """Copies are identical; sums too, since both add in the same order (col2im) or the same values."""
    x_shape, kh, kw, stride, padding = case
    x, cols, dout = random_inputs(case, dtype, seed=1)
    geometry = (kh, kw, stride, padding)
    np.testing.assert_array_equal(to_numpy(K.im2col_generic(xp.asarray(x), *geometry)), K.im2col_numba(x, *geometry))
    np.testing.assert_array_equal(
        to_numpy(K.col2im_generic(xp.asarray(cols), x_shape, *geometry)), K.col2im_numba(cols, x_shape, *geometry)
    )
    out_g, arg_g = K.max_pool2d_forward_generic(xp.asarray(x), *geometry)
    out_n, arg_n = K.max_pool2d_forward_numba(x, *geometry)
    np.testing.assert_array_equal(to_numpy(out_g), out_n)
    np.testing.assert_array_equal(to_numpy(arg_g), arg_n)
    dx_g = K.max_pool2d_backward_generic(xp.asarray(dout), arg_g, x_shape, *geometry)
    dx_n = K.max_pool2d_backward_numba(dout, arg_n, x_shape, *geometry)
    np.testing.assert_allclose(to_numpy(dx_g), dx_n, **SUM_TOL[dtype])


@needs_numba
def test_numba_col2im_by_channel_is_bit_identical(case, dtype, monkeypatch):
    """The per-channel shifted-run col2im (stride 1, OW == W, many channels) adds in the same order."""
    monkeypatch.setattr(sys.modules["minigrad.kernels.im2col"], "SHIFT_COL2IM_MIN_CHANNELS", 1)
    x_shape, kh, kw, stride, padding = case
    _, cols, _ = random_inputs(case, dtype, seed=5)
    geometry = (kh, kw, stride, padding)
    got = K.col2im_numba(cols, x_shape, *geometry)
    np.testing.assert_array_equal(got, K.col2im_generic(cols, x_shape, *geometry))
    np.testing.assert_allclose(got, naive_col2im(cols, x_shape, *geometry), **SUM_TOL[dtype])


def test_generic_kernels_take_views_with_any_strides(xp):
    """The generic im2col and max-pool read windows through a strided view of their input: an input that is
    itself a view (sliced channels, reversed rows, a transpose) must give the same result as its copy."""
    rng = np.random.default_rng(6)
    base = xp.asarray(rng.standard_normal((2, 6, 9, 8)).astype(np.float32))
    views = {
        "every other channel": base[:, ::2],
        "rows reversed": base[:, :, ::-1],
        "H and W swapped": base.transpose(0, 1, 3, 2),
    }
    for name, view in views.items():
        copy = to_numpy(view).copy()
        for kh, kw, stride, padding in [(3, 3, (2, 2), (0, 0)), (3, 2, (1, 2), (1, 1))]:
            got = to_numpy(K.im2col_generic(view, kh, kw, stride, padding))
            np.testing.assert_array_equal(got, naive_im2col(copy, kh, kw, stride, padding), err_msg=name)
            out, argmax = K.max_pool2d_forward_generic(view, kh, kw, stride, padding)
            want_out, want_argmax = naive_max_pool_forward(copy, kh, kw, stride, padding)
            np.testing.assert_array_equal(to_numpy(out), want_out, err_msg=name)
            np.testing.assert_array_equal(to_numpy(argmax), want_argmax, err_msg=name)


# ----------------------------------------------------------------------------- writing into a given buffer


@pytest.mark.parametrize("version", ["numba", "generic"])
def test_kernels_write_into_out_and_return_it(xp, case, dtype, version):
    """`out=` receives the same values a fresh result would have; col2im overwrites whatever was there."""
    if version == "numba":
        if not K.numba_available() or xp is not np:
            pytest.skip("the Numba kernels take NumPy arrays")
        im2col, col2im = K.im2col_numba, K.col2im_numba
    else:
        im2col, col2im = K.im2col_generic, K.col2im_generic
    x_shape, kh, kw, stride, padding = case
    x, cols, _ = random_inputs(case, dtype, seed=4)
    geometry = (kh, kw, stride, padding)
    buffer = xp.asarray(np.full(cols.shape, np.nan, dtype=dtype))  # stale values must not survive
    assert im2col(xp.asarray(x), *geometry, out=buffer) is buffer
    np.testing.assert_array_equal(to_numpy(buffer), naive_im2col(x, *geometry))
    dx = xp.asarray(np.full(x_shape, 7.0, dtype=dtype))
    assert col2im(xp.asarray(cols), x_shape, *geometry, out=dx) is dx
    np.testing.assert_allclose(to_numpy(dx), naive_col2im(cols, x_shape, *geometry), **SUM_TOL[dtype])


@pytest.mark.parametrize("version", ["numba", "generic"])
def test_chunked_im2col_unfolds_any_block_of_images_and_channels(xp, case, dtype, version):
    """unfold(n0, m, c0, c1) is im2col of x[n0:n0+m, c0:c1], for every block, called in any order and
    again: what the unfolder prepared once (the stride phases, the padded input) serves every call."""
    if version == "numba" and (not K.numba_available() or xp is not np):
        pytest.skip("the Numba kernels take NumPy arrays")
    x_shape, kh, kw, stride, padding = case
    x, _, _ = random_inputs(case, dtype, seed=8)
    unfold = K.ChunkedIm2col(xp.asarray(x), kh, kw, stride, padding, use_numba=version == "numba")
    n, c = x_shape[:2]
    blocks = [(0, n, 0, c), (n - 1, 1, c - 1, c), (0, 1, 0, 1), (n - 1, 1, 0, c), (0, n, c // 2, c)]
    for n0, m, c0, c1 in blocks + blocks[::-1]:
        want = naive_im2col(x[n0 : n0 + m, c0:c1], kh, kw, stride, padding)
        buffer = xp.asarray(np.full(want.shape, np.nan, dtype=dtype))  # stale values must not survive
        assert unfold(n0, m, c0, c1, out=buffer) is buffer
        np.testing.assert_array_equal(to_numpy(buffer), want, err_msg=f"block {(n0, m, c0, c1)}")
    np.testing.assert_array_equal(to_numpy(unfold()), naive_im2col(x, kh, kw, stride, padding))


def test_chunked_im2col_refuses_a_block_outside_x(xp):
    unfold = K.ChunkedIm2col(xp.asarray(np.ones((2, 4, 5, 5), np.float32)), 3, 3)
    for n0, m, c0, c1 in [(1, 2, 0, 4), (0, -1, 0, 4), (-1, 1, 0, 4), (0, 2, 3, 2), (0, 2, 0, 5)]:
        with pytest.raises(ValueError, match=r"no block of images .* in x \(2, 4, 5, 5\)"):
            unfold(n0, m, c0, c1)
    assert unfold(1, 0, 2, 2).shape == (0, 3, 3, 0, 3, 3)  # an empty block is empty, as a slice would be


@needs_numba
def test_chunked_im2col_refuses_non_integer_offsets_without_breaking_numba():
    unfold = K.ChunkedIm2col(np.ones((2, 4, 9, 9), np.float32), 3, 3, 2)
    with pytest.raises(TypeError, match="must be integers"):
        unfold(np.float64(1), 1)
    assert K.numba_available() and unfold.numba
    np.testing.assert_array_equal(unfold(np.int64(1), 1), K.im2col_generic(np.ones((1, 4, 9, 9), np.float32), 3, 3, 2))


def test_im2col_takes_an_empty_batch(xp):
    x = xp.asarray(np.ones((0, 3, 9, 9), np.float32))
    assert K.im2col(x, 3, 3, 2).shape == (3, 3, 3, 0, 4, 4)


@needs_numba
def test_chunked_im2col_falls_back_to_generic_when_numba_breaks_between_calls(monkeypatch):
    x = np.random.default_rng(9).standard_normal((3, 2, 9, 9))
    unfold = K.ChunkedIm2col(x, 3, 3, 2, 1)  # stride 2: the phase kernel
    assert unfold.numba
    np.testing.assert_array_equal(unfold(0, 1), naive_im2col(x[:1], 3, 3, (2, 2), (1, 1)))
    break_numba_kernel(monkeypatch, "im2col", "im2col_kernel")
    with pytest.warns(RuntimeWarning, match="Numba is unavailable"):
        cols = unfold(1, 2, 1, 2)
    np.testing.assert_array_equal(cols, naive_im2col(x[1:3, 1:2], 3, 3, (2, 2), (1, 1)))
    assert not unfold.numba
    with pytest.raises(K.NumbaUnavailable):
        K.ChunkedIm2col(x, 3, 3, 2, 1, use_numba=True)


def test_chunked_im2col_takes_the_generic_path_without_numba(xp, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DISABLE_NUMBA", "1")
    x = np.random.default_rng(10).standard_normal((2, 3, 6, 7)).astype(np.float32)
    unfold = K.ChunkedIm2col(xp.asarray(x), 3, 3, 1, 1)
    assert not unfold.numba
    np.testing.assert_array_equal(to_numpy(unfold(1, 1, 1, 3)), naive_im2col(x[1:, 1:], 3, 3, (1, 1), (1, 1)))


def test_out_of_the_wrong_shape_dtype_or_layout_is_refused(xp):
    x = xp.asarray(np.ones((1, 2, 5, 5), np.float32))
    cols_shape = (2, 3, 3, 1, 3, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 3, 1, 3, 3\)"):
        K.im2col(x, 3, 3, out=xp.empty((2, 3, 3, 1, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        K.im2col(x, 3, 3, out=xp.empty(cols_shape, dtype=np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        K.col2im(xp.ones(cols_shape, dtype=np.float32), (1, 2, 5, 5), 3, 3, out=xp.empty((5, 5, 2, 1), np.float32).T)


# ----------------------------------------------------------------------------- adjoint identity


def adjoint_gap(im2col, col2im, xp, case):
    """<im2col(x), c> - <x, col2im(c)>, relative to the size of the terms, in float64."""
    x_shape, kh, kw, stride, padding = case
    x, cols, _ = random_inputs(case, np.float64, seed=2)
    lhs = np.vdot(to_numpy(im2col(xp.asarray(x), kh, kw, stride, padding)), cols)
    rhs = np.vdot(x, to_numpy(col2im(xp.asarray(cols), x_shape, kh, kw, stride, padding)))
    scale = np.sqrt(cols.size) + abs(lhs)  # the terms are O(1) random numbers
    return abs(lhs - rhs) / scale


@needs_numba
def test_col2im_is_the_adjoint_of_im2col_numba(case):
    assert adjoint_gap(K.im2col_numba, K.col2im_numba, np, case) < 1e-12


def test_col2im_is_the_adjoint_of_im2col_generic(xp, case):
    assert adjoint_gap(K.im2col_generic, K.col2im_generic, xp, case) < 1e-12


# ----------------------------------------------------------------------------- max-pool rules


@pytest.fixture(params=["numba", "numpy", "strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def pool(request):
    """(forward, backward, xp): the Numba version on NumPy, or the generic one on each backend."""
    if request.param == "numba":
        if not K.numba_available():
            pytest.skip("Numba is not usable here")
        yield K.max_pool2d_forward_numba, K.max_pool2d_backward_numba, np
        return
    with use_backend(request.param) as (xp, _):
        yield K.max_pool2d_forward_generic, K.max_pool2d_backward_generic, xp


def test_max_pool_ties_go_to_the_first_maximum(pool):
    forward, backward, xp = pool
    # One 2x3 window (row-major offsets 0..5) whose maximum 7 appears at offsets 1, 3 and 5.
    x = np.array([[[[1.0, 7.0, 2.0], [7.0, 0.0, 7.0]]]], dtype=np.float32)
    out, argmax = forward(xp.asarray(x), 2, 3, (1, 1), (0, 0))
    assert to_numpy(out).item() == 7.0
    assert to_numpy(argmax).item() == 1
    dx = to_numpy(backward(xp.asarray(np.ones((1, 1, 1, 1), np.float32)), argmax, x.shape, 2, 3, (1, 1), (0, 0)))
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])


def test_max_pool_constant_input_picks_the_top_left_of_every_window(pool):
    forward, _, xp = pool
    x = np.full((2, 3, 7, 7), 0.5, dtype=np.float64)
    out, argmax = forward(xp.asarray(x), 3, 3, (2, 2), (0, 0))
    np.testing.assert_array_equal(to_numpy(out), 0.5)
    np.testing.assert_array_equal(to_numpy(argmax), 0)


@pytest.mark.parametrize("kernel", [2, 3])
def test_max_pool_gradient_has_exactly_one_nonzero_per_window(pool, kernel, dtype):
    """Non-overlapping windows (stride = kernel) full of ties: each window's gradient lands on ONE element."""
    forward, backward, xp = pool
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(2, 3, 4 * kernel, 5 * kernel)).astype(dtype)  # many equal maxima
    out, argmax = forward(xp.asarray(x), kernel, kernel, (kernel, kernel), (0, 0))
    dout = np.ones(out.shape, dtype=dtype)
    dx = to_numpy(backward(xp.asarray(dout), argmax, x.shape, kernel, kernel, (kernel, kernel), (0, 0)))
    # (N, C, OH, OW, kernel, kernel): one block per window.
    windows = dx.reshape(2, 3, 4, kernel, 5, kernel).transpose(0, 1, 2, 4, 3, 5)
    assert np.count_nonzero(dx) == out.size
    np.testing.assert_array_equal((windows != 0).sum(axis=(4, 5)), 1)
    # ...and it lands on a maximum of its window.
    x_windows = x.reshape(2, 3, 4, kernel, 5, kernel).transpose(0, 1, 2, 4, 3, 5)
    np.testing.assert_array_equal(x_windows[windows != 0], to_numpy(out).ravel())


def test_max_pool_overlapping_windows_add_their_gradients(pool):
    forward, backward, xp = pool
    # 3x3 stride 2 on a 5x5 input whose centre is the largest: it wins all four windows.
    x = np.zeros((1, 1, 5, 5), dtype=np.float32)
    x[0, 0, 2, 2] = 1.0
    _, argmax = forward(xp.asarray(x), 3, 3, (2, 2), (0, 0))
    dout = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
    dx = to_numpy(backward(xp.asarray(dout), argmax, x.shape, 3, 3, (2, 2), (0, 0)))
    assert dx[0, 0, 2, 2] == 10.0 and np.count_nonzero(dx) == 1


def test_max_pool_padding_never_wins(pool):
    forward, _, xp = pool
    x = -1e30 * np.ones((1, 2, 5, 5), dtype=np.float32)  # hugely negative, but still larger than -inf padding
    out, argmax = forward(xp.asarray(x), 3, 3, (2, 2), (1, 1))
    np.testing.assert_array_equal(to_numpy(out), np.float32(-1e30))
    # The first window starts in the padding corner; its first real element is offset (1, 1) = 4.
    assert to_numpy(argmax)[0, 0, 0, 0] == 4


def test_max_pool_a_window_of_minus_infinity_next_to_padding_picks_its_first_real_position(pool):
    forward, backward, xp = pool
    x = np.array([[[[-np.inf, -np.inf, 1.0, 2.0]]]], dtype=np.float32)
    out, argmax = forward(xp.asarray(x), 1, 3, (1, 2), (0, 1))
    np.testing.assert_array_equal(to_numpy(out).ravel(), [-np.inf, 2.0])
    assert to_numpy(argmax).ravel().tolist() == [1, 2]  # offset 0 is the padding column
    dx = backward(xp.asarray(np.ones((1, 1, 1, 2), np.float32)), argmax, x.shape, 1, 3, (1, 2), (0, 1))
    np.testing.assert_array_equal(to_numpy(dx).ravel(), [1.0, 0.0, 0.0, 1.0])  # no gradient lost


@pytest.mark.parametrize("case", list(CASES))
def test_max_pool_with_many_minus_infinities_equals_the_naive_loop(pool, case):
    forward, backward, xp = pool
    shape, kh, kw, stride, padding = CASES[case]
    x = np.random.default_rng(7).standard_normal(shape)
    x[np.random.default_rng(8).random(shape) < 0.6] = -np.inf  # many windows of -inf only, some next to padding
    out, argmax = forward(xp.asarray(x), kh, kw, stride, padding)
    ref_out, ref_argmax = naive_max_pool_forward(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(to_numpy(out), ref_out)
    np.testing.assert_array_equal(to_numpy(argmax), ref_argmax)
    dout = np.random.default_rng(9).standard_normal(ref_out.shape)
    dx = backward(xp.asarray(dout), argmax, x.shape, kh, kw, stride, padding)
    ref_dx = naive_max_pool_backward(dout, ref_argmax, x.shape, kh, kw, stride, padding)
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=1e-12, atol=1e-15)  # float64; overlaps add in any order


@pytest.mark.parametrize("case", list(CASES))
def test_max_pool_with_nans_and_infinities_scattered_equals_the_naive_loop(pool, case):
    """Windows inside the image and windows at the padding, some holding NaN, -inf or both."""
    forward, _, xp = pool
    shape, kh, kw, stride, padding = CASES[case]
    draw = np.random.default_rng(10).random(shape)
    x = np.random.default_rng(11).standard_normal(shape)
    x[draw < 0.15], x[draw > 0.8] = np.nan, -np.inf
    out, argmax = forward(xp.asarray(x), kh, kw, stride, padding)
    ref_out, ref_argmax = naive_max_pool_forward(x, kh, kw, stride, padding)
    np.testing.assert_array_equal(to_numpy(out), ref_out)
    np.testing.assert_array_equal(to_numpy(argmax), ref_argmax)


def test_max_pool_nan_propagates_and_the_first_nan_wins(pool):
    forward, _, xp = pool
    x = np.array([[[[1.0, np.nan], [5.0, np.nan]]]], dtype=np.float64)
    out, argmax = forward(xp.asarray(x), 2, 2, (2, 2), (0, 0))
    assert np.isnan(to_numpy(out).item()) and to_numpy(argmax).item() == 1
    x[0, 0, 0, 0] = np.nan  # a NaN in the first position wins too
    out, argmax = forward(xp.asarray(x), 2, 2, (2, 2), (0, 0))
    assert np.isnan(to_numpy(out).item()) and to_numpy(argmax).item() == 0
    x = np.array([[[[9.0, 1.0], [np.nan, 3.0]]]], dtype=np.float32)  # a NaN after the largest number still wins
    out, argmax = forward(xp.asarray(x), 2, 2, (2, 2), (0, 0))
    assert np.isnan(to_numpy(out).item()) and to_numpy(argmax).item() == 2


# ----------------------------------------------------------------------------- dispatch and the Numba switch


def call_every_kernel(xp=np, dtype=np.float32):
    x = xp.asarray(np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(dtype))
    cols = K.im2col(x, 3, 3, 1, 1)
    dx = K.col2im(cols, x.shape, 3, 3, 1, 1)
    out, argmax = K.max_pool2d_forward(x, 2, 2, 2, 0)
    dx_pool = K.max_pool2d_backward(out, argmax, x.shape, 2, 2, 2, 0)
    return cols, dx, out, dx_pool


@pytest.fixture
def spies(monkeypatch):
    calls = spy_on(monkeypatch, "minigrad.kernels.im2col", ["im2col_numba", "im2col_generic"])
    calls += spy_on(monkeypatch, "minigrad.kernels.im2col", ["col2im_numba", "col2im_generic"])
    pool_names = [f"max_pool2d_{d}_{v}" for d in ("forward", "backward") for v in ("numba", "generic")]
    calls += spy_on(monkeypatch, "minigrad.kernels.pooling", pool_names)
    calls.clear()
    return calls


@needs_numba
def test_numpy_float_input_takes_the_numba_path(spies, monkeypatch):
    monkeypatch.delenv("MINIGRAD_DISABLE_NUMBA", raising=False)
    call_every_kernel()
    assert spies and all(name.endswith("_numba") for name in spies)


def test_force_generic_takes_the_generic_path(spies):
    with K.force_generic():
        call_every_kernel()
    assert spies and all(name.endswith("_generic") for name in spies)


def test_environment_variable_disables_numba(spies, monkeypatch):
    monkeypatch.setenv("MINIGRAD_DISABLE_NUMBA", "1")
    call_every_kernel()
    assert spies and all(name.endswith("_generic") for name in spies)


def test_device_arrays_take_the_generic_path(spies, xp):
    if xp is np:
        pytest.skip("NumPy arrays are not device arrays")
    call_every_kernel(xp)
    assert spies and all(name.endswith("_generic") for name in spies)


def test_float16_takes_the_generic_path_and_keeps_its_dtype(spies):
    cols, dx, out, dx_pool = call_every_kernel(dtype=np.float16)
    assert spies and all(name.endswith("_generic") for name in spies)
    assert {a.dtype for a in (cols, dx, out, dx_pool)} == {np.dtype(np.float16)}


@needs_numba
def test_numba_versions_refuse_other_dtypes_without_breaking_numba():
    with pytest.raises(TypeError, match="float32 or float64"):
        K.im2col_numba(np.zeros((1, 1, 3, 3), np.float16), 2, 2)
    assert K.numba_available()


@needs_numba
def test_a_failing_kernel_warns_once_and_falls_back_for_good(monkeypatch):
    break_numba_kernel(monkeypatch, "im2col", "im2col_kernel")
    x = np.random.default_rng(5).standard_normal((1, 2, 5, 5))
    with pytest.warns(RuntimeWarning, match="Numba is unavailable.*pretend the JIT failed"):
        cols = K.im2col(x, 3, 3, 2, 1)  # stride 2: the general kernel (stride 1 may take the shifted-copy one)
    np.testing.assert_array_equal(cols, naive_im2col(x, 3, 3, (2, 2), (1, 1)))
    assert not K.numba_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail the test
        call_every_kernel()
    with pytest.raises(K.NumbaUnavailable):
        K.col2im_numba(cols, x.shape, 3, 3, 2, 1)


def test_kernels_work_without_numba_installed():
    """A fresh interpreter where `import numba` fails: one RuntimeWarning, then correct generic results."""
    script = """
import sys, warnings
sys.modules["numba"] = None  # makes `import numba` raise ImportError
import numpy as np
from minigrad import kernels as K
assert not K.numba_available()
x = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cols = K.im2col(x, 3, 3, 1, 1)
    dx = K.col2im(cols, x.shape, 3, 3, 1, 1)
    out, argmax = K.max_pool2d_forward(x, 3, 3, 2, 1)
    K.max_pool2d_backward(out, argmax, x.shape, 3, 3, 2, 1)
assert [w.category for w in caught] == [RuntimeWarning], caught
assert "Numba is unavailable" in str(caught[0].message)
assert cols.shape == (3, 3, 3, 2, 5, 5) and out.shape == (2, 3, 3, 3)
print("ok")
"""
    root = Path(K.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("MINIGRAD_DISABLE_NUMBA", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------- argument checks


def test_int_stride_and_padding_mean_both_axes():
    x = np.random.default_rng(6).standard_normal((1, 2, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(K.im2col(x, 3, 3, 2, 1), K.im2col(x, 3, 3, (2, 2), (1, 1)))
    assert K.output_size(227, 11, 4, 0) == 55


def test_pool_stride_defaults_to_the_kernel_size():
    x = np.random.default_rng(7).standard_normal((1, 2, 6, 6)).astype(np.float32)
    out, _ = K.max_pool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(out, x.reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5)))


@pytest.mark.parametrize("im2col", [K.im2col_generic, pytest.param(K.im2col_numba, marks=needs_numba)])
def test_a_kernel_larger_than_the_padded_input_is_an_error(im2col):
    with pytest.raises(ValueError, match="does not fit"):
        im2col(np.zeros((1, 1, 4, 4), np.float32), 7, 7, 1, 1)


@pytest.mark.parametrize("col2im", [K.col2im_generic, pytest.param(K.col2im_numba, marks=needs_numba)])
def test_col2im_checks_the_cols_shape(col2im):
    with pytest.raises(ValueError, match="expected"):
        col2im(np.zeros((1, 1, 3, 3, 4, 4), np.float32), (1, 1, 5, 5), 3, 3, 1, 0)


def run_script(script: str, drop: tuple[str, ...] = ()) -> str:
    """The last line a fresh interpreter prints when it runs `script` from this checkout, with the
    environment variables in `drop` removed."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    for name in drop:
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("numpy_first", [False, True])
def test_importing_minigrad_leaves_the_environment_unchanged(numpy_first):
    script = "import json, os\nbefore = dict(os.environ)\n" + ("import numpy\n" if numpy_first else "")
    script += "import minigrad, minigrad.functional, minigrad.nn, minigrad.optim\n"
    script += "after = dict(os.environ)\nprint(json.dumps(sorted(k for k in before.keys() | after.keys() "
    script += "if before.get(k) != after.get(k))))"
    assert json.loads(run_script(script)) == []


IDLE_CPU_SCRIPT = """
import json, os, statistics, sys, threading, time
import numpy as np  # first, as in a learner's notebook: OpenBLAS starts with its own idle-thread timeout
import threadpoolctl

blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
if len(blas) != 1 or (blas[0]["internal_api"], blas[0].get("threading_layer")) != ("openblas", "pthreads") or (
    blas[0]["num_threads"] < 2 or not os.path.isdir("/proc/self/task")
):
    print(json.dumps({"skip": f"needs one multi-threaded OpenBLAS (pthreads) on Linux to watch, found {blas}"}))
    sys.exit()

import minigrad as mg
from minigrad import functional as F

rng = np.random.default_rng(0)
def leaf(*shape):
    return mg.tensor(rng.standard_normal(shape, dtype=np.float32), requires_grad=True)

chunk_x, chunk_w = leaf(4, 32, 27, 27), leaf(64, 16, 5, 5)
image_x, image_w = leaf(2, 3, 103, 103), leaf(96, 3, 11, 11)  # 47x47 output planes: image by image
fc_x, fc_w, fc_b = leaf(32, 1024), leaf(1024, 1024), leaf(1024)
m_a, m_b = leaf(256, 256), leaf(256, 256)
square = rng.standard_normal((512, 512), dtype=np.float32)
ops = {
    "conv2d by chunks": lambda: F.conv2d(chunk_x, chunk_w, padding=2, groups=2).sum().backward(),
    "conv2d by images": lambda: F.conv2d(image_x, image_w, stride=2).sum().backward(),
    "linear": lambda: F.linear(fc_x, fc_w, fc_b).sum().backward(),
    "matmul": lambda: F.matmul(m_a, m_b).sum().backward(),
    "numpy matmul": lambda: square @ square,  # the control: OpenBLAS's own threads, which spin after it
}

def blas_threads_cpu_ms():  # CPU time so far of the threads Python did not start: OpenBLAS's workers
    python_threads = {thread.native_id for thread in threading.enumerate()}
    ticks = 0
    for task in os.listdir("/proc/self/task"):
        if int(task) not in python_threads:
            with open(f"/proc/self/task/{task}/stat") as stat:
                ticks += sum(int(v) for v in stat.read().rsplit(")", 1)[1].split()[11:13])  # utime, stime
    return 1e3 * ticks / os.sysconf("SC_CLK_TCK")

def cpu_ms(op):  # (the process's CPU time in 100 ms of sleep after op, OpenBLAS's workers' in op and sleep)
    op()
    time.sleep(0.3)  # whatever spun after the first call (compiling, warming up) sleeps by now
    workers = blas_threads_cpu_ms()
    op()
    start = time.process_time()  # every thread of this process: the main one sleeps, spinning ones count
    time.sleep(0.1)
    return 1e3 * (time.process_time() - start), blas_threads_cpu_ms() - workers

times = {name: [] for name in ops}
for _ in range(3):
    for name, op in ops.items():
        times[name].append(cpu_ms(op))
print(json.dumps({name: [statistics.median(ms) for ms in zip(*pairs)] for name, pairs in times.items()}))
"""


@needs_numba
def test_cpu_ops_leave_the_blas_threads_asleep_even_with_numpy_imported_first():
    """A conv2d, linear or matmul forward + backward on NumPy arrays never wakes OpenBLAS's worker threads: they
    use (almost) no CPU during the op, and the process uses (almost) none while its main thread sleeps right
    after it (no thread of OpenBLAS's, or of an OpenMP runtime's, is left spinning), without any environment
    variable set. A plain NumPy product in the same process shows what waking and spinning look like: the
    control, which makes the check independent of how busy the machine is."""
    drop = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    result = json.loads(run_script(IDLE_CPU_SCRIPT, drop))
    if "skip" in result:
        pytest.skip(result["skip"])
    asleep, workers = result.pop("numpy matmul")
    if asleep < 5.0:
        pytest.skip(f"a plain NumPy product left only {asleep:.1f} ms of spinning in 100 ms: nothing to compare")
    for op, (op_asleep, op_workers) in result.items():
        assert op_asleep < asleep / 5, f"{op}: {op_asleep:.1f} ms of CPU in 100 ms of sleep (control {asleep:.1f})"
        assert op_workers <= workers / 5, f"{op}: OpenBLAS's threads ran {op_workers:.1f} ms (control {workers:.1f})"


KEEP_FREED_SCRIPT = """
import resource, sys
import minigrad
import numpy as np
applied = minigrad.keep_freed_memory()
faults = []
for _ in range(4):  # allocate and fill 128 MB four times, as a training step does with its large arrays
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.empty(32 * 2**20, np.float32)
    a[...] = 1.0
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, max(faults[1:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory only changes glibc's malloc")
@pytest.mark.parametrize("user_setting", [None, "MALLOC_TRIM_THRESHOLD_"])
def test_keep_freed_memory_reuses_large_arrays_unless_the_user_set_malloc(user_setting):
    """Kept, a freed 128 MB array is reused without page faults; a malloc variable of the user's wins."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    if user_setting is not None:
        env[user_setting] = "131072"  # glibc's own default
    script = [sys.executable, "-c", KEEP_FREED_SCRIPT]
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    applied, faults = result.stdout.split()
    if user_setting is None:
        assert applied == "True"
        # fresh memory faults once per page: 32,768 pages of 4 KB, or 64 transparent huge pages of 2 MB
        assert int(faults) < 16
    else:
        assert applied == "False"
