"""im2col and col2im: turn a convolution into one big matrix product, and back.

`im2col` copies every kernel-sized window of the (zero-padded) input into columns:

    cols[c, i, j, n, oh, ow] = xpad[n, c, oh*sh + i, ow*sw + j]        shape (C, KH, KW, N, OH, OW)

so that the weights `(F, C*KH*KW)` times `cols.reshape(C*KH*KW, N*OH*OW)` is the whole batch's convolution
in ONE matrix product. The batch sits inside the columns on purpose: one large GEMM runs near the BLAS
peak, while N small per-image GEMMs (or a transposed operand in a stacked matmul) do not. The
backward pass needs the same two-dimensional views (dW = dY @ cols^T, dcols = W^T @ dY), so nothing
big is ever transposed.
`col2im` is its adjoint (its transpose as a linear map): it adds every column entry back onto the input
position it was copied from. Where windows overlap the contributions add up; entries that came from the
padding are dropped. The convolution's backward pass uses it to turn d(cols) into d(input).

Each function comes in two versions with the same results:
- `*_numba`: compiled CPU loops (NumPy float32/float64 only), parallel over image planes, channels or rows.
  im2col first splits each padded input row into its stride phases (every SW-th value), so that every row
  of cols is a contiguous run of one phase, copied as one slice instead of a gather of every SW-th
  value (1.6x faster for AlexNet's conv1, stride 4). Stride 1 with OW == W (a "same" convolution) has its
  own kernels: there, one (c, i, j, n) block of cols is the flat image plane shifted by a constant, so it
  moves as one long vectorised run instead of OH short rows (1.5-2x faster for AlexNet's conv2-conv5);
- `*_generic`: written only with calls on `xp = get_array_module(x)`, so it runs on NumPy and CuPy alike.
  im2col copies a strided view of all the windows at once (one array operation); col2im loops over the
  KH*KW kernel offsets, each step adding one strided slice (a view cannot add overlapping windows up).
`im2col` and `col2im` pick the Numba version for NumPy float arrays when Numba is usable, else the generic one.

`ChunkedIm2col` is im2col for a caller that unfolds one input block by block (images n0.., channels c0..),
as the convolution does: both versions run through it, and it prepares the input (phases, padding) once.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ..backend import get_array_module
from . import _numba

IntPair = int | tuple[int, int]

# col2im_shift_kernel runs one task per channel: below this many channels the per-plane kernel is used.
SHIFT_COL2IM_MIN_CHANNELS = 16


# ----------------------------------------------------------------------------- shapes


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair (rows, columns), got {value!r}")
    return int(value[0]), int(value[1])


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: (size + 2*padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(
    x_shape: tuple[int, ...], kh: int, kw: int, stride: IntPair, padding: IntPair
) -> tuple[int, int, int, int, int, int]:
    """Validates the arguments; returns (sh, sw, ph, pw, OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"expected an (N, C, H, W) input, got shape {tuple(x_shape)}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"need kernel >= 1, stride >= 1, padding >= 0; got {(kh, kw)}, {(sh, sw)}, {(ph, pw)}")
    _, _, height, width = x_shape
    oh, ow = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"kernel {(kh, kw)} does not fit the input {(height, width)} padded by {(ph, pw)}: no output positions"
        )
    return sh, sw, ph, pw, oh, ow


def _check_cols_shape(cols_shape: tuple[int, ...], x_shape: tuple[int, ...], kh: int, kw: int, oh: int, ow: int):
    n, c = x_shape[:2]
    expected = (c, kh, kw, n, oh, ow)
    if tuple(cols_shape) != expected:
        raise ValueError(f"cols has shape {tuple(cols_shape)}, expected (C, KH, KW, N, OH, OW) = {expected}")


def _output_buffer(xp: Any, out: Any, shape: tuple[int, ...], dtype: Any, zero: bool) -> Any:
    """A new array of `shape`, or the caller's `out` after checking that it fits (same module, shape, dtype)."""
    if out is None:
        return xp.zeros(shape, dtype=dtype) if zero else xp.empty(shape, dtype=dtype)
    if get_array_module(out) is not xp or tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"out must be a {xp.__name__} array of shape {tuple(shape)} and dtype {dtype}, "
            f"got {type(out).__module__}.{type(out).__name__} of shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if zero:
        out[...] = 0
    return out


