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

Each function comes in two versions with the same results (up to round-off):
- `*_numba`: a fused, parallel CPU loop (NumPy float32/float64): one pass over the data computes the window
  sums (a running sum over the channels: add the entering channel, subtract the leaving one), s, s^beta and
  y; the backward pass is one fused pass as well. O(N*C*H*W) whatever the window size, no full-size
  temporaries. The running sums are compensated float64 sums, so they do not drift (see `_numba.py`).
- `*_generic`: xp calls only (NumPy, CuPy): each window sum is read through a strided view of the
  zero-padded channels and added up in one `sum` (size additions per element, one pass over memory, no
  copies), at the price of a few full-size temporaries for the elementwise steps.
`lrn_forward` and `lrn_backward` pick the Numba version for NumPy float arrays when Numba is usable.

In the Numba version an inf or NaN in x makes the outputs NaN from the first window that holds it to the last
channel at that position (a running sum never forgets it), not only in the windows that hold it; the generic
version keeps it to those windows. Training has diverged by then anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from . import _numba

# Positions per Numba task: a block of every channel row stays in the L1/L2 cache while the channels are walked,
# and images x blocks give the threads enough tasks even for a batch of one.
_BLOCK = 1024


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
    cumulative sum. (A cumulative sum over the channels, O(N*C*P), was 2.6x slower on NumPy and is a
    multi-pass scan on CuPy.)
    """
    xp = get_array_module(padded)
    n, _, p = padded.shape
    s_n, s_c, s_p = padded.strides
    windows = xp.lib.stride_tricks.as_strided(padded, shape=(n, c, size, p), strides=(s_n, s_c, s_c, s_p))
    return windows.sum(axis=2)


def _power(scale: Any, beta: float) -> Any:
    """scale ** beta; square roots instead of pow where they give the same result (much faster)."""
    xp = get_array_module(scale)
    mode = _numba.lrn_beta_mode(beta)
    if mode == _numba.LRN_BETA_075:
        root = xp.sqrt(scale)
        return root * xp.sqrt(root)
    if mode == _numba.LRN_BETA_05:
        return xp.sqrt(scale)
    if mode == _numba.LRN_BETA_1:
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


def lrn_backward_generic(
    grad: Any, x: Any, scale: Any, size: int, alpha: float, beta: float, k: float | None = None
) -> Any:
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
    """LRN forward as one fused, parallel loop (NumPy float32/float64): x (N, C, ...) -> (y, scale).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    _check_args(x, size)
    _numba.check_dtype(x)
    before, after = _window(size)
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=x.dtype)
    scale = np.empty(x.shape, dtype=x.dtype)
    _numba.run(
        _numba.lrn_forward_kernel,
        _as_ncp(x),
        _as_ncp(y),
        _as_ncp(scale),
        before,
        after,
        _BLOCK,
        float(alpha),
        float(k),
        x.dtype.type(beta),
        _numba.lrn_beta_mode(beta),
    )
    return y, scale


def lrn_backward_numba(
    grad: np.ndarray, x: np.ndarray, scale: np.ndarray, size: int, alpha: float, beta: float, k: float | None = None
) -> np.ndarray:
    """LRN backward as one fused, parallel loop: (dL/dy, x, scale from the forward pass) -> dL/dx.

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    _check_args(x, size)
    _check_like("grad", grad, x)
    _check_like("scale", scale, x)
    _numba.check_dtype(x)
    before, after = _window(size)
    x = np.ascontiguousarray(x)
    grad = np.ascontiguousarray(grad, dtype=x.dtype)  # one compiled signature per dtype
    scale = np.ascontiguousarray(scale, dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    _numba.run(
        _numba.lrn_backward_kernel,
        _as_ncp(grad),
        _as_ncp(x),
        _as_ncp(scale),
        _as_ncp(dx),
        before,
        after,
        _BLOCK,
        float(2 * alpha * beta),
        x.dtype.type(beta),
        _numba.lrn_beta_mode(beta),
    )
    return dx


# ----------------------------------------------------------------------------- dispatch


def lrn_forward(x: Any, size: int, alpha: float, beta: float, k: float) -> tuple[Any, Any]:
    """Local response normalisation across channels: x (N, C, ...) -> (y, scale), both of x's shape and dtype.

    scale = k + alpha * (sum of x^2 over the window of `size` channels), y = x * scale^(-beta); keep `scale`
    for `lrn_backward`. `alpha` is used as given (divide it by `size` yourself for the Caffe convention).
    NumPy float32/float64 input uses the Numba kernel when Numba is usable; anything else the generic one.
    """
    if _numba.use_numba_for(x):
        try:
            return lrn_forward_numba(x, size, alpha, beta, k)
        except _numba.NumbaUnavailable:
            pass  # already warned once; the generic version gives the same answer
    return lrn_forward_generic(x, size, alpha, beta, k)


def lrn_backward(grad: Any, x: Any, scale: Any, size: int, alpha: float, beta: float, k: float | None = None) -> Any:
    """Gradient of `lrn_forward`: (dL/dy, x, scale returned by the forward pass) -> dL/dx, x's shape and dtype.

    `k` is accepted for symmetry with `lrn_forward` but not needed: it is already inside `scale`.
    """
    if _numba.use_numba_for(grad, x, scale):
        try:
            return lrn_backward_numba(grad, x, scale, size, alpha, beta, k)
        except _numba.NumbaUnavailable:
            pass
    return lrn_backward_generic(grad, x, scale, size, alpha, beta, k)
