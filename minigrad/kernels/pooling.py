"""Max pooling kernels: forward (with the winner of each window remembered) and backward.

Read the generic versions first (`max_pool2d_forward_generic`, `max_pool2d_backward_generic`: xp calls
only, NumPy or CuPy); the Numba versions and their kernels below them are compiled CPU loops (NumPy
float32/float64) with the same results, and `max_pool2d_forward` / `max_pool2d_backward` pick one.

The forward pass returns, next to the pooled values, `argmax`: for every window the flat index
`k = i*kw + j` of the kernel offset (i, j) that won. The backward pass sends each window's gradient to
that one input element, so it never has to look at the input again.

Rules, identical in the Numba and the generic versions:
- padding counts as -inf, so it never wins against a real number;
- ties: the FIRST maximum in row-major window order wins (offset (0, 0), (0, 1), ...), so the gradient of a
  window goes to exactly one element even when several share the maximum;
- NaN: a NaN beats every number and the first NaN in the window wins, so NaN propagates (as in PyTorch);
- a window made only of padding (possible when padding > kernel // 2) outputs -inf, has argmax 0, and its
  gradient is dropped.

argmax is int32 (a window of up to 2**31 elements is plenty). Shapes: x (N, C, H, W); out, argmax and
dout (N, C, OH, OW) with OH = (H + 2*ph - kh) // sh + 1 (likewise OW).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from .dispatch import check_dtype, cpu_helper, cpu_kernel, fastest, run
from .im2col import _slices, padded, window_view
from .shapes import IntPair, Shape4, window_geometry

ARGMAX_DTYPE = np.dtype(np.int32)


def _stride_or_kernel(stride: IntPair | None, kh: int, kw: int) -> IntPair:
    # As in PyTorch, pooling windows do not overlap unless a stride is given.
    return (kh, kw) if stride is None else stride


def _check_floating(x: Any) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"max pooling takes a floating-point array (padding is -inf), not {x.dtype}")


def _check_backward_shapes(dout: Any, argmax: Any, x_shape: tuple[int, ...], oh: int, ow: int) -> None:
    expected = (*tuple(x_shape[:2]), oh, ow)
    if tuple(dout.shape) != expected or tuple(argmax.shape) != expected:
        raise ValueError(
            f"dout {tuple(dout.shape)} and argmax {tuple(argmax.shape)} must both be (N, C, OH, OW) = {expected}"
        )
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, not {argmax.dtype}")


# ----------------------------------------------------------------------------- generic (any xp)


def max_pool2d_forward_generic(
    x: Any, kh: int, kw: int, stride: IntPair | None = None, padding: IntPair = 0
) -> tuple[Any, Any]:
    """Max pooling with xp calls only: x (N, C, H, W) -> (out (N, C, OH, OW), argmax int32 (N, C, OH, OW)).

    The windows are copied once into a (N, C, OH, OW, KH*KW) array (from a strided view of the padded
    input), then reduced over the offsets: four array operations in all, whatever the kernel size, which is
    what a GPU wants (a running maximum over the offsets launches several kernels per offset).
    """
    xp = get_array_module(x)
    _check_floating(x)
    sh, sw, ph, pw, oh, ow = window_geometry(x.shape, kh, kw, _stride_or_kernel(stride, kh, kw), padding)
    n, c = x.shape[:2]
    xpad = padded(x, ph, pw, fill=-xp.inf)
    # (C, KH, KW, N, OH, OW) view -> (N, C, OH, OW, KH, KW) -> one copy with each window's offsets last, in
    # row-major order: CuPy reduces a short last axis faster than a first one (see benchmarks/README.md).
    windows = window_view(xpad, kh, kw, sh, sw, oh, ow).transpose(3, 0, 4, 5, 1, 2).reshape(n, c, oh, ow, kh * kw)
    # max propagates NaN; argmax returns the first maximum, and counts a NaN as larger than any number with
    # the first NaN winning, on NumPy and on CuPy alike (the tests check it on both).
    best = windows.max(axis=-1)
    argmax = windows.argmax(axis=-1).astype(ARGMAX_DTYPE, copy=False)
    if ph or pw:
        # A window whose real values are all -inf ties with its -inf padding, and argmax may pick the padding:
        # such a window's first maximum is its first real position. One comparison, only for padded pools.
        # (A window of padding only, possible when padding > kernel // 2, keeps offset 0: no gradient.)
        first_row, real_rows = _first_real_offset(xp, oh, sh, ph, kh, x.shape[2])
        first_col, real_cols = _first_real_offset(xp, ow, sw, pw, kw, x.shape[3])
        fix = (best == -xp.inf) & real_rows.reshape(oh, 1) & real_cols.reshape(1, ow)
        first = first_row.reshape(oh, 1) * kw + first_col.reshape(1, ow)
        argmax = xp.where(fix, first, argmax).astype(ARGMAX_DTYPE, copy=False)
    return best, argmax


def _first_real_offset(xp: Any, n_out: int, stride: int, pad: int, kernel: int, size: int) -> tuple[Any, Any]:
    """Along one axis: each window's first offset inside the input, and whether it has one at all."""
    start = stride * xp.arange(n_out, dtype=ARGMAX_DTYPE) - pad  # input index of each window's offset 0
    first = xp.maximum(-start, 0)
    return first, (first < kernel) & (start + first < size)


