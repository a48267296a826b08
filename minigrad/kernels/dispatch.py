"""Which version of a kernel runs: a GPU kernel, a compiled Numba loop on the CPU, or the xp-generic twin.

Every kernel in this package is written once with `xp` calls only (NumPy, CuPy: the plain version, read it
first) and, for NumPy float32/float64 arrays, once more as a compiled Numba loop that gives the same result.
Some also have a GPU twin in `minigrad.kernels.gpu` (numba.cuda kernels for CuPy arrays, the same results).
`fastest(numba_version, generic_version, *args, arrays=..., gpu=NAME)` is the one place that picks between
them: the GPU twin named NAME for CuPy arrays when numba.cuda runs on this GPU, the Numba loop for NumPy
float32/float64 arrays, the generic version for everything else.

Everything that touches Numba lives in this file, so minigrad imports (and works, more slowly) without it.
The kernel modules decorate their loops with `cpu_kernel(op)` or `cpu_helper` (called from a kernel) and
call them through `run(kernel, *args, over=count)`. A kernel is a serial loop over `range(start, stop)` of
its outer dimension (images, channels, or a flat range), compiled without the GIL; `run` hands its parts to
minigrad's own CPU threads (`cpu_threads.split_over_cores`), not to an OpenMP runtime: see cpu_threads.py
for why.

When is Numba not used?
- `import numba` failed (not installed, or a broken llvmlite);
- a kernel failed to compile or run once: minigrad warns ONE time and uses the generic kernels from then on,
  because a half-working JIT is worse than a slow but correct path;
- the environment variable `MINIGRAD_DISABLE_NUMBA=1` is set (read on every call, so tests and
  notebooks may flip it), or code runs inside `with force_generic():` (which also sends conv2d to its plain
  definition);
- the array is not a NumPy float32/float64 array (CuPy arrays, float16, ...).

When are the GPU kernels not used? When numba.cuda is missing or cannot run on this GPU
(`minigrad.kernels.gpu.use_gpu_kernels_for` says so; `minigrad selfcheck` says why), inside
`force_generic()`, and after one raised GpuKernelsUnavailable: minigrad then warns ONE time and uses the
generic kernels (CuPy array code) for the rest of the process. The package is imported on the first call
with arrays that are not NumPy's, because loading numba.cuda takes a while that CPU users need not wait.

The kernels are compiled lazily, once per dtype, on their first call, and `cache=True` stores the machine
code in `__pycache__`, so later processes load it instead. A compile (not a load from that cache) says so
on stderr, once per process, so that a first run does not look hung: `MINIGRAD_QUIET=1` or
`show_compile_notice(False)` silences it.

Imports: NumPy, Numba when it imports, `cpu_threads` and (lazily) `gpu` from this package; nothing else from
minigrad.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from .cpu_threads import cpu_cores, split_over_cores

try:
    import numba
    from numba.core import event as numba_event
except Exception as exc:  # ImportError, but also a broken llvmlite/NumPy version mismatch
    numba = numba_event = None
    _failure: str | None = f"it could not be imported ({type(exc).__name__}: {exc})"
else:
    _failure = None  # why Numba is unusable in this process; None while it is usable

T = TypeVar("T")

_warned = False
_forced_generic = 0  # how many `force_generic()` blocks are open
_gpu_failure: str | None = None  # why the GPU kernels stopped being used in this process; None while they are

NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
SERIAL_BELOW = 1 << 15  # elements in the largest array: smaller kernels run in the calling thread


class NumbaUnavailable(RuntimeError):
    """A Numba kernel was asked for but Numba cannot be used in this process."""


# ----------------------------------------------------------------------------- the switch


def numba_available() -> bool:
    """True while Numba imports and no kernel has failed (ignores `force_generic` and the env variable)."""
    return _failure is None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def numba_disabled_by_env() -> bool:
    """True when MINIGRAD_DISABLE_NUMBA is set to something other than '', '0', 'false' or 'no'."""
    return _env_flag("MINIGRAD_DISABLE_NUMBA")


@contextlib.contextmanager
def force_generic() -> Iterator[None]:
    """Inside this block every kernel takes its xp-generic version (no Numba loop, no GPU kernel) and conv2d
    its plain definition (for tests and speed comparisons)."""
    global _forced_generic
    _forced_generic += 1
    try:
        yield
    finally:
        _forced_generic -= 1


def generic_forced() -> bool:
    """True inside a `force_generic()` block."""
    return _forced_generic > 0


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"Numba is unavailable: {_failure}. minigrad uses its slower generic NumPy kernels "
            "(im2col, col2im, pooling, LRN, the SGD update) for the rest of this process.",
            RuntimeWarning,
            stacklevel=4,
        )


def use_numba_for(array: Any, *others: Any) -> bool:
    """Whether the kernels should take the Numba path for `array` (and the extra arrays `others`).

    `array` decides the dtype (float32 or float64); `others` (e.g. an int32 argmax, an `out` buffer) need
    only be NumPy arrays; None among them (an `out` not given) is skipped.
    """
    if _forced_generic or numba_disabled_by_env():
        return False
    if not isinstance(array, np.ndarray) or array.dtype not in NUMBA_DTYPES:
        return False
    if not all(a is None or isinstance(a, np.ndarray) for a in others):
        return False
    if _failure is not None:
        _warn_once()  # the user expected the fast path; say once why they do not get it
        return False
    return True


def _gpu_version(name: str | None, arrays: tuple[Any, ...]) -> Callable[..., Any] | None:
    """The GPU twin called `name` in `minigrad.kernels.gpu` when it should take `arrays`, else None."""
    if name is None or _forced_generic or _gpu_failure is not None:
        return None
    present = [a for a in arrays if a is not None]
    if not present or any(isinstance(a, np.ndarray) for a in present):
        return None  # NumPy arrays: decided without loading numba.cuda
    from . import gpu

    return getattr(gpu, name) if gpu.use_gpu_kernels_for(*present) else None


def _gpu_failed(exc: Exception) -> None:
    """Stop using the GPU kernels in this process, saying why once."""
    global _gpu_failure
    _gpu_failure = str(exc)
    warnings.warn(
        f"minigrad's GPU kernels are unavailable: {_gpu_failure}. It uses its slower generic CuPy kernels "
        "(col2im, pooling, LRN, the SGD update) for the rest of this process.",
        RuntimeWarning,
        stacklevel=4,
    )


def fastest(
    numba_version: Callable[..., T] | None,
    generic_version: Callable[..., T],
    *args: Any,
    arrays: tuple[Any, ...],
    gpu: str | None = None,
    **kwargs: Any,
) -> T:
    """The kernel's result from its fastest version that can take `arrays` (the first decides the dtype).

    For CuPy arrays, the GPU twin named `gpu` in `minigrad.kernels.gpu` (same signature) while the GPU
    kernels run here (`use_gpu_kernels_for`); for NumPy float32/float64 arrays numba_version(*args, **kwargs)
    while Numba is usable (`use_numba_for`); else generic_version(*args, **kwargs). Also the generic one when
    the GPU or Numba version finds its compiler broken (it has warned once). All give the same result.
    `numba_version=None` / `gpu=None`: this call cannot use Numba / a GPU kernel. None in `arrays` (an
    `out` not given) is skipped.
    """
    gpu_version = _gpu_version(gpu, arrays)
    if gpu_version is not None:
        from .gpu import GpuKernelsUnavailable

        try:
            return gpu_version(*args, **kwargs)
        except GpuKernelsUnavailable as exc:
            _gpu_failed(exc)  # the generic version gives the same answer
    if numba_version is not None and use_numba_for(*arrays):
        try:
            return numba_version(*args, **kwargs)
        except NumbaUnavailable:
            pass  # already warned once; the generic version gives the same answer
    return generic_version(*args, **kwargs)


def check_dtype(array: np.ndarray) -> None:
    """The Numba kernels are compiled for float32 and float64 only; refuse others before compiling anything."""
    if array.dtype not in NUMBA_DTYPES:
        raise TypeError(f"the Numba kernels take float32 or float64 arrays, not {array.dtype}")


def run(kernel: Callable[..., None], *args: Any, over: int) -> None:
    """kernel(*args, start, stop) for the parts [start, stop) of range(over), one part per core, in parallel.

    If the kernel fails to compile or run, switch Numba off for good and raise NumbaUnavailable. The callers
    validate shapes and allocate the outputs before calling, so an exception in here means Numba itself is
    broken (not a user error) and the generic path will give the right answer.
    """
    global _failure
    if _failure is not None:
        _warn_once()
        raise NumbaUnavailable(f"Numba is unavailable: {_failure}")
    largest = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
    # Waking another thread costs more than a small kernel's whole work: small inputs run in this thread.
    workers = 1 if largest < SERIAL_BELOW else cpu_cores()
    try:
        split_over_cores(over, lambda start, stop: kernel(*args, start, stop), workers)
    except MemoryError:
        raise  # the generic path would need even more memory; this is not Numba's fault
    except Exception as exc:
        _failure = f"a kernel failed to compile or run ({type(exc).__name__}: {exc})"
        _warn_once()
        raise NumbaUnavailable(f"Numba is unavailable: {_failure}") from exc


# ----------------------------------------------------------------------------- compiling the kernels


_kernel_ops: dict[Any, str] = {}  # compiled kernel -> the op it serves, for the compile notice


def cpu_kernel(op: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: compile a loop as a Numba kernel of `op` (named in the compile notice).

    The loop's last two arguments are the (start, stop) of its outer dimension that `run` hands it; it
    runs without the GIL, so the parts run on several threads at once. Without fastmath every operation
    rounds as the generic version's; with NumPy's error model a division by zero gives inf or NaN as in the
    generic version, and the loops carry no zero checks. Without Numba the function stays plain Python,
    which `run` never calls.
    """

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        if numba is None:
            return function
        kernel = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")(function)
        _kernel_ops[kernel] = op
        return kernel

    return decorate


