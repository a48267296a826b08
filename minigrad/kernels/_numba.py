"""Numba CPU kernels, and the switch that decides whether they may be used.

Everything that touches Numba lives in this file, so minigrad imports (and works, more slowly) without it.
The public functions in `im2col.py`, `pooling.py`, `lrn.py` and `sgd.py` ask `use_numba_for(array)` and,
when it says yes, hand raw NumPy arrays to one of the kernels below through `run(...)`.

When is Numba not used?
- `import numba` failed (not installed, or a broken llvmlite);
- a kernel failed to compile or run once: we warn ONE time and use the generic kernels from then on,
  because a half-working JIT is worse than a slow but correct path;
- the environment variable `MINIGRAD_DISABLE_NUMBA=1` is set (read on every call, so tests and
  notebooks may flip it), or code runs inside `with force_generic():`;
- the array is not a NumPy float32/float64 array (CuPy arrays, float16, ...).

The kernels are compiled lazily, once per dtype, on their first call (1-2 s each with `parallel=True`);
`cache=True` stores the machine code in `__pycache__`, so later processes load it in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

try:
    import numba
except Exception as exc:  # ImportError, but also a broken llvmlite/NumPy version mismatch
    numba = None
    _failure: str | None = f"it could not be imported ({type(exc).__name__}: {exc})"
else:
    _failure = None  # why Numba is unusable in this process; None while it is usable

_warned = False
_forced_generic = 0  # how many `force_generic()` blocks are open

NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
SERIAL_BELOW = 1 << 15  # elements in the largest array: smaller kernels run on one thread


class NumbaUnavailable(RuntimeError):
    """A Numba kernel was asked for but Numba cannot be used in this process."""


# ----------------------------------------------------------------------------- the switch


def numba_available() -> bool:
    """True while Numba imports and no kernel has failed (ignores `force_generic` and the env variable)."""
    return _failure is None


def numba_disabled_by_env() -> bool:
    """True when MINIGRAD_DISABLE_NUMBA is set to something other than '', '0', 'false' or 'no'."""
    return os.environ.get("MINIGRAD_DISABLE_NUMBA", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def force_generic() -> Iterator[None]:
    """Inside this block every kernel takes the xp-generic path (for tests and speed comparisons)."""
    global _forced_generic
    _forced_generic += 1
    try:
        yield
    finally:
        _forced_generic -= 1


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"Numba is unavailable: {_failure}. minigrad uses its slower generic NumPy kernels "
            "(im2col, col2im, pooling, LRN) for the rest of this process.",
            RuntimeWarning,
            stacklevel=4,
        )


def use_numba_for(array: Any, *others: Any) -> bool:
    """Whether the kernels should take the Numba path for `array` (and the extra arrays `others`).

    `array` decides the dtype (float32 or float64); `others` (e.g. an int32 argmax) need only be NumPy arrays.
    """
    if _forced_generic or numba_disabled_by_env():
        return False
    if not isinstance(array, np.ndarray) or array.dtype not in NUMBA_DTYPES:
        return False
    if not all(isinstance(a, np.ndarray) for a in others):
        return False
    if _failure is not None:
        _warn_once()  # the user expected the fast path; say once why they do not get it
        return False
    return True


def check_dtype(array: np.ndarray) -> None:
    """The Numba kernels are compiled for float32 and float64 only; refuse others before compiling anything."""
    if array.dtype not in NUMBA_DTYPES:
        raise TypeError(f"the Numba kernels take float32 or float64 arrays, not {array.dtype}")


def run(kernel: Callable[..., None], *args: Any) -> None:
    """Call a kernel. If it fails to compile or run, switch Numba off for good and raise NumbaUnavailable.

    The callers validate shapes and allocate the outputs before calling, so an exception in here means
    Numba itself is broken (not a user error) and the generic path will give the right answer.
    """
    global _failure
    if _failure is not None:
        _warn_once()
        raise NumbaUnavailable(f"Numba is unavailable: {_failure}")
    try:
        largest = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        if largest < SERIAL_BELOW:
            # Waking the parallel thread pool costs more than a small kernel's whole work (and up to
            # milliseconds when the other core is busy): small inputs run on the calling thread.
            previous = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                kernel(*args)
            finally:
                numba.set_num_threads(previous)
        else:
            kernel(*args)
    except MemoryError:
        raise  # the generic path would need even more memory; this is not Numba's fault
    except Exception as exc:
        _failure = f"a kernel failed to compile or run ({type(exc).__name__}: {exc})"
        _warn_once()
        raise NumbaUnavailable(f"Numba is unavailable: {_failure}") from exc


def valid_range(n_out: int, size: int, kernel: int, stride: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """For each kernel offset k: the outputs o whose input position o*stride + k - pad lies inside [0, size).

    They form one run lo[k] <= o < hi[k]; outside it the input is padding. Computing the runs up front
    keeps the kernels' inner loops free of bounds checks.
    """
    k = np.arange(kernel, dtype=np.int64)
    lo = np.clip(-((k - pad) // stride), 0, n_out)  # ceil((pad - k) / stride)
    hi = np.clip((size - 1 + pad - k) // stride + 1, lo, n_out)
    return lo, hi


# ----------------------------------------------------------------------------- the kernels
#
# Contiguous runs are copied and added as slices (`dst[a:b] = src[c:d]`, `dst[a:b] += src[c:d]`), not as
# element loops: Numba turns a slice copy into one memmove/memcpy call (libc's tuned copy) and a slice add
# into a vectorised loop after one overlap check, while LLVM left the element-wise `dst[q + s] += src[q]`
# scalar (it cannot rule out that dst and src overlap). Measured on AlexNet's shapes (2-core Xeon): im2col
# 1.4x (conv1) and 1.5-1.9x (conv2-conv5) faster, col2im 1.05-1.4x. Strided slices are slower than the
# loops, so the runs with a stride (the phase split, col2im with stride > 1) stay loops.

if numba is not None:
    _jit = numba.njit(parallel=True, cache=True, fastmath=False)
    prange = numba.prange
else:  # never called (run() refuses first), but the definitions below must still parse and bind

    def _jit(function: Callable[..., None]) -> Callable[..., None]:
        return function

    prange = range


@_jit
def split_phases_kernel(x, xs, pw):  # pragma: no cover (compiled)
    """x (N, C, H, W) -> xs (N, C, SW, H, Q): xs[n, c, p, h, q] = x[n, c, h, q*SW + p - pw], zero outside x.

    Each row of x, zero-padded by pw on both sides, is split into its SW stride phases (every SW-th value,
    starting at p). A window column j of a stride-SW convolution then reads phase j % SW from q = j // SW
    on: a contiguous run, which im2col_kernel copies with vector loads instead of gathering every SW-th
    value. The split is one pass over x, about KH*KW / (SH*SW) times smaller than the columns (7.6x for conv1).
    """
    n_img, n_ch, height, width = x.shape
    _, _, n_phase, _, n_q = xs.shape
    for plane in prange(n_img * n_ch):
        n, c = plane // n_ch, plane % n_ch
        for h in range(height):
            src = x[n, c, h]
            for p in range(n_phase):
                dst = xs[n, c, p, h]
                for q in range(n_q):
                    w = q * n_phase + p - pw
                    dst[q] = src[w] if 0 <= w < width else 0


@_jit
def im2col_kernel(xs, cols, n0, c0, sh, ph, oh_lo, oh_hi):  # pragma: no cover (compiled)
    """xs (N, C, SW, H, Q) from split_phases_kernel -> cols (C', KH, KW, N', OH, OW); writes every element.

    cols[c, i, j, n, oh] is the run xs[n0 + n, c0 + c, j % SW, oh*SH + i - ph, j // SW :][:OW], or zeros
    where that input row lies in the vertical padding (oh outside oh_lo[i] .. oh_hi[i]). The block of
    images n0.. and channels c0.. that cols has room for is unfolded.
    """
    n_phase = xs.shape[2]
    n_ch, kh, kw, n_img, _, n_ow = cols.shape
    for task in prange(n_ch * kh * n_img):  # task (c, i, n) writes cols[c, i, :, n]: tasks never share memory
        c, i, n = task // (kh * n_img), task // n_img % kh, task % n_img
        lo, hi = oh_lo[i], oh_hi[i]
        for j in range(kw):
            q0 = j // n_phase
            phase, block = xs[n0 + n, c0 + c, j % n_phase], cols[c, i, j, n]
            block[:lo, :] = 0
            for oh in range(lo, hi):
                block[oh, :] = phase[oh * sh + i - ph, q0 : q0 + n_ow]
            block[hi:, :] = 0


@_jit
def im2col_shift_kernel(x, cols, n0, c0, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi):  # pragma: no cover (compiled)
    """im2col_kernel for stride 1 when OW == W (a "same" convolution: conv2-conv5 of AlexNet), reading x itself.

    Then cols[c, i, j, n] read as one flat run of OH*OW values is the flat image plane x[n0 + n, c0 + c]
    shifted by (i - ph) * W + (j - pw): one long copy, instead of OH short rows. The copied values
    that belong to the padding (the first or last columns of a row, which the shift wrapped around
    from the neighbouring row) are overwritten with zeros afterwards.
    """
    height, width = x.shape[2:]
    n_ch, kh, kw, n_img, n_oh, n_ow = cols.shape
    plane = n_oh * n_ow
    x_flat = x.reshape(x.shape[0], x.shape[1], height * width)
    cols_flat = cols.reshape(n_ch, kh, kw, n_img, plane)
    for task in prange(n_ch * kh):  # task (c, i) writes the contiguous block cols[c, i]
        c, i = task // kh, task % kh
        r0, r1 = oh_lo[i], oh_hi[i]
        for j in range(kw):
            a, b = ow_lo[j], ow_hi[j]
            shift = (i - ph) * width + (j - pw)
            for n in range(n_img):
                dst, src = cols_flat[c, i, j, n], x_flat[n0 + n, c0 + c]
                if r1 <= r0 or b <= a:  # this offset only ever sees padding
                    dst[:] = 0
                    continue
                q0, q1 = r0 * n_ow + a, (r1 - 1) * n_ow + b  # first and one past the last valid value
                dst[:q0] = 0
                dst[q0:q1] = src[q0 + shift : q1 + shift]
                dst[q1:] = 0
                if a > 0 or b < n_ow:
                    for r in range(r0, r1):
                        dst[r * n_ow : r * n_ow + a] = 0
                        dst[r * n_ow + b : (r + 1) * n_ow] = 0


@_jit
def col2im_kernel(cols, dx, sh, sw, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi):  # pragma: no cover (compiled)
    """Adds cols (C, KH, KW, N, OH, OW) into dx (N, C, H, W), which the caller zeroed; padding is skipped.

    Offsets (i, j) are the outer loops, so every dx element receives its terms in the same order as the
    generic version's slice-adds: the two give bit-identical results.
    """
    n_img, n_ch, _, _ = dx.shape
    _, kh, kw, _, _, _ = cols.shape
    for p in prange(n_img * n_ch):  # a plane is only written by its own task: no races, no atomics
        n, c = p // n_ch, p % n_ch
        for i in range(kh):
            for j in range(kw):
                w0 = j - pw
                a, b = ow_lo[j], ow_hi[j]
                for oh in range(oh_lo[i], oh_hi[i]):
                    src = cols[c, i, j, n, oh]
                    dst = dx[n, c, oh * sh + i - ph]
                    if sw == 1:  # contiguous on both sides: a slice add (strided slices are slower than the loop)
                        dst[a + w0 : b + w0] += src[a:b]
                    else:
                        for ow in range(a, b):  # unit stride through cols
                            dst[ow * sw + w0] += src[ow]


@_jit
def col2im_shift_kernel(cols, dx, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi):  # pragma: no cover (compiled)
    """col2im_kernel for stride 1 when OW == W (see im2col_shift_kernel); bit-identical to it.

    One task per channel c walks cols[c] front to back (the order it lies in memory) and adds into the
    N planes dx[:, c], which stay in the cache. Each dx element still receives its terms in (i, j) order.
    A valid run of cols[c, i, j, n] is added to dx[n, c] shifted by (i - ph) * W + (j - pw): in one piece
    when the offset never reaches into the side padding (j == pw), else row by row.
    """
    n_img, n_ch, height, width = dx.shape
    _, kh, kw, _, n_oh, n_ow = cols.shape
    dx_flat = dx.reshape(n_img, n_ch, height * width)
    cols_flat = cols.reshape(n_ch, kh, kw, n_img, n_oh * n_ow)
    for c in prange(n_ch):  # channel c only writes the planes dx[:, c]: no races
        for i in range(kh):
            r0, r1 = oh_lo[i], oh_hi[i]
            for j in range(kw):
                a, b = ow_lo[j], ow_hi[j]
                shift = (i - ph) * width + (j - pw)
                for n in range(n_img):
                    src, dst = cols_flat[c, i, j, n], dx_flat[n, c]
                    if a == 0 and b == n_ow:
                        q0, q1 = r0 * n_ow, r1 * n_ow
                        dst[q0 + shift : q1 + shift] += src[q0:q1]
                    else:
                        for r in range(r0, r1):
                            q0, q1 = r * n_ow + a, r * n_ow + b
                            dst[q0 + shift : q1 + shift] += src[q0:q1]


@_jit
def max_pool_forward_kernel(x, out, argmax, kh, kw, sh, sw, ph, pw):  # pragma: no cover (compiled)
    """x (NC, H, W) -> out, argmax (NC, OH, OW). Same tie and NaN rules as the generic version."""
    n_planes, height, width = x.shape
    _, n_oh, n_ow = out.shape
    for p in prange(n_planes):
        for oh in range(n_oh):
            for ow in range(n_ow):
                # Padding is -inf, so skipping it is the same as comparing against it (strict '>').
                best = -np.inf
                best_k = 0
                for i in range(kh):
                    h = oh * sh + i - ph
                    if h < 0 or h >= height:
                        continue
                    for j in range(kw):
                        w = ow * sw + j - pw
                        if w < 0 or w >= width:
                            continue
                        v = x[p, h, w]
                        # Strict '>' keeps the first maximum; the first NaN beats every number.
                        if v > best or (v != v and best == best):
                            best = v
                            best_k = i * kw + j
                if best == -np.inf:
                    # Real values of -inf only: the first of them, not offset 0 (which may be padding, and
                    # would drop the gradient). A window of padding only keeps offset 0: no gradient.
                    i0, j0 = max(0, ph - oh * sh), max(0, pw - ow * sw)
                    if i0 < kh and j0 < kw and oh * sh + i0 - ph < height and ow * sw + j0 - pw < width:
                        best_k = i0 * kw + j0
                out[p, oh, ow] = best
                argmax[p, oh, ow] = best_k


@_jit
def max_pool_backward_kernel(dout, argmax, dx, kw, sh, sw, ph, pw):  # pragma: no cover (compiled)
    """Adds dout (NC, OH, OW) into dx (NC, H, W) at each window's winner; winners in the padding are dropped."""
    n_planes, height, width = dx.shape
    _, n_oh, n_ow = dout.shape
    for p in prange(n_planes):
        for oh in range(n_oh):
            for ow in range(n_ow):
                k = argmax[p, oh, ow]
                i = k // kw
                h = oh * sh + i - ph
                w = ow * sw + (k - i * kw) - pw
                if 0 <= h < height and 0 <= w < width:
                    dx[p, h, w] += dout[p, oh, ow]


# ----------------------------------------------------------------------------- local response normalisation
#
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

if numba is not None:
    _jit_helper = numba.njit(cache=True, fastmath=False)  # called from the parallel kernels, inlined by LLVM
else:

    def _jit_helper(function: Callable[..., Any]) -> Callable[..., Any]:
        return function


# How the kernels raise s to the power beta: pow is slow, square roots are fast (and exact to round-off).
LRN_BETA_POW, LRN_BETA_075, LRN_BETA_05, LRN_BETA_1 = 0, 1, 2, 3


def lrn_beta_mode(beta: float) -> int:
    """The cheapest exact way to compute s ** beta for this beta (one of the LRN_BETA_* codes)."""
    return {0.75: LRN_BETA_075, 0.5: LRN_BETA_05, 1.0: LRN_BETA_1}.get(float(beta), LRN_BETA_POW)


@_jit_helper
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


@_jit_helper
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


@_jit
def lrn_forward_kernel(x, y, scale, before, after, block, alpha, k, beta, mode):  # pragma: no cover (compiled)
    """x (N, C, P) -> y and scale (N, C, P): scale = k + alpha * window sum of x^2, y = x / scale^beta.

    The window of channel i is [i - before, i + after] clipped to the channels. `beta` has x's dtype.
    """
    n_img, n_ch, n_pos = x.shape
    n_blocks = (n_pos + block - 1) // block
    for task in prange(n_img * n_blocks):
        n = task // n_blocks
        p0 = (task % n_blocks) * block
        p1 = min(p0 + block, n_pos)
        m = p1 - p0
        hi = np.zeros(m, np.float64)
        lo = np.zeros(m, np.float64)
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


@_jit
def lrn_backward_kernel(grad, x, scale, dx, before, after, block, coef, beta, mode):  # pragma: no cover (compiled)
    """dx_i = g_i / s_i^beta - coef * x_i * sum_{j = i - after}^{i + before} g_j x_j / s_j^(beta + 1).

    All arrays (N, C, P). coef = 2 * alpha * beta. The sum runs over the mirrored window (the channels j
    whose window contains i) and is kept as a running sum like the forward pass. Each channel's term
    t_j and denominator s_j^beta are computed once, when j enters, and parked in two small ring buffers
    of size + 1 rows: t_j is subtracted again when j leaves, s_j^beta is used when channel j is output.
    """
    n_img, n_ch, n_pos = x.shape
    n_ring = before + after + 2
    n_blocks = (n_pos + block - 1) // block
    for task in prange(n_img * n_blocks):
        n = task // n_blocks
        p0 = (task % n_blocks) * block
        p1 = min(p0 + block, n_pos)
        m = p1 - p0
        hi = np.zeros(m, np.float64)
        lo = np.zeros(m, np.float64)
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


# ----------------------------------------------------------------------------- optimizer update


@_jit
def sgd_momentum_kernel(w, grad, velocity, momentum, decay, lr):  # pragma: no cover (compiled)
    """One SGD step on flat arrays, in place: v = momentum*v - decay*w - lr*grad; w = w + v.

    The scalars have the arrays' dtype and every operation rounds to it in the generic version's order
    (no fused multiply-adds without fastmath), so the result is bit-identical to it. One pass over the
    memory instead of the generic version's six with their temporaries.
    """
    for q in prange(w.shape[0]):
        v = velocity[q] * momentum
        v = v - decay * w[q]
        v = v - lr * grad[q]
        velocity[q] = v
        w[q] = w[q] + v
