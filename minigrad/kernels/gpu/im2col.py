"""im2col on the GPU: one thread per column entry, with the padding and the bias row of ones written in place.

    cols[c, i, j, n, oh, ow] = xpad[n, c, oh*sh + i, ow*sw + j]        (xpad: x with zeros around it)

The generic version pads x into a new array, then copies a strided view of it: two passes, one temporary.
Here each thread reads its pixel of x, or writes 0 where the window reaches into the padding, in one pass.

The convolution multiplies group by group and lets the bias ride in the GEMM as one more row of ones in
each group's columns (`minigrad.functional.conv`). `im2col_bias_rows_gpu` writes exactly that layout,
(G, C/G*KH*KW + 1, N, OH*OW), ones included, so no second pass fills the bias rows. `im2col_gpu` is the
plain twin of `im2col_generic`: one group, no bias row, shaped (C, KH, KW, N, OH, OW).
"""

from __future__ import annotations

from typing import Any

from minigrad.backend import get_array_module

from ._common import check_floating, contiguous, element_of_thread4, kernel, launch, window_geometry


@kernel
def im2col_kernel(x, cols, kh, kw, sh, sw, ph, pw, n_ow, bias_row):  # pragma: no cover (compiled)
    """x (N, C, H, W) -> cols (G, R, N, OH*OW), R = C/G*KH*KW (+ 1 row of ones when bias_row is 1)."""
    g, r, n, q = element_of_thread4(cols.shape)
    if g >= cols.shape[0]:
        return
    n_rows, height, width = cols.shape[1], x.shape[2], x.shape[3]
    kg = n_rows - bias_row  # rows that come from the input
    if r == kg:
        cols[g, r, n, q] = 1  # the bias row
        return
    c = g * (kg // (kh * kw)) + r // (kh * kw)  # row r of group g is channel c, kernel offset (i, j)
    i = r // kw % kh
    j = r % kw
    h = q // n_ow * sh + i - ph
    w = q % n_ow * sw + j - pw
    if 0 <= h < height and 0 <= w < width:
        cols[g, r, n, q] = x[n, c, h, w]
    else:
        cols[g, r, n, q] = 0


def _unfold(x: Any, kh: int, kw: int, stride: Any, padding: Any, groups: int, bias_row: bool, out: Any) -> Any:
    """Checks the arguments and runs the kernel; cols (G, C/G*KH*KW + bias_row, N, OH*OW)."""
    check_floating("im2col input", x)
    sh, sw, ph, pw, oh, ow = window_geometry(x.shape, kh, kw, stride, padding)
    n, c = x.shape[:2]
    if groups < 1 or c % groups:
        raise ValueError(f"groups={groups} must divide the {c} input channels")
    xp = get_array_module(x)
    shape = (groups, c // groups * kh * kw + int(bias_row), n, oh * ow)
    if out is None:
        out = xp.empty(shape, dtype=x.dtype)
    else:
        size = 1
        for s in shape:
            size *= s
        if get_array_module(out) is not xp or out.size != size or out.dtype != x.dtype:
            raise ValueError(f"out must be a {xp.__name__} array of {size} elements and dtype {x.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
    cols = out.reshape(shape)
    launch(im2col_kernel, cols.size, contiguous(x), cols, kh, kw, sh, sw, ph, pw, ow, int(bias_row))
    return out


def im2col_gpu(x: Any, kh: int, kw: int, stride: Any = 1, padding: Any = 0, out: Any = None) -> Any:
    """Unfold kernel windows as one GPU kernel: x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW), x's dtype.

    The twin of `im2col_generic`. `out`, if given, is a C-contiguous array of the result's shape and dtype.
    """
    *_, oh, ow = window_geometry(x.shape, kh, kw, stride, padding)
    n, c = x.shape[:2]
    cols = _unfold(x, kh, kw, stride, padding, 1, False, out)
    return cols.reshape(c, kh, kw, n, oh, ow)


def im2col_bias_rows_gpu(
    x: Any, kh: int, kw: int, stride: Any = 1, padding: Any = 0, groups: int = 1, out: Any = None
) -> Any:
    """The convolution's columns with a row of ones per group: x (N, C, H, W) -> (G, C/G*KH*KW + 1, N, OH*OW).

    Row r < C/G*KH*KW of group g holds channel g*C/G + r // (KH*KW) at kernel offset (r // KW % KH, r % KW),
    as `im2col` lays it out; the last row of each group is all ones (the bias's row).
    """
    return _unfold(x, kh, kw, stride, padding, groups, True, out)
