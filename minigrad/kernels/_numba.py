"""Numba CPU kernels, and the switch that decides whether they may be used.

Everything that touches Numba lives in this file, so minigrad imports (and works, more slowly) without it.
The public functions in `im2col.py` and `pooling.py` ask `use_numba_for(array)` and, when it says yes,
hand raw NumPy arrays to one of the kernels below through `run(...)`.

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
            "(im2col, col2im, pooling) for the rest of this process.",
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

if numba is not None:
    _jit = numba.njit(parallel=True, cache=True, fastmath=False)
    prange = numba.prange
else:  # never called (run() refuses first), but the definitions below must still parse and bind

    def _jit(function: Callable[..., None]) -> Callable[..., None]:
        return function

    prange = range


@_jit
def im2col_kernel(x, cols, sh, sw, ph, pw, oh_lo, oh_hi, ow_lo, ow_hi):  # pragma: no cover (compiled)
    """x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW); writes every element of cols (padding as zeros)."""
    n_img, n_ch, _, _ = x.shape
    _, kh, kw, _, n_oh, n_ow = cols.shape
    for p in prange(n_img * n_ch):  # one (n, c) image plane per task: planes never share memory
        n, c = p // n_ch, p % n_ch
        for i in range(kh):
            for j in range(kw):
                w0 = j - pw
                for oh in range(n_oh):
                    row = cols[c, i, j, n, oh]
                    if oh < oh_lo[i] or oh >= oh_hi[i]:
                        for ow in range(n_ow):
                            row[ow] = 0
                        continue
                    src = x[n, c, oh * sh + i - ph]
                    # Three runs instead of an `if` per element: left padding, the input, right padding.
                    for ow in range(ow_lo[j]):
                        row[ow] = 0
                    for ow in range(ow_lo[j], ow_hi[j]):
                        row[ow] = src[ow * sw + w0]
                    for ow in range(ow_hi[j], n_ow):
                        row[ow] = 0


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
                for oh in range(oh_lo[i], oh_hi[i]):
                    src = cols[c, i, j, n, oh]
                    dst = dx[n, c, oh * sh + i - ph]
                    for ow in range(ow_lo[j], ow_hi[j]):  # unit stride through cols
                        dst[ow * sw + w0] += src[ow]


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
