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

Read in this order:
- `im2col_generic`, `col2im_generic`: the plain versions, written only with calls on
  `xp = get_array_module(x)`, so they run on NumPy and CuPy alike. im2col pads x, views every window
  through strides (`window_view`, nothing copied) and copies that view: one array operation. col2im loops
  over the KH*KW kernel offsets, each step adding one strided slice (a view cannot add overlapping windows).
- `im2col_numba`, `col2im_numba` and their kernels: compiled CPU loops (NumPy float32/float64 only),
  split over the cores by image planes, channels or rows, with the same results. im2col first splits each padded
  input row into its stride phases (every SW-th value), so that every row of cols is a contiguous run of
  one phase, copied as one run instead of a gather of every SW-th value. Stride 1 with OW == W (a
  "same" convolution) has its own kernels: there, one (c, i, j, n) block of cols is the flat image plane
  shifted by a constant, so it moves as one long vectorised run instead of OH short rows.
- `ChunkedIm2col`: im2col for a caller that unfolds one input block by block (images n0.., channels c0..),
  as the tuned convolution does; it prepares the input (phases, padding) once.
- `im2col`, `col2im`: pick the Numba version for NumPy float arrays when Numba is usable, else the generic one.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ..backend import get_array_module
from .dispatch import check_dtype, cpu_helper, cpu_kernel, fastest, run, use_numba_for
from .shapes import IntPair, Shape4, window_geometry

# col2im_shift_kernel runs one task per channel: below this many channels the per-plane kernel is used.
SHIFT_COL2IM_MIN_CHANNELS = 16


# ----------------------------------------------------------------------------- the plain versions (any xp)


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
    strides. Windows overlap, so the view must only be read. Copying it is ONE array operation on any xp
    (one GPU kernel launch), where a loop over the KH*KW offsets is KH*KW of them.
    """
    xp = get_array_module(xpad)
    n, c = xpad.shape[:2]
    s_n, s_c, s_h, s_w = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(c, kh, kw, n, oh, ow), strides=(s_c, s_h, s_w, s_n, sh * s_h, sw * s_w)
    )


def im2col_generic(x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None) -> Any:
    """im2col with xp calls only (NumPy or CuPy): x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW).

    Pad, view every window through strides, copy the view into the columns.
    """
    xp = get_array_module(x)
    sh, sw, ph, pw, oh, ow = window_geometry(x.shape, kh, kw, stride, padding, "im2col")
    n, c = x.shape[:2]
    cols = _output_buffer(xp, out, (c, kh, kw, n, oh, ow), x.dtype, zero=False)
    cols[...] = window_view(padded(x, ph, pw), kh, kw, sh, sw, oh, ow)
    return cols


def col2im_generic(
    cols: Any, x_shape: Shape4, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None
) -> Any:
    """col2im with xp slicing only: cols (C, KH, KW, N, OH, OW) -> dx (N, C, H, W), overlaps added.

    Into a zeroed padded input, add the columns of each kernel offset (i, j) at the positions im2col took
    them from (one strided slice per offset), then cut the padding off.
    """
    xp = get_array_module(cols)
    sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kh, kw, stride, padding, "col2im")
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


def _slices(i: int, j: int, sh: int, sw: int, oh: int, ow: int) -> tuple[slice, slice, slice, slice]:
    """The padded-input positions that kernel offset (i, j) touches, one per output position."""
    return (slice(None), slice(None), slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))


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


# ----------------------------------------------------------------------------- the Numba versions (NumPy on the CPU)


def im2col_numba(
    x: np.ndarray, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """im2col as a compiled loop on all cores (NumPy float32/float64): x (N, C, H, W) -> (C, KH, KW, N, OH, OW).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    return ChunkedIm2col(x, kh, kw, stride, padding, use_numba=True)(out=out)