def _slices(i: int, j: int, sh: int, sw: int, oh: int, ow: int) -> tuple[slice, slice, slice, slice]:
    """The padded-input positions that kernel offset (i, j) touches, one per output position."""
    return (slice(None), slice(None), slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))


# ----------------------------------------------------------------------------- generic (any xp)


def padded(x: Any, ph: int, pw: int, fill: float = 0.0) -> Any:
    """x (N, C, H, W) with ph rows and pw columns of `fill` on each side, C-contiguous (x itself if it already
    is and there is no padding): the input `window_view` needs."""
    xp = get_array_module(x)
    if not (ph or pw):
        return xp.ascontiguousarray(x)  # a view of its own memory needs plain (positive, C-order) strides
    n, c, height, width = x.shape
    shape = (n, c, height + 2 * ph, width + 2 * pw)
    xpad = xp.zeros(shape, dtype=x.dtype) if fill == 0 else xp.full(shape, fill, dtype=x.dtype)
    xpad[:, :, ph : ph + height, pw : pw + width] = x
    return xpad


def window_view(xpad: Any, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> Any:
    """Every kernel window of xpad (N, C, Hp, Wp) as a strided view (C, KH, KW, N, OH, OW); nothing is copied.

    view[c, i, j, n, oh, ow] is xpad[n, c, oh*sh + i, ow*sw + j]: the same memory reached through six
    strides. Windows overlap, so the view must only be read. Used by the generic kernels because copying it
    is ONE array operation on any xp (one GPU kernel launch), where a loop over the KH*KW offsets is KH*KW.
    """
    xp = get_array_module(xpad)
    n, c = xpad.shape[:2]
    s_n, s_c, s_h, s_w = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(c, kh, kw, n, oh, ow), strides=(s_c, s_h, s_w, s_n, sh * s_h, sw * s_w)
    )


def im2col_generic(x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None) -> Any:
    """im2col with xp calls only (NumPy or CuPy): x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW).

    One copy of the strided window view: on a GPU a single kernel however large the kernel (AlexNet's conv1
    used to launch 121 slice copies).
    """
    return ChunkedIm2col(x, kh, kw, stride, padding, use_numba=False)(out=out)


def col2im_generic(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: IntPair = 1,
    padding: IntPair = 0,
    out: Any = None,
) -> Any:
    """col2im with xp slicing only: cols (C, KH, KW, N, OH, OW) -> dx (N, C, H, W), overlaps added."""
    xp = get_array_module(cols)
    sh, sw, ph, pw, oh, ow = _geometry(x_shape, kh, kw, stride, padding)
    _check_cols_shape(cols.shape, x_shape, kh, kw, oh, ow)
    n, c, height, width = x_shape
    if ph or pw:
        dpad = xp.zeros((n, c, height + 2 * ph, width + 2 * pw), dtype=cols.dtype)
    else:  # no padding to drop: add straight into the result
        dpad = _output_buffer(xp, out, tuple(x_shape), cols.dtype, zero=True)
    for i in range(kh):
        for j in range(kw):
            # Within one offset the strided positions are distinct, so `+=` never hits a spot twice.
            dpad[_slices(i, j, sh, sw, oh, ow)] += cols[:, i, j].transpose(1, 0, 2, 3)
    if ph or pw:
        dx = _output_buffer(xp, out, tuple(x_shape), cols.dtype, zero=False)
        dx[...] = dpad[:, :, ph : ph + height, pw : pw + width]
        return dx
    return dpad


# ----------------------------------------------------------------------------- Numba (NumPy on the CPU)