def max_pool2d_backward_generic(
    dout: Any, argmax: Any, x_shape: Shape4, kh: int, kw: int, stride: IntPair | None = None, padding: IntPair = 0
) -> Any:
    """Max-pool gradient with xp calls only: dout, argmax (N, C, OH, OW) -> dx (N, C, H, W).

    Each window's gradient is first put at its winner's slot of a (KH*KW, N, C, OH, OW) array (one
    broadcast comparison; offsets first, so each slab read below is contiguous), then the KH*KW slabs are
    added onto the input as strided slices, as col2im does: additions only, no scatter, so the result is the
    same on every backend and every run.
    """
    xp = get_array_module(dout)
    sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kh, kw, _stride_or_kernel(stride, kh, kw), padding)
    _check_backward_shapes(dout, argmax, x_shape, oh, ow)
    n, c, height, width = x_shape
    offsets = xp.arange(kh * kw, dtype=argmax.dtype).reshape(kh * kw, 1, 1, 1, 1)
    routed = xp.where(argmax == offsets, dout, 0)  # (KH*KW, N, C, OH, OW)
    dpad = xp.zeros((n, c, height + 2 * ph, width + 2 * pw), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dpad[_slices(i, j, sh, sw, oh, ow)] += routed[i * kw + j]
    if ph or pw:
        return xp.ascontiguousarray(dpad[:, :, ph : ph + height, pw : pw + width])
    return dpad


# ----------------------------------------------------------------------------- Numba (NumPy on the CPU)


def max_pool2d_forward_numba(
    x: np.ndarray, kh: int, kw: int, stride: IntPair | None = None, padding: IntPair = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling as a compiled loop on all cores: x (N, C, H, W) -> (out, argmax int32), both (N, C, OH, OW).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    sh, sw, ph, pw, oh, ow = window_geometry(x.shape, kh, kw, _stride_or_kernel(stride, kh, kw), padding)
    check_dtype(x)
    n, c = x.shape[:2]
    x = np.ascontiguousarray(x)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=ARGMAX_DTYPE)
    run(max_pool_forward_kernel, *_planes(x, out, argmax), kh, kw, sh, sw, ph, pw, over=n * c)
    return out, argmax


def max_pool2d_backward_numba(
    dout: np.ndarray,
    argmax: np.ndarray,
    x_shape: Shape4,
    kh: int,
    kw: int,
    stride: IntPair | None = None,
    padding: IntPair = 0,
) -> np.ndarray:
    """Max-pool gradient as a compiled loop on all cores: dout, argmax (N, C, OH, OW) -> dx (N, C, H, W).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kh, kw, _stride_or_kernel(stride, kh, kw), padding)
    _check_backward_shapes(dout, argmax, x_shape, oh, ow)
    check_dtype(dout)
    n, c = x_shape[:2]
    dout = np.ascontiguousarray(dout)
    argmax = np.ascontiguousarray(argmax, dtype=ARGMAX_DTYPE)  # one compiled signature per dout dtype
    dx = np.zeros(x_shape, dtype=dout.dtype)
    run(max_pool_backward_kernel, *_planes(dout, argmax, dx), kw, sh, sw, ph, pw, over=n * c)
    return dx


def _planes(*arrays: np.ndarray) -> list[np.ndarray]:
    """Each C-contiguous (N, C, A, B) array as the (N*C, A, B) stack of its planes that the kernels loop over."""
    return [a.reshape(-1, *a.shape[2:]) for a in arrays]


@cpu_kernel("max_pool2d")
def max_pool_forward_kernel(x, out, argmax, kh, kw, sh, sw, ph, pw, start, stop):  # pragma: no cover (compiled)
    """x (NC, H, W) -> out, argmax (NC, OH, OW) for planes start .. stop-1. Tie and NaN rules as the generic's.

    A window inside the image (every window when there is no padding) takes a loop without bounds checks or
    NaN rule in it; a window that overlaps the padding or holds a NaN takes `window_max_with_every_rule`.
    """
    x, out, argmax = x[start:stop], out[start:stop], argmax[start:stop]  # this part's planes
    n_planes, height, width = x.shape
    _, n_oh, n_ow = out.shape
    for p in range(n_planes):
        for oh in range(n_oh):
            top = oh * sh - ph
            for ow in range(n_ow):
                left = ow * sw - pw
                inside = top >= 0 and left >= 0 and top + kh <= height and left + kw <= width
                best, best_k, saw_nan = -np.inf, 0, False
                if inside:
                    for i in range(kh):
                        for j in range(kw):
                            v = x[p, top + i, left + j]
                            saw_nan |= v != v
                            if v > best:  # strict: the first maximum keeps its place
                                best, best_k = v, i * kw + j
                if saw_nan or not inside:
                    best, best_k = window_max_with_every_rule(x[p], top, left, kh, kw)
                out[p, oh, ow] = best
                argmax[p, oh, ow] = best_k


@cpu_helper
def window_max_with_every_rule(plane, top, left, kh, kw):  # pragma: no cover (compiled)
    """(max, offset i*kw + j) of the window at (top, left) of plane (H, W), which may reach into the padding."""
    height, width = plane.shape
    best, best_k = -np.inf, 0
    for i in range(kh):
        h = top + i
        if h < 0 or h >= height:
            continue
        for j in range(kw):
            w = left + j
            if w < 0 or w >= width:
                continue
            v = plane[h, w]
            # Padding is -inf, so skipping it is the same as comparing against it (strict '>').
            # The first NaN beats every number.
            if v > best or (v != v and best == best):
                best, best_k = v, i * kw + j
    if best == -np.inf:
        # Real values of -inf only: the first of them, not offset 0 (which may be padding, and would drop
        # the gradient). A window of padding only keeps offset 0: no gradient.
        i0, j0 = max(0, -top), max(0, -left)
        if i0 < kh and j0 < kw and top + i0 < height and left + j0 < width:
            best_k = i0 * kw + j0
    return best, best_k


@cpu_kernel("max_pool2d")
def max_pool_backward_kernel(dout, argmax, dx, kw, sh, sw, ph, pw, start, stop):  # pragma: no cover (compiled)
    """Adds dout (NC, OH, OW) into dx (NC, H, W) at each window's winner, for planes start .. stop-1; winners
    in the padding are dropped."""
    dout, argmax, dx = dout[start:stop], argmax[start:stop], dx[start:stop]  # this part's planes
    n_planes, height, width = dx.shape
    _, n_oh, n_ow = dout.shape
    for p in range(n_planes):
        for oh in range(n_oh):
            for ow in range(n_ow):
                k = argmax[p, oh, ow]
                i = k // kw
                h = oh * sh + i - ph
                w = ow * sw + (k - i * kw) - pw
                if 0 <= h < height and 0 <= w < width:
                    dx[p, h, w] += dout[p, oh, ow]


# ----------------------------------------------------------------------------- dispatch


def max_pool2d_forward(
    x: Any, kh: int, kw: int, stride: IntPair | None = None, padding: IntPair = 0
) -> tuple[Any, Any]:
    """Max pooling: x (N, C, H, W) -> (out, argmax), both (N, C, OH, OW); argmax is int32.

    out[n, c, oh, ow] is the maximum of the window xpad[n, c, oh*sh : oh*sh + kh, ow*sw : ow*sw + kw]
    (xpad: x padded with -inf) and argmax holds the winning offset as i*kw + j. The FIRST maximum in
    row-major window order wins ties, so the gradient later goes to exactly one element per window; the
    first NaN in a window beats every number (NaN propagates). `stride` defaults to the kernel size.
    NumPy float32/float64 input uses the Numba kernel when Numba is usable, CuPy input the GPU kernel when
    numba.cuda runs on the GPU (`dispatch.fastest`); anything else the generic one.
    """
    return fastest(
        max_pool2d_forward_numba,
        max_pool2d_forward_generic,
        *(x, kh, kw, stride, padding),
        arrays=(x,),
        gpu="max_pool2d_forward_gpu",
    )


def max_pool2d_backward(
    dout: Any, argmax: Any, x_shape: Shape4, kh: int, kw: int, stride: IntPair | None = None, padding: IntPair = 0
) -> Any:
    """Gradient of max pooling: dout and argmax (N, C, OH, OW) -> dx (N, C, H, W), dout's dtype.

    Each window's gradient goes to the one input element its argmax names; where windows overlap, the
    gradients of the windows an element won add up. Winners lying in the padding are dropped.
    """
    return fastest(
        max_pool2d_backward_numba,
        max_pool2d_backward_generic,
        *(dout, argmax, x_shape, kh, kw, stride, padding),
        arrays=(dout, argmax),
        gpu="max_pool2d_backward_gpu",
    )
