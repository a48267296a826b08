"""Local response normalisation on the GPU: one thread per element, each summing its own channel window.

The formulas are those of `minigrad.kernels.lrn` (read its docstring first):

    s_i  = k + alpha * sum_{j in window(i)} x_j^2                    window(i) = [i - before, i + after]
    y_i  = x_i * s_i^(-beta)
    dx_i = g_i s_i^(-beta) - 2 alpha beta x_i * sum_{j in mirrored(i)} g_j x_j s_j^(-beta - 1)
                                                                     mirrored(i) = [i - after, i + before]

The thread of element (n, i, p) adds up its own window from scratch: `size` reads per output, no running
sum, so nothing drifts after a large value leaves a window, and there is no order between threads to keep.
Sums run in float32 for float16 and float32 data, in float64 for float64 data. The backward thread
recomputes s_j^beta for each j of its window instead of reading a stored copy: the GPU has arithmetic to
spare and memory traffic is what costs here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minigrad.backend import get_array_module

from ._common import (
    check_floating,
    check_shape,
    contiguous,
    device_function,
    element_of_thread3,
    kernel,
    launch,
)

# How s ** beta is computed (the same cases as the CPU kernels): square roots where they are exact enough
BETA_POW, BETA_075, BETA_05, BETA_1 = 0, 1, 2, 3


def beta_mode(beta: float) -> int:
    """The cheapest way to compute s ** beta for this beta (one of the BETA_* codes)."""
    return {0.75: BETA_075, 0.5: BETA_05, 1.0: BETA_1}.get(float(beta), BETA_POW)


@device_function
def _power(s, beta, mode):  # pragma: no cover (compiled)
    """s ** beta for s > 0."""
    if mode == BETA_075:
        r = math.sqrt(s)
        return r * math.sqrt(r)  # s^0.75 = s^0.5 * s^0.25
    if mode == BETA_05:
        return math.sqrt(s)
    if mode == BETA_1:
        return s
    return s**beta


@kernel
def lrn_forward_kernel(x, y, scale, before, after, alpha, k, beta, mode, zero):  # pragma: no cover (compiled)
    """x (N, C, P) -> y, scale (N, C, P); one thread per element. `zero` has the sums' dtype."""
    n, i, p = element_of_thread3(x.shape)
    if n >= x.shape[0]:
        return
    total = zero
    for j in range(max(0, i - before), min(x.shape[1], i + after + 1)):
        v = zero + x[n, j, p]  # widened before squaring: a float16 square overflows above 256
        total += v * v
    scale[n, i, p] = k + alpha * total
    s = zero + scale[n, i, p]  # as stored, rounded to x's dtype: the backward pass reads this value
    y[n, i, p] = x[n, i, p] / _power(s, beta, mode)


@kernel
def lrn_backward_kernel(grad, x, scale, dx, before, after, coef, beta, mode, zero):  # pragma: no cover (compiled)
    """dx_i = g_i / s_i^beta - coef * x_i * sum_{j = i - after}^{i + before} g_j x_j / s_j^(beta + 1)."""
    n, i, p = element_of_thread3(x.shape)
    if n >= x.shape[0]:
        return
    total = zero
    for j in range(max(0, i - after), min(x.shape[1], i + before + 1)):
        s = zero + scale[n, j, p]
        total += (zero + grad[n, j, p]) * x[n, j, p] / (s * _power(s, beta, mode))
    s = zero + scale[n, i, p]
    dx[n, i, p] = grad[n, i, p] / _power(s, beta, mode) - coef * x[n, i, p] * total


def _window(size: int) -> tuple[int, int]:
    """(before, after): channel i's window is [i - before, i + after], as in the CPU kernels."""
    return size // 2, (size - 1) // 2


def _check(x: Any, size: int) -> None:
    check_floating("local response normalisation input", x)
    if x.ndim < 2:
        raise ValueError(f"local response normalisation expects x of shape (N, C, ...), got shape {tuple(x.shape)}")
    if size < 1:
        raise ValueError(f"local response normalisation: size must be >= 1, got {size}")


def _as_ncp(a: Any) -> Any:
    """(N, C, ...) -> (N, C, P), P the product of the remaining axes (1 for a 2-D input)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _sum_zero(dtype: np.dtype) -> np.floating:
    """The sums' starting value: float64 for float64 data, float32 otherwise."""
    return np.float64(0) if dtype == np.float64 else np.float32(0)


def lrn_forward_gpu(x: Any, size: int, alpha: float, beta: float, k: float) -> tuple[Any, Any]:
    """LRN forward as one GPU kernel: x (N, C, ...) -> (y, scale), both of x's shape and dtype.

    The twin of `lrn_forward_generic`; `alpha` is used as given (divide it by `size` for Caffe's convention).
    """
    _check(x, size)
    before, after = _window(size)
    xp = get_array_module(x)
    x = contiguous(x)
    y = xp.empty(x.shape, dtype=x.dtype)
    scale = xp.empty(x.shape, dtype=x.dtype)
    zero = _sum_zero(x.dtype)
    args = (before, after, zero.dtype.type(alpha), zero.dtype.type(k), zero.dtype.type(beta), beta_mode(beta), zero)
    launch(lrn_forward_kernel, x.size, _as_ncp(x), _as_ncp(y), _as_ncp(scale), *args)
    return y, scale


def lrn_backward_gpu(grad: Any, x: Any, scale: Any, size: int, alpha: float, beta: float) -> Any:
    """LRN backward as one GPU kernel: (dL/dy, x, scale from the forward pass) -> dL/dx, x's shape and dtype.

    The twin of `lrn_backward_generic` (k is inside `scale`).
    """
    _check(x, size)
    check_shape("grad", grad, x.shape)
    check_shape("scale", scale, x.shape)
    before, after = _window(size)
    xp = get_array_module(x)
    if grad.dtype != x.dtype or scale.dtype != x.dtype:
        raise TypeError(f"grad ({grad.dtype}) and scale ({scale.dtype}) must have x's dtype ({x.dtype})")
    x, grad, scale = contiguous(x), contiguous(grad), contiguous(scale)
    dx = xp.empty(x.shape, dtype=x.dtype)
    zero = _sum_zero(x.dtype)
    args = (before, after, zero.dtype.type(2 * alpha * beta), zero.dtype.type(beta), beta_mode(beta), zero)
    launch(lrn_backward_kernel, x.size, _as_ncp(grad), _as_ncp(x), _as_ncp(scale), _as_ncp(dx), *args)
    return dx