def im2col_numba(
    x: np.ndarray, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """im2col as a compiled, parallel loop (NumPy float32/float64): x (N, C, H, W) -> (C, KH, KW, N, OH, OW).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    return ChunkedIm2col(x, kh, kw, stride, padding, use_numba=True)(out=out)


def col2im_numba(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: IntPair = 1,
    padding: IntPair = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """col2im as a compiled, parallel loop: cols (C, KH, KW, N, OH, OW) -> dx (N, C, H, W).

    Bit-identical to `col2im_generic` (same order of additions). Raises NumbaUnavailable when Numba cannot be used.
    """
    sh, sw, ph, pw, oh, ow = _geometry(x_shape, kh, kw, stride, padding)
    _check_cols_shape(cols.shape, x_shape, kh, kw, oh, ow)
    _numba.check_dtype(cols)
    n, c, height, width = x_shape
    cols = np.ascontiguousarray(cols)
    dx = _output_buffer(np, out, (n, c, height, width), cols.dtype, zero=True)
    oh_lo, oh_hi = _numba.valid_range(oh, height, kh, sh, ph)
    ow_lo, ow_hi = _numba.valid_range(ow, width, kw, sw, pw)
    # The shifted-run kernel splits the work by channel: it needs enough channels to keep the cores busy
    if sh == sw == 1 and ow == width and c >= SHIFT_COL2IM_MIN_CHANNELS:
        _numba.run(_numba.col2im_shift_kernel, cols, dx, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi)
    else:
        _numba.run(_numba.col2im_kernel, cols, dx, sh, sw, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi)
    return dx


# ----------------------------------------------------------------------------- unfolding a batch in blocks


class ChunkedIm2col:
    """im2col of one input x (N, C, H, W), a block of images and channels at a time, as often as needed.

        unfold = ChunkedIm2col(x, kh, kw, stride, padding)
        unfold(n0, m, c0, c1, out=cols)   # == im2col(x[n0:n0 + m, c0:c1], kh, kw, stride, padding, out=cols)

    A convolution on the CPU unfolds its batch a few images at a time, in the forward pass and again in the
    backward pass, and one group of channels at a time. The work that does not depend on the block is done
    once, here: the Numba version splits the rows into stride phases (`split_phases_kernel`: a third of
    conv1's im2col time when it was redone for every block), the generic one pads x. Either keeps that
    array while the object lives: about x's size for conv1, more for small padded planes (the padding and
    the ragged last phase: up to 2-3x x for 4x4-6x6 planes), nothing when the Numba version reads x
    itself (stride 1 with OW == W, or stride 1 without side padding) or the generic one needs no padding.

    `use_numba`: None picks as `im2col` does (Numba for NumPy float32/float64 when usable, falling back to
    the generic version for good if it breaks); True or False asks for one (True raises NumbaUnavailable).
    """

    def __init__(
        self, x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, use_numba: bool | None = None
    ) -> None:
        self.sh, self.sw, self.ph, self.pw, self.oh, self.ow = _geometry(x.shape, kh, kw, stride, padding)
        self.x, self.kh, self.kw = x, kh, kw
        self.fallback = use_numba is None
        self.numba = _numba.use_numba_for(x) if use_numba is None else use_numba
        self.source: Any = None  # what the kernels read: x, its stride phases or padded x
        if self.numba:
            _numba.check_dtype(x)
            try:
                self._prepare_numba()
            except _numba.NumbaUnavailable:
                if not self.fallback:
                    raise
                self.numba = False

    def _prepare_numba(self) -> None:
        x = np.ascontiguousarray(self.x)
        n, c, height, width = x.shape
        self.oh_lo, self.oh_hi = _numba.valid_range(self.oh, height, self.kh, self.sh, self.ph)
        self.shifted = self.sh == self.sw == 1 and self.ow == width  # rows line up: one shifted copy per block
        if self.shifted:
            self.ow_lo, self.ow_hi = _numba.valid_range(self.ow, width, self.kw, self.sw, self.pw)
            self.source = x
        elif self.sw == 1 and self.pw == 0:  # one phase and no side padding: the split would be a plain copy
            self.source = x.reshape(n, c, 1, height, width)
        else:
            phases = np.empty((n, c, self.sw, height, -(-(width + 2 * self.pw) // self.sw)), dtype=x.dtype)
            _numba.run(_numba.split_phases_kernel, x, phases, self.pw)
            self.source = phases

    def __call__(self, n0: int = 0, m: int | None = None, c0: int = 0, c1: int | None = None, out: Any = None) -> Any:
        """Columns (C1 - C0, KH, KW, M, OH, OW) of images n0 .. n0+m-1 and channels c0 .. c1-1 (default: all)."""
        n, c = self.x.shape[:2]
        m = n - n0 if m is None else m
        c1 = c if c1 is None else c1
        try:  # before any kernel sees them: a float offset would fail to compile, which switches Numba off for good
            n0, m, c0, c1 = (operator.index(v) for v in (n0, m, c0, c1))
        except TypeError:
            raise TypeError(f"the block's n0, m, c0, c1 must be integers, got {(n0, m, c0, c1)!r}") from None
        if not (0 <= n0 and m >= 0 and n0 + m <= n and 0 <= c0 <= c1 <= c):
            raise ValueError(f"no block of images {n0}..{n0 + m - 1} and channels {c0}..{c1 - 1} in x {self.x.shape}")
        shape = (c1 - c0, self.kh, self.kw, m, self.oh, self.ow)
        if self.numba:
            cols = _output_buffer(np, out, shape, self.x.dtype, zero=False)
            try:
                if self.shifted:
                    geometry = (self.ph, self.pw, self.oh_lo, self.oh_hi, self.ow_lo, self.ow_hi)
                    _numba.run(_numba.im2col_shift_kernel, self.source, cols, n0, c0, *geometry)
                else:
                    geometry = (self.sh, self.ph, self.oh_lo, self.oh_hi)
                    _numba.run(_numba.im2col_kernel, self.source, cols, n0, c0, *geometry)
                return cols
            except _numba.NumbaUnavailable:
                if not self.fallback:
                    raise
                self.numba, self.source = False, None  # already warned once; the generic version from now on
        xp = get_array_module(self.x)
        if self.source is None:
            self.source = padded(self.x, self.ph, self.pw)
        cols = _output_buffer(xp, out, shape, self.x.dtype, zero=False)
        cols[...] = window_view(self.source[n0 : n0 + m, c0:c1], self.kh, self.kw, self.sh, self.sw, self.oh, self.ow)
        return cols


# ----------------------------------------------------------------------------- dispatch


def im2col(x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None) -> Any:
    """Unfold kernel windows: x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW), C-contiguous, x's dtype.

    cols[c, i, j, n, oh, ow] = xpad[n, c, oh*sh + i, ow*sw + j], where xpad is x with `padding` zeros on
    each side and OH = (H + 2*ph - kh) // sh + 1 (likewise OW). `stride` and `padding` are an int or a pair.
    NumPy float32/float64 input uses the Numba kernel when Numba is usable; anything else the generic one.
    `out`, if given, is a C-contiguous array of the result's shape and dtype that receives it (and is
    returned): a convolution that works through the batch in chunks reuses one buffer for all of them.
    """
    if _numba.use_numba_for(x, *(() if out is None else (out,))):
        try:
            return im2col_numba(x, kh, kw, stride, padding, out=out)
        except _numba.NumbaUnavailable:
            pass  # already warned once; the generic version gives the same answer
    return im2col_generic(x, kh, kw, stride, padding, out=out)


def col2im(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: IntPair = 1,
    padding: IntPair = 0,
    out: Any = None,
) -> Any:
    """The adjoint of `im2col`: cols (C, KH, KW, N, OH, OW) -> dx of shape x_shape = (N, C, H, W), cols' dtype.

    Every cols entry is added to the input position it was copied from: overlapping windows add up,
    entries that came from the padding are dropped. So <im2col(x), c> == <x, col2im(c)> for all x, c.
    `out`, if given, is a C-contiguous array of shape x_shape and cols' dtype; it is overwritten and returned.
    """
    if _numba.use_numba_for(cols, *(() if out is None else (out,))):
        try:
            return col2im_numba(cols, x_shape, kh, kw, stride, padding, out=out)
        except _numba.NumbaUnavailable:
            pass
    return col2im_generic(cols, x_shape, kh, kw, stride, padding, out=out)