def cpu_helper(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: compile a function that kernels call (serial; LLVM inlines it into the kernel)."""
    return function if numba is None else numba.njit(cache=True, fastmath=False, error_model="numpy")(function)


_notice_lock = threading.Lock()
_notice_shown = False
_notice_enabled = True


def show_compile_notice(enabled: bool = True) -> None:
    """Whether minigrad says on stderr when it compiles its CPU kernels (MINIGRAD_QUIET=1 silences it too)."""
    global _notice_enabled
    _notice_enabled = bool(enabled)


def _announce_compile(dispatcher: Any) -> None:
    """One line on stderr, once per process, when one of minigrad's kernels is compiled (not loaded)."""
    global _notice_shown
    op = _kernel_ops.get(dispatcher)
    if op is None or not _notice_enabled or _env_flag("MINIGRAD_QUIET"):
        return  # a helper inside a kernel already announced, someone else's Numba code, or silenced
    with _notice_lock:
        if _notice_shown:
            return
        _notice_shown = True
    print(
        f"minigrad: compiling the CPU kernels with Numba, starting with {op} "
        "(first use on this machine, cached afterwards)...",
        file=sys.stderr,
        flush=True,
    )


if numba_event is not None:

    class _CompileListener(numba_event.Listener):
        """Numba broadcasts "numba:compile" only when it compiles: a load from the on-disk cache is silent."""

        def on_start(self, event: Any) -> None:
            _announce_compile(event.data["dispatcher"])

        def on_end(self, event: Any) -> None:
            pass

    numba_event.register("numba:compile", _CompileListener())
