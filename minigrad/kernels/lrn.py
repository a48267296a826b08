"""Local response normalisation across channels (Krizhevsky et al. 2012, Sec. 3.3): forward and backward.

For x of shape (N, C, ...) and a window of `size` channels, channel i sees [i - before, i + after] clipped to
[0, C - 1], with before = size // 2 and after = (size - 1) // 2 (symmetric for odd sizes; for even sizes one
more channel before, as in PyTorch and Caffe). Then

    s_i = k + alpha * sum_{j in window(i)} x_j^2          ("scale")
    y_i = x_i * s_i^(-beta)

`alpha` here is the coefficient actually used (the paper's alpha, or alpha / size for the Caffe convention:
the caller decides). The gradient, with g = dL/dy, is

    dx_i = g_i s_i^(-beta) - 2 alpha beta x_i * sum_{j : i in window(j)} g_j x_j s_j^(-beta - 1)

and {j : i in window(j)} = [i - after, i + before] is the mirrored window (before and after swapped).

What the forward pass hands to the backward pass: `scale` only (plus x, which the graph keeps anyway).
s^(-beta) is recomputed in the backward pass, where it costs two square roots for the paper's beta = 0.75:
cheaper than writing a second full-size array in the forward pass and reading it back, and it halves what
the graph holds between the two passes.

Each function comes in two versions with the same results (up to round-off); read the generic one first:
- `*_generic`: xp calls only (NumPy, CuPy): each window sum is read through a strided view of the
  zero-padded channels and added up in one `sum` (size additions per element, one pass over memory, no
  copies), at the price of a few full-size temporaries for the elementwise steps.
- `*_numba`: a fused CPU loop, split over the cores, (NumPy float32/float64): one pass over the data computes the window
  sums (a running sum over the channels: add the entering channel, subtract the leaving one), s, s^beta and
  y; the backward pass is one fused pass as well. O(N*C*H*W) whatever the window size, no full-size
  temporaries. The running sums are compensated float64 sums, so they do not drift (see the kernels below).
`lrn_forward` and `lrn_backward` pick the Numba version for NumPy float arrays when Numba is usable.

In the Numba version an inf or NaN in x makes the outputs NaN from the first window that holds it to the last
channel at that position (a running sum never forgets it), not only in the windows that hold it; the generic
version keeps it to those windows. Training has diverged by then anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from .dispatch import check_dtype, cpu_helper, cpu_kernel, fastest, run

# Positions per Numba task: a block of every channel row stays in the L1/L2 cache while the channels are walked,
# and images x blocks give the cores enough tasks even for a batch of one.
_BLOCK = 1024

# How the kernels raise s to the power beta: pow is slow, square roots are fast (and exact to round-off).
LRN_BETA_POW, LRN_BETA_075, LRN_BETA_05, LRN_BETA_1 = 0, 1, 2, 3


def lrn_beta_mode(beta: float) -> int:
    """The cheapest exact way to compute s ** beta for this beta (one of the LRN_BETA_* codes)."""
    return {0.75: LRN_BETA_075, 0.5: LRN_BETA_05, 1.0: LRN_BETA_1}.get(float(beta), LRN_BETA_POW)


def _window(size: int) -> tuple[int, int]:
    """(before, after): channel i's window is [i - before, i + after]."""
    return size // 2, (size - 1) // 2


def _check_args(x: Any, size: int) -> None:
    if x.ndim < 2:
        raise ValueError(f"local response normalisation expects x of shape (N, C, ...), got shape {tuple(x.shape)}")
    if size < 1:
        raise ValueError(f"local response normalisation: size must be >= 1, got {size}")