def col2im_numba(
    cols: np.ndarray,
    x_shape: Shape4,
    kh: int,
    kw: int,
    stride: IntPair = 1,
    padding: IntPair = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """col2im as a compiled loop on all cores: cols (C, KH, KW, N, OH, OW) -> dx (N, C, H, W).

    Bit-identical to `col2im_generic` (same order of additions). Raises NumbaUnavailable when Numba cannot be used.
    """
    sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kh, kw, stride, padding, "col2im")
    _check_cols_shape(cols.shape, x_shape, kh, kw, oh, ow)
    check_dtype(cols)
    n, c, height, width = x_shape
    cols = np.ascontiguousarray(cols)
    dx = _output_buffer(np, out, (n, c, height, width), cols.dtype, zero=True)
    oh_lo, oh_hi = valid_range(oh, height, kh, sh, ph)
    ow_lo, ow_hi = valid_range(ow, width, kw, sw, pw)
    # The shifted-run kernel splits the work by channel: it needs enough channels to keep the cores busy
    if sh == sw == 1 and ow == width and c >= SHIFT_COL2IM_MIN_CHANNELS:
        run(col2im_shift_kernel, cols, dx, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi, over=c)
    else:
        run(col2im_kernel, cols, dx, sh, sw, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi, over=n * c)
    return dx


