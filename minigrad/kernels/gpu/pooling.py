"""Max pooling on the GPU: forward with one thread per output, backward with one thread per input pixel.

Same results as `minigrad.kernels.max_pool2d_forward_generic` / `..._backward_generic`, bit for bit, with the
same rules: padding never wins; the FIRST maximum in row-major window order wins ties; the first NaN in a
window beats every number; a window whose real values are all -inf names its first real position; a window
of padding only outputs -inf with argmax 0, and its gradient is dropped.

The backward pass is a gather: the thread of input pixel (h, w) visits the few windows that contain it,
in the generic version's order of kernel offsets, and adds the gradient of those whose winner it is. Each
thread writes only its own pixel: no atomics, the same bits on every run. (The generic version needs a
(KH*KW, N, C, OH, OW) temporary and KH*KW read-modify-write passes over the input gradient.)
"""

from __future__ import annotations

import math
from typing import Any

from minigrad.backend import get_array_module
from minigrad.kernels import ARGMAX_DTYPE
from minigrad.kernels.shapes import Shape4

from ._common import (
    check_floating,
    check_shape,
    contiguous,
    element_of_thread4,
    kernel,
    launch,
    window_geometry,
    window_reading,
)


@kernel
def max_pool_forward_kernel(x, out, argmax, kh, kw, sh, sw, ph, pw):  # pragma: no cover (compiled)
    """One thread per output (n, c, oh, ow): the window's maximum and the offset i*kw + j that holds it."""
    n, c, oh, ow = element_of_thread4(out.shape)
    if n >= out.shape[0]:
        return
    height, width = x.shape[2], x.shape[3]
    found = False  # the first real value starts the race, so an all -inf window names its first real position
    best = x[n, c, 0, 0]
    best_k = 0
    for i in range(kh):
        h = oh * sh + i - ph
        if 0 <= h < height:
            for j in range(kw):
                w = ow * sw + j - pw
                if 0 <= w < width:
                    v = x[n, c, h, w]
                    # strict '>' keeps the first maximum; the first NaN beats every number
                    if not found or v > best or (v != v and best == best):
                        best = v
                        best_k = i * kw + j
                        found = True
    if found:
        out[n, c, oh, ow] = best
    else:  # padding only
        out[n, c, oh, ow] = -math.inf
    argmax[n, c, oh, ow] = best_k


@kernel
def max_pool_backward_kernel(dout, argmax, dx, zero, kh, kw, sh, sw, ph, pw):  # pragma: no cover (compiled)
    """One thread per input pixel (n, c, h, w): the sum of the gradients of the windows it won.

    Offset (i, j) of window (oh, ow) reads pixel (oh*sh + i - ph, ow*sw + j - pw); so for this pixel and
    offset, oh = (h + ph - i) / sh when that divides exactly and lands inside [0, OH).
    """
    n, c, h, w = element_of_thread4(dx.shape)
    if n >= dx.shape[0]:
        return
    n_oh, n_ow = dout.shape[2], dout.shape[3]
    total = zero  # `zero` has dout's dtype: the sum rounds as the generic version's additions do
    for i in range(kh):
        oh = window_reading(h, i, ph, sh, n_oh)
        if oh >= 0:
            for j in range(kw):
                ow = window_reading(w, j, pw, sw, n_ow)
                if ow >= 0 and argmax[n, c, oh, ow] == i * kw + j:
                    total += dout[n, c, oh, ow]
    dx[n, c, h, w] = total


def max_pool2d_forward_gpu(x: Any, kh: int, kw: int, stride: Any = None, padding: Any = 0) -> tuple[Any, Any]:
    """Max pooling as one GPU kernel: x (N, C, H, W) -> (out (N, C, OH, OW), argmax int32 (N, C, OH, OW)).

    The twin of `max_pool2d_forward_generic` (same signature, same results); `stride` defaults to the kernel.
    """
    check_floating("max pooling input", x)
    sh, sw, ph, pw, oh, ow = window_geometry(x.shape, kh, kw, (kh, kw) if stride is None else stride, padding)
    xp = get_array_module(x)
    x = contiguous(x)
    n, c = x.shape[:2]
    out = xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = xp.empty((n, c, oh, ow), dtype=ARGMAX_DTYPE)
    launch(max_pool_forward_kernel, out.size, x, out, argmax, kh, kw, sh, sw, ph, pw)
    return out, argmax


def max_pool2d_backward_gpu(
    dout: Any, argmax: Any, x_shape: Shape4, kh: int, kw: int, stride: Any = None, padding: Any = 0
) -> Any:
    """Max-pool gradient as one GPU gather kernel: dout, argmax (N, C, OH, OW) -> dx (N, C, H, W), dout's dtype.

    The twin of `max_pool2d_backward_generic`: each window's gradient goes to its winner; overlaps add up.
    """
    check_floating("dout", dout)
    x_shape = tuple(int(s) for s in x_shape)
    sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kh, kw, (kh, kw) if stride is None else stride, padding)
    expected = (*x_shape[:2], oh, ow)
    check_shape("dout", dout, expected)
    check_shape("argmax", argmax, expected)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, not {argmax.dtype}")
    xp = get_array_module(dout)
    dout = contiguous(dout)
    argmax = contiguous(argmax)
    dx = xp.empty(x_shape, dtype=dout.dtype)
    zero = dout.dtype.type(0)
    launch(max_pool_backward_kernel, dx.size, dout, argmax, dx, zero, kh, kw, sh, sw, ph, pw)
    return dx