def _check_like(name: str, a: Any, x: Any) -> None:
    if tuple(a.shape) != tuple(x.shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected x's shape {tuple(x.shape)}")


def _as_ncp(a: Any) -> Any:
    """(N, C, ...) -> (N, C, P), P the product of the remaining axes (1 for a 2-D input)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _tasks(x: np.ndarray) -> int:
    """How many tasks the Numba kernels split x (N, C, ...) into: one per image and block of _BLOCK positions."""
    n, _, p = _as_ncp(x).shape
    return n * -(-p // _BLOCK)


# ----------------------------------------------------------------------------- generic (any xp)


def _channel_padded(like: Any, before: int, after: int) -> tuple[Any, Any]:
    """A zeroed (N, C + before + after, P) buffer for `like` (N, C, P) and the view of its C real channels.

    The caller writes the values to be window-summed straight into the view (saving a temporary and a copy).
    """
    xp = get_array_module(like)
    n, c, p = like.shape
    padded = xp.zeros((n, c + before + after, p), dtype=like.dtype)
    return padded, padded[:, before : before + c]


def _channel_window_sum(padded: Any, c: int, size: int) -> Any:
    """s[:, i] = padded[:, i] + ... + padded[:, i + size - 1] for i < c: padded (N, c + size - 1, P) -> (N, c, P).

    With `before` zero channels in front (`_channel_padded`), s[:, i] is the sum over the channel window
    [i - before, i + after], clipped to the real channels. A strided view (N, c, size, P) shows every window
    without copying anything, and one `sum` over its window axis adds each window's `size` entries: size
    additions per element, but a single pass over memory in one array operation (one GPU kernel), and each
    sum only ever holds its own window's entries, so nothing drifts after a large channel as in a running or
    cumulative sum. (A cumulative sum over the channels, O(N*C*P), is slower on NumPy and a multi-pass
    scan on CuPy: see benchmarks/README.md.)
    """
    xp = get_array_module(padded)
    n, _, p = padded.shape
    s_n, s_c, s_p = padded.strides
    windows = xp.lib.stride_tricks.as_strided(padded, shape=(n, c, size, p), strides=(s_n, s_c, s_c, s_p))
    return windows.sum(axis=2)


def _power(scale: Any, beta: float) -> Any:
    """scale ** beta; square roots instead of pow where they give the same result (much faster)."""
    xp = get_array_module(scale)
    mode = lrn_beta_mode(beta)
    if mode == LRN_BETA_075:
        root = xp.sqrt(scale)
        return root * xp.sqrt(root)
    if mode == LRN_BETA_05:
        return xp.sqrt(scale)
    if mode == LRN_BETA_1:
        return scale
    return scale ** scale.dtype.type(beta)


def lrn_forward_generic(x: Any, size: int, alpha: float, beta: float, k: float) -> tuple[Any, Any]:
    """LRN forward with xp calls only: x (N, C, ...) -> (y, scale), both of x's shape and dtype."""
    _check_args(x, size)
    before, after = _window(size)
    x3 = _as_ncp(x)
    xp = get_array_module(x3)
    padded, squares = _channel_padded(x3, before, after)
    xp.multiply(x3, x3, out=squares)
    scale = _channel_window_sum(padded, x3.shape[1], size)
    scale *= x.dtype.type(alpha)
    scale += x.dtype.type(k)
    y = x3 / _power(scale, beta)
    return y.reshape(x.shape), scale.reshape(x.shape)


def lrn_backward_generic(grad: Any, x: Any, scale: Any, size: int, alpha: float, beta: float) -> Any:
    """LRN backward with xp calls only: (dL/dy, x, scale from the forward pass) -> dL/dx, x's shape."""
    _check_args(x, size)
    _check_like("grad", grad, x)
    _check_like("scale", scale, x)
    before, after = _window(size)
    g3, x3, s3 = _as_ncp(grad), _as_ncp(x), _as_ncp(scale)
    xp = get_array_module(g3)
    den = _power(s3, beta)  # s^beta
    padded, t = _channel_padded(g3, after, before)  # the mirrored window
    xp.multiply(g3, x3, out=t)
    t /= s3 * den  # g_j x_j s_j^(-beta - 1)
    back = _channel_window_sum(padded, g3.shape[1], size)
    back *= x3
    back *= x.dtype.type(2 * alpha * beta)
    dx = g3 / den
    dx -= back
    return dx.reshape(x.shape)


# ----------------------------------------------------------------------------- Numba (NumPy on the CPU)


def lrn_forward_numba(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    """LRN forward as one fused loop on all cores (NumPy float32/float64): x (N, C, ...) -> (y, scale).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    _check_args(x, size)
    check_dtype(x)
    before, after = _window(size)
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=x.dtype)
    scale = np.empty(x.shape, dtype=x.dtype)
    run(
        lrn_forward_kernel,
        _as_ncp(x),
        _as_ncp(y),
        _as_ncp(scale),
        before,
        after,
        _BLOCK,
        float(alpha),
        float(k),
        x.dtype.type(beta),
        lrn_beta_mode(beta),
        over=_tasks(x),
    )
    return y, scale


def lrn_backward_numba(
    grad: np.ndarray, x: np.ndarray, scale: np.ndarray, size: int, alpha: float, beta: float
) -> np.ndarray:
    """LRN backward as one fused loop on all cores: (dL/dy, x, scale from the forward pass) -> dL/dx.

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    _check_args(x, size)
    _check_like("grad", grad, x)
    _check_like("scale", scale, x)
    check_dtype(x)
    before, after = _window(size)
    x = np.ascontiguousarray(x)
    grad = np.ascontiguousarray(grad, dtype=x.dtype)  # one compiled signature per dtype
    scale = np.ascontiguousarray(scale, dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    run(
        lrn_backward_kernel,
        _as_ncp(grad),
        _as_ncp(x),
        _as_ncp(scale),
        _as_ncp(dx),
        before,
        after,
        _BLOCK,
        float(2 * alpha * beta),
        x.dtype.type(beta),
        lrn_beta_mode(beta),
        over=_tasks(x),
    )
    return dx


# Arrays are (N, C, P) and C-contiguous: P = H*W (or L), so one channel of one image is a contiguous row.
# A task is one image and one block of positions [p0, p1); it walks the channels in order and keeps, per
# position, a running window sum: add the channel that enters the window, subtract the one that leaves.
# That is O(N*C*P) whatever the window size, and every inner loop has unit stride.
#
# A plain running sum drifts: once a large value has left the window, the rounding error of adding it
# stays behind (about 1e-7 of it in float32, 1e-16 in float64) and swamps a small window that follows.
# So the sum is kept in float64 as two numbers, hi + lo, where lo collects the exact rounding error of
# every addition (Knuth's TwoSum, exact in IEEE arithmetic without fastmath): the result is about as accurate
# as summing each window from scratch, for float32 and float64 data alike (tests/test_kernels_lrn.py checks it).


@cpu_helper
def _lrn_power(s, den, beta, mode):  # pragma: no cover (compiled)
    """den[q] = s[q] ** beta for a row of positive s; one loop per mode, so each one vectorises."""
    if mode == LRN_BETA_075:
        for q in range(s.shape[0]):
            r = np.sqrt(s[q])
            den[q] = r * np.sqrt(r)  # s^0.75 = s^0.5 * s^0.25
    elif mode == LRN_BETA_05:
        for q in range(s.shape[0]):
            den[q] = np.sqrt(s[q])
    elif mode == LRN_BETA_1:
        for q in range(s.shape[0]):
            den[q] = s[q]
    else:
        for q in range(s.shape[0]):
            den[q] = s[q] ** beta


@cpu_helper
def _window_add(hi, lo, row, sign, square):  # pragma: no cover (compiled)
    """(hi + lo) += sign * row (or sign * row**2 when `square`), without losing the rounding error.

    TwoSum: t = a + v rounds, but (a - (t - b)) + (v - b) with b = t - a is exactly what was lost.
    """
    for q in range(hi.shape[0]):
        v = np.float64(row[q])
        if square:
            v = v * v  # exact for float32 data
        v = sign * v
        a = hi[q]
        t = a + v
        b = t - a
        lo[q] += (a - (t - b)) + (v - b)
        hi[q] = t


@cpu_helper
def _task_block(task, block, n_pos):  # pragma: no cover (compiled)
    """(image n, first position p0, end p1) of a task: task = image * blocks + block of `block` positions."""
    n_blocks = (n_pos + block - 1) // block
    p0 = (task % n_blocks) * block
    return task // n_blocks, p0, min(p0 + block, n_pos)


@cpu_kernel("local_response_norm")
def lrn_forward_kernel(x, y, scale, before, after, block, alpha, k, beta, mode, start, stop):  # pragma: no cover
    """x (N, C, P) -> y and scale (N, C, P): scale = k + alpha * window sum of x^2, y = x / scale^beta.

    The window of channel i is [i - before, i + after] clipped to the channels. `beta` has x's dtype.
    Tasks start .. stop-1 (task = image * blocks + block of positions).
    """
    n_ch = x.shape[1]
    for task in range(start, stop):
        n, p0, p1 = _task_block(task, block, x.shape[2])
        m = p1 - p0
        hi, lo = np.zeros(m, np.float64), np.zeros(m, np.float64)
        den = np.empty(m, x.dtype)
        for j in range(n_ch + after):  # j: the channel entering the window of i = j - after
            if j < n_ch:
                _window_add(hi, lo, x[n, j, p0:p1], 1.0, True)
            i = j - after
            if i < 0:
                continue
            if i - before - 1 >= 0:  # leaves the window of i
                _window_add(hi, lo, x[n, i - before - 1, p0:p1], -1.0, True)
            s_row = scale[n, i, p0:p1]
            for q in range(m):
                s_row[q] = k + alpha * (hi[q] + lo[q])  # rounded once, to x's dtype
            _lrn_power(s_row, den, beta, mode)
            x_row, y_row = x[n, i, p0:p1], y[n, i, p0:p1]
            for q in range(m):
                y_row[q] = x_row[q] / den[q]


@cpu_kernel("local_response_norm")
def lrn_backward_kernel(grad, x, scale, dx, before, after, block, coef, beta, mode, start, stop):  # pragma: no cover
    """dx_i = g_i / s_i^beta - coef * x_i * sum_{j = i - after}^{i + before} g_j x_j / s_j^(beta + 1).

    All arrays (N, C, P). coef = 2 * alpha * beta. The sum runs over the mirrored window (the channels j
    whose window contains i) and is kept as a running sum like the forward pass. Each channel's term
    t_j and denominator s_j^beta are computed once, when j enters, and parked in two small ring buffers
    of size + 1 rows: t_j is subtracted again when j leaves, s_j^beta is used when channel j is output.
    Tasks start .. stop-1, as in the forward kernel.
    """
    n_ch = x.shape[1]
    n_ring = before + after + 2
    for task in range(start, stop):
        n, p0, p1 = _task_block(task, block, x.shape[2])
        m = p1 - p0
        hi, lo = np.zeros(m, np.float64), np.zeros(m, np.float64)
        ring_t = np.empty((n_ring, m), x.dtype)
        ring_den = np.empty((n_ring, m), x.dtype)
        for j in range(n_ch + before):  # j: the channel entering the mirrored window of i = j - before
            if j < n_ch:
                s_row, g_row, x_row = scale[n, j, p0:p1], grad[n, j, p0:p1], x[n, j, p0:p1]
                den, t = ring_den[j % n_ring], ring_t[j % n_ring]
                _lrn_power(s_row, den, beta, mode)
                for q in range(m):
                    t[q] = g_row[q] * x_row[q] / (s_row[q] * den[q])
                _window_add(hi, lo, t, 1.0, False)
            i = j - before
            if i < 0:
                continue
            if i - after - 1 >= 0:  # leaves the mirrored window of i
                _window_add(hi, lo, ring_t[(i - after - 1) % n_ring], -1.0, False)
            den = ring_den[i % n_ring]
            g_row, x_row, dx_row = grad[n, i, p0:p1], x[n, i, p0:p1], dx[n, i, p0:p1]
            for q in range(m):
                dx_row[q] = g_row[q] / den[q] - coef * x_row[q] * (hi[q] + lo[q])


# ----------------------------------------------------------------------------- dispatch


def lrn_forward(x: Any, size: int, alpha: float, beta: float, k: float) -> tuple[Any, Any]:
    """Local response normalisation across channels: x (N, C, ...) -> (y, scale), both of x's shape and dtype.

    scale = k + alpha * (sum of x^2 over the window of `size` channels), y = x * scale^(-beta); keep `scale`
    for `lrn_backward`. `alpha` is used as given (divide it by `size` yourself for the Caffe convention).
    NumPy float32/float64 input uses the Numba kernel when Numba is usable, CuPy input the GPU kernel when
    numba.cuda runs on the GPU (`dispatch.fastest`); anything else the generic one.
    """
    return fastest(lrn_forward_numba, lrn_forward_generic, x, size, alpha, beta, k, arrays=(x,), gpu="lrn_forward_gpu")


def lrn_backward(grad: Any, x: Any, scale: Any, size: int, alpha: float, beta: float) -> Any:
    """Gradient of `lrn_forward`: (dL/dy, x, scale returned by the forward pass) -> dL/dx, x's shape and dtype.

    No `k`: it is already inside `scale`.
    """
    return fastest(
        lrn_backward_numba,
        lrn_backward_generic,
        *(grad, x, scale, size, alpha, beta),
        arrays=(grad, x, scale),
        gpu="lrn_backward_gpu",
    )