def valid_range(n_out: int, size: int, kernel: int, stride: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """For each kernel offset k: the outputs o whose input position o*stride + k - pad lies inside [0, size).

    They form one run lo[k] <= o < hi[k]; outside it the input is padding. Computing the runs up front
    keeps the kernels' inner loops free of bounds checks.
    """
    k = np.arange(kernel, dtype=np.int64)
    lo = np.clip(-((k - pad) // stride), 0, n_out)  # ceil((pad - k) / stride)
    hi = np.clip((size - 1 + pad - k) // stride + 1, lo, n_out)
    return lo, hi


# Contiguous runs are copied, added and zeroed by the three helpers below, each a plain element loop over
# one run (a slice view): LLVM vectorises such a loop after one check that the two runs do not overlap. A
# slice assignment (`dst[a:b] += src[c:d]`) in a serial Numba function goes through its general array
# machinery instead, which costs more than the work for runs as short as a row of 27 values.


@cpu_helper
def _copy_run(dst, src):  # pragma: no cover (compiled)
    for q in range(dst.shape[0]):
        dst[q] = src[q]


@cpu_helper
def _add_run(dst, src):  # pragma: no cover (compiled)
    for q in range(dst.shape[0]):
        dst[q] += src[q]


@cpu_helper
def _zero_run(dst):  # pragma: no cover (compiled)
    for q in range(dst.shape[0]):
        dst[q] = 0


@cpu_kernel("conv2d")
def split_phases_kernel(x, xs, pw, start, stop):  # pragma: no cover (compiled)
    """x (N, C, H, W) -> xs (N, C, SW, H, Q): xs[n, c, p, h, q] = x[n, c, h, q*SW + p - pw], zero outside x.

    Image planes start .. stop-1 (plane = n*C + c).

    Each row of x, zero-padded by pw on both sides, is split into its SW stride phases (every SW-th value,
    starting at p). A window column j of a stride-SW convolution then reads phase j % SW from q = j // SW
    on: a contiguous run, which im2col_kernel copies with vector loads instead of gathering every SW-th
    value. The split is one pass over x, about KH*KW / (SH*SW) times smaller than the columns (7.6x for conv1).
    """
    n_ch, height, width = x.shape[1:]
    _, _, n_phase, _, n_q = xs.shape
    for plane in range(start, stop):
        n, c = plane // n_ch, plane % n_ch
        for h in range(height):
            src = x[n, c, h]
            for p in range(n_phase):
                dst = xs[n, c, p, h]
                for q in range(n_q):
                    w = q * n_phase + p - pw
                    dst[q] = src[w] if 0 <= w < width else 0


@cpu_kernel("conv2d")
def im2col_kernel(xs, cols, n0, c0, sh, ph, oh_lo, oh_hi, start, stop):  # pragma: no cover (compiled)
    """xs (N, C, SW, H, Q) from split_phases_kernel -> cols (C', KH, KW, N', OH, OW); writes every element.

    cols[c, i, j, n, oh] is the run xs[n0 + n, c0 + c, j % SW, oh*SH + i - ph, j // SW :][:OW], or zeros
    where that input row lies in the vertical padding (oh outside oh_lo[i] .. oh_hi[i]). The block of
    images n0.. and channels c0.. that cols has room for is unfolded; tasks (c, i, n) start .. stop-1.
    """
    n_phase = xs.shape[2]
    _, kh, kw, n_img, _, n_ow = cols.shape
    for task in range(start, stop):  # task (c, i, n) writes cols[c, i, :, n]: tasks never share memory
        c, i, n = task // (kh * n_img), task // n_img % kh, task % n_img
        lo, hi = oh_lo[i], oh_hi[i]
        for j in range(kw):
            q0 = j // n_phase
            phase, block = xs[n0 + n, c0 + c, j % n_phase], cols[c, i, j, n]
            for oh in range(lo):
                _zero_run(block[oh])
            for oh in range(lo, hi):
                _copy_run(block[oh], phase[oh * sh + i - ph, q0 : q0 + n_ow])
            for oh in range(hi, block.shape[0]):
                _zero_run(block[oh])


@cpu_kernel("conv2d")
def im2col_shift_kernel(x, cols, n0, c0, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi, start, stop):  # pragma: no cover
    """im2col_kernel for stride 1 when OW == W (a "same" convolution: conv2-conv5 of AlexNet), reading x itself.

    Then cols[c, i, j, n] read as one flat run of OH*OW values is the flat image plane x[n0 + n, c0 + c]
    shifted by (i - ph) * W + (j - pw): one long copy, instead of OH short rows. The copied values
    that belong to the padding (the first or last columns of a row, which the shift wrapped around
    from the neighbouring row) are overwritten with zeros afterwards. Tasks (c, i) start .. stop-1.
    """
    height, width = x.shape[2:]
    n_ch, kh, kw, n_img, n_oh, n_ow = cols.shape
    plane = n_oh * n_ow
    x_flat = x.reshape(x.shape[0], x.shape[1], height * width)
    cols_flat = cols.reshape(n_ch, kh, kw, n_img, plane)
    for task in range(start, stop):  # task (c, i) writes the contiguous block cols[c, i]
        c, i = task // kh, task % kh
        r0, r1 = oh_lo[i], oh_hi[i]
        for j in range(kw):
            a, b = ow_lo[j], ow_hi[j]
            shift = (i - ph) * width + (j - pw)
            for n in range(n_img):
                dst, src = cols_flat[c, i, j, n], x_flat[n0 + n, c0 + c]
                if r1 <= r0 or b <= a:  # this offset only ever sees padding
                    _zero_run(dst)
                    continue
                q0, q1 = r0 * n_ow + a, (r1 - 1) * n_ow + b  # first and one past the last valid value
                _zero_run(dst[:q0])
                _copy_run(dst[q0:q1], src[q0 + shift : q1 + shift])
                _zero_run(dst[q1:])
                if a > 0 or b < n_ow:
                    for r in range(r0, r1):
                        _zero_run(dst[r * n_ow : r * n_ow + a])
                        _zero_run(dst[r * n_ow + b : (r + 1) * n_ow])


@cpu_kernel("conv2d")
def col2im_kernel(cols, dx, sh, sw, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi, start, stop):  # pragma: no cover
    """Adds cols (C, KH, KW, N, OH, OW) into dx (N, C, H, W), which the caller zeroed; padding is skipped.

    Offsets (i, j) are the outer loops, so every dx element receives its terms in the same order as the
    generic version's slice-adds: the two give bit-identical results. Planes start .. stop-1 (p = n*C + c).
    """
    n_ch = dx.shape[1]
    _, kh, kw, _, _, _ = cols.shape
    for p in range(start, stop):  # a plane is only written by its own task: no races, no atomics
        n, c = p // n_ch, p % n_ch
        for i in range(kh):
            for j in range(kw):
                w0 = j - pw
                a, b = ow_lo[j], ow_hi[j]
                for oh in range(oh_lo[i], oh_hi[i]):
                    src = cols[c, i, j, n, oh]
                    dst = dx[n, c, oh * sh + i - ph]
                    if sw == 1:  # contiguous on both sides: one run
                        _add_run(dst[a + w0 : b + w0], src[a:b])
                    else:
                        for ow in range(a, b):  # unit stride through cols
                            dst[ow * sw + w0] += src[ow]


@cpu_kernel("conv2d")
def col2im_shift_kernel(cols, dx, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi, start, stop):  # pragma: no cover
    """col2im_kernel for stride 1 when OW == W (see im2col_shift_kernel); bit-identical to it.

    One task per channel c walks cols[c] front to back (the order it lies in memory) and adds into the
    N planes dx[:, c], which stay in the cache. Each dx element still receives its terms in (i, j) order.
    A valid run of cols[c, i, j, n] is added to dx[n, c] shifted by (i - ph) * W + (j - pw): in one piece
    when the offset never reaches into the side padding (j == pw), else row by row. Channels start .. stop-1.
    """
    n_img, n_ch, height, width = dx.shape
    _, kh, kw, _, n_oh, n_ow = cols.shape
    dx_flat = dx.reshape(n_img, n_ch, height * width)
    cols_flat = cols.reshape(n_ch, kh, kw, n_img, n_oh * n_ow)
    for c in range(start, stop):  # channel c only writes the planes dx[:, c]: no races
        for i in range(kh):
            r0, r1 = oh_lo[i], oh_hi[i]
            for j in range(kw):
                a, b = ow_lo[j], ow_hi[j]
                shift = (i - ph) * width + (j - pw)
                for n in range(n_img):
                    src, dst = cols_flat[c, i, j, n], dx_flat[n, c]
                    if a == 0 and b == n_ow:
                        q0, q1 = r0 * n_ow, r1 * n_ow
                        _add_run(dst[q0 + shift : q1 + shift], src[q0:q1])
                    else:
                        for r in range(r0, r1):
                            q0, q1 = r * n_ow + a, r * n_ow + b
                            _add_run(dst[q0 + shift : q1 + shift], src[q0:q1])


# ----------------------------------------------------------------------------- unfolding a batch in blocks


class ChunkedIm2col:
    """im2col of one input x (N, C, H, W), a block of images and channels at a time, as often as needed.

        unfold = ChunkedIm2col(x, kh, kw, stride, padding)
        unfold(n0, m, c0, c1, out=cols)   # == im2col(x[n0:n0 + m, c0:c1], kh, kw, stride, padding, out=cols)

    The tuned CPU convolution unfolds its batch a few images at a time, in the forward pass and again in the
    backward pass, and one group of channels at a time. The work that does not depend on the block is done
    once, on the first block: the Numba version splits the rows into stride phases (`split_phases_kernel`),
    the generic one pads x. Either keeps that array while the object lives: about x's size for conv1,
    more for small padded planes (the padding and the ragged last phase), nothing when the Numba version
    reads x itself (stride 1 with OW == W, or stride 1 without side padding) or the generic one needs no
    padding.

    `use_numba`: None picks per block as `im2col` does (Numba for NumPy float32/float64 when usable, the
    generic version once Numba is off); True or False asks for one (True raises NumbaUnavailable, at once).
    """

    def __init__(
        self, x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, use_numba: bool | None = None
    ) -> None:
        self.sh, self.sw, self.ph, self.pw, self.oh, self.ow = window_geometry(x.shape, kh, kw, stride, padding)
        self.x, self.kh, self.kw = x, kh, kw
        self.use_numba = use_numba
        self.numba_source: Any = None  # what the Numba kernels read: x or its stride phases
        self.generic_source: Any = None  # what the generic version reads: padded x
        if use_numba:
            self._prepare_numba()

    @property
    def numba(self) -> bool:
        """Whether the next block is unfolded by the Numba kernels (else by the generic version)."""
        return use_numba_for(self.x) if self.use_numba is None else self.use_numba

    def _prepare_numba(self) -> None:
        check_dtype(self.x)
        x = np.ascontiguousarray(self.x)
        n, c, height, width = x.shape
        self.oh_lo, self.oh_hi = valid_range(self.oh, height, self.kh, self.sh, self.ph)
        self.shifted = self.sh == self.sw == 1 and self.ow == width  # rows line up: one shifted copy per block
        if self.shifted:
            self.ow_lo, self.ow_hi = valid_range(self.ow, width, self.kw, self.sw, self.pw)
            self.numba_source = x
        elif self.sw == 1 and self.pw == 0:  # one phase and no side padding: the split would be a plain copy
            self.numba_source = x.reshape(n, c, 1, height, width)
        else:
            phases = np.empty((n, c, self.sw, height, -(-(width + 2 * self.pw) // self.sw)), dtype=x.dtype)
            run(split_phases_kernel, x, phases, self.pw, over=n * c)
            self.numba_source = phases

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
        if self.use_numba is None:
            return fastest(self._numba_block, self._generic_block, n0, m, c0, c1, out, arrays=(self.x, out))
        return (self._numba_block if self.use_numba else self._generic_block)(n0, m, c0, c1, out)

    def _numba_block(self, n0: int, m: int, c0: int, c1: int, out: Any) -> np.ndarray:
        if self.numba_source is None:
            self._prepare_numba()
        cols = _output_buffer(np, out, (c1 - c0, self.kh, self.kw, m, self.oh, self.ow), self.x.dtype, zero=False)
        if self.shifted:
            geometry = (self.ph, self.pw, self.oh_lo, self.oh_hi, self.ow_lo, self.ow_hi)
            run(im2col_shift_kernel, self.numba_source, cols, n0, c0, *geometry, over=(c1 - c0) * self.kh)
        else:
            geometry = (self.sh, self.ph, self.oh_lo, self.oh_hi)
            run(im2col_kernel, self.numba_source, cols, n0, c0, *geometry, over=(c1 - c0) * self.kh * m)
        return cols

    def _generic_block(self, n0: int, m: int, c0: int, c1: int, out: Any) -> Any:
        xp = get_array_module(self.x)
        if self.generic_source is None:
            self.generic_source = padded(self.x, self.ph, self.pw)
        cols = _output_buffer(xp, out, (c1 - c0, self.kh, self.kw, m, self.oh, self.ow), self.x.dtype, zero=False)
        block = self.generic_source[n0 : n0 + m, c0:c1]
        cols[...] = window_view(block, self.kh, self.kw, self.sh, self.sw, self.oh, self.ow)
        return cols


# ----------------------------------------------------------------------------- dispatch


def im2col(x: Any, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None) -> Any:
    """Unfold kernel windows: x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW), C-contiguous, x's dtype.

    cols[c, i, j, n, oh, ow] = xpad[n, c, oh*sh + i, ow*sw + j], where xpad is x with `padding` zeros on
    each side and OH = (H + 2*ph - kh) // sh + 1 (likewise OW). `stride` and `padding` are an int or a pair.
    NumPy float32/float64 input uses the Numba kernel when Numba is usable, CuPy input the GPU kernel when
    numba.cuda runs on the GPU (`dispatch.fastest`); anything else the generic one.
    `out`, if given, is a C-contiguous array of the result's shape and dtype that receives it (and is
    returned): a convolution that works through the batch in chunks reuses one buffer for all of them.
    """
    return fastest(im2col_numba, im2col_generic, x, kh, kw, stride, padding, out=out, arrays=(x, out), gpu="im2col_gpu")


def col2im(
    cols: Any, x_shape: Shape4, kh: int, kw: int, stride: IntPair = 1, padding: IntPair = 0, out: Any = None
) -> Any:
    """The adjoint of `im2col`: cols (C, KH, KW, N, OH, OW) -> dx of shape x_shape = (N, C, H, W), cols' dtype.

    Every cols entry is added to the input position it was copied from: overlapping windows add up,
    entries that came from the padding are dropped. So <im2col(x), c> == <x, col2im(c)> for all x, c.
    `out`, if given, is a C-contiguous array of shape x_shape and cols' dtype; it is overwritten and returned.
    """
    return fastest(
        col2im_numba,
        col2im_generic,
        *(cols, x_shape, kh, kw, stride, padding),
        out=out,
        arrays=(cols, out),
        gpu="col2im_gpu",
    )
