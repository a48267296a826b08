"""col2im on the GPU as a gather: one thread per input pixel, adding the column entries copied from it.

im2col copied pixel (n, c, h, w) of the padded input into cols[c, i, j, n, oh, ow] for every kernel offset
(i, j) and window (oh, ow) with oh*sh + i - ph == h and ow*sw + j - pw == w. col2im adds those entries back.
The generic version adds one strided slice per offset: KH*KW read-modify-write passes over the whole input
gradient (25 for a 5x5 kernel). Here each pixel's thread finds its own entries (for each offset, oh follows
from h when (h + ph - i) divides by sh) and writes its pixel once. Each pixel's entries are added in the
generic version's order (offsets in row-major order), so the result is the same, bit for bit; and as no two
threads write one place, no atomics are needed and every run gives the same bits.
"""

from __future__ import annotations

from typing import Any

from minigrad.backend import get_array_module
from minigrad.kernels.shapes import Shape4

from ._common import check_floating, check_shape, contiguous, element_of_thread4, kernel, launch, window_reading
from ._common import window_geometry as _geometry


@kernel
def col2im_kernel(cols, dx, zero, sh, sw, ph, pw):  # pragma: no cover (compiled)
    """cols (C, KH, KW, N, OH, OW) -> dx (N, C, H, W); one thread per pixel of dx."""
    n, c, h, w = element_of_thread4(dx.shape)
    if n >= dx.shape[0]:
        return
    kh, kw, n_oh, n_ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    total = zero  # `zero` has cols' dtype: the sum rounds as the generic version's additions do
    for i in range(kh):
        oh = window_reading(h, i, ph, sh, n_oh)
        if oh >= 0:
            for j in range(kw):
                ow = window_reading(w, j, pw, sw, n_ow)
                if ow >= 0:
                    total += cols[c, i, j, n, oh, ow]
    dx[n, c, h, w] = total


def col2im_gpu(cols: Any, x_shape: Shape4, kh: int, kw: int, stride: Any = 1, padding: Any = 0, out: Any = None) -> Any:
    """The adjoint of im2col as one GPU kernel: cols (C, KH, KW, N, OH, OW) -> dx of shape x_shape, cols' dtype.

    The twin of `col2im_generic`: overlapping windows add up, entries that came from the padding are
    dropped. `out`, if given, is a C-contiguous array of shape x_shape and cols' dtype; it is overwritten.
    """
    check_floating("cols", cols)
    x_shape = tuple(int(s) for s in x_shape)
    sh, sw, ph, pw, oh, ow = _geometry(x_shape, kh, kw, stride, padding)
    n, c = x_shape[:2]
    check_shape("cols (C, KH, KW, N, OH, OW)", cols, (c, kh, kw, n, oh, ow))
    xp = get_array_module(cols)
    if out is None:
        out = xp.empty(x_shape, dtype=cols.dtype)
    elif get_array_module(out) is not xp or tuple(out.shape) != x_shape or out.dtype != cols.dtype:
        raise ValueError(f"out must be a {xp.__name__} array of shape {x_shape} and dtype {cols.dtype}")
    elif not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    launch(col2im_kernel, out.size, contiguous(cols), out, cols.dtype.type(0), sh, sw, ph, pw)
    return out
