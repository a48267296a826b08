"""minigrad's own CPU threads: a loop of independent parts on all cores, the BLAS on one thread meanwhile.

Every CPU op of minigrad that has work for several cores splits it here, and nowhere else:
- the matrix products of conv2d and linear/matmul, in blocks of rows, columns or images, one block per
  core, each on a one-thread BLAS (`conv_cpu.py`, `matmul_cpu.py`);
- the compiled Numba loops (im2col, col2im, max-pool, LRN, the SGD update), each part a range of the
  loop's outer dimension (`dispatch.run`).

Why not let the libraries thread themselves: OpenBLAS's worker threads and an OpenMP runtime's (which
Numba's `parallel=True` would use) keep spinning on their cores for a while after each product or loop
before they sleep. On a machine with few cores they take the core that the next product or loop needs.
OpenBLAS only reads its timeout when NumPy loads it, so no setting made by a library that is imported after
NumPy can shorten the spin. Products that never wake those workers avoid it: minigrad's run on a one-thread
BLAS, and its compiled loops are serial (`nogil=True`), run on the threads of this module's pool, which
wait for work on a queue (asleep, not spinning).

`split_over_cores(count, body)` runs body(lo, hi) on contiguous parts of range(count), one part per core.
How many cores: `cpu_gemm_threads()`, the BLAS's own thread count (so OPENBLAS_NUM_THREADS or
threadpoolctl's `threadpool_limits` set minigrad's too). It needs threadpoolctl to switch the BLAS to one
thread (NumPy's matmul lets go of the GIL while it runs); where threadpoolctl cannot see or set the BLAS,
products are not split, and the compiled loops use the usable cores (`cpu_cores()`).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

try:
    import threadpoolctl
except ImportError:  # without it products are not split (the compiled loops still are); all still works
    threadpoolctl = None

T = TypeVar("T")

_lock = threading.Lock()
_this_thread = threading.local()  # .in_part: this thread runs a part of a split now
_controller: Any = None  # threadpoolctl's handle on the BLAS libraries, found on first use
_controller_found = False
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_active = 0  # sections running now, from any thread: the first sets the BLAS to one thread, the last restores it
_blas_threads_outside: list[int] | None = None  # each BLAS library's thread count while a section is open


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries, or None. Looked up once (NumPy is loaded by then)."""
    global _controller, _controller_found
    with _lock:
        if not _controller_found:
            _controller_found = True
            if threadpoolctl is not None:
                try:
                    controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
                except Exception:  # a library threadpoolctl cannot read must not break a convolution
                    controller = None
                if controller is not None and len(controller.lib_controllers) > 0:
                    _controller = controller
        return _controller


def cpu_gemm_threads() -> int:
    """How many cores minigrad splits a matrix product over: the BLAS's thread count outside minigrad's
    sections (inside one the BLAS runs one thread); 1 where minigrad cannot switch the BLAS to one thread."""
    controller = _blas_controller()
    if controller is None:
        return 1
    counts = _blas_threads_outside or [lib.num_threads for lib in controller.lib_controllers]
    counts = [count for count in counts if isinstance(count, int)]
    return max(1, min(counts)) if counts else 1


def cpu_cores() -> int:
    """How many parts a compiled loop is split into: cpu_gemm_threads() where minigrad controls the BLAS
    (one setting for both), else the cores this process may run on."""
    if _blas_controller() is not None:
        return cpu_gemm_threads()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parts(count: int, workers: int) -> list[tuple[int, int]]:
    """range(count) cut into `workers` contiguous parts whose sizes differ by at most one."""
    bounds = [count * k // workers for k in range(workers + 1)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def in_split_section() -> bool:
    """True in a thread that runs a part of split_over_cores now (there a nested split runs inline)."""
    return getattr(_this_thread, "in_part", False)


def split_over_cores(count: int, body: Callable[[int, int], T], workers: int | None = None) -> list[T]:
    """Run body(lo, hi) for contiguous parts of range(count), one part per thread, in parallel.

    `workers` parts (default: cpu_gemm_threads()), and the BLAS runs single-threaded until all are done, so
    each part's matrix products get one core. That holds for the whole process: other threads' products
    run on one thread too while a section is open. Every part runs in the caller's context (NumPy's
    `errstate`, other context variables). body must only write what its part owns; its results
    come back in part order, and nothing returns or raises before every part has ended. It is one call
    body(0, count) in this thread, with the BLAS as it was, with fewer than 2 workers, fewer iterations than
    workers, inside a part of another split (the pool's threads are busy with that one), or when the pool
    takes no more work (the interpreter is exiting).
    """
    workers = cpu_gemm_threads() if workers is None else workers
    if workers < 2 or count < workers or in_split_section():
        return [body(0, count)]
    parts = _parts(count, workers)
    futures = _start_with_one_thread_blas(body, parts[1:], _blas_controller())
    if futures is None:
        return [body(0, count)]
    try:
        try:
            first = _run_part(body, *parts[0])  # this thread takes the first part rather than wait idle
        finally:  # even when it failed: the others still write their outputs and use the one-thread BLAS
            concurrent.futures.wait(futures)
        return [first, *(future.result() for future in futures)]
    finally:
        _leave_one_thread_blas()


def _run_part(body: Callable[[int, int], T], lo: int, hi: int) -> T:
    _this_thread.in_part = True
    try:
        return body(lo, hi)
    finally:
        _this_thread.in_part = False


def _start_with_one_thread_blas(
    body: Callable[[int, int], T], parts: list[tuple[int, int]], controller: Any
) -> list[concurrent.futures.Future] | None:
    """Switch the BLAS to one thread (unless a section already did) and start body on `parts` in the pool.

    None (and nothing changed) when the pool refuses work.
    """
    global _active, _blas_threads_outside, _pool, _pool_size
    with _lock:
        if _pool_size < len(parts):
            if _pool is not None:
                _pool.shutdown(wait=False)  # its threads end after the parts they run, if any
            _pool, _pool_size = ThreadPoolExecutor(len(parts), thread_name_prefix="minigrad-cpu"), len(parts)
        pool = _pool
        if _active == 0 and controller is not None:
            # threadpoolctl's own limiter costs more than the small parts it would guard: set the counts directly
            _blas_threads_outside = [lib.num_threads for lib in controller.lib_controllers]
            for lib in controller.lib_controllers:
                lib.set_num_threads(1)
        _active += 1
    futures: list[concurrent.futures.Future] = []
    try:
        for lo, hi in parts:
            # in a copy of the caller's context: NumPy's errstate (a context variable) holds in the part too
            futures.append(pool.submit(contextvars.copy_context().run, _run_part, body, lo, hi))
    except BaseException as error:
        # RuntimeError: the interpreter is exiting, or another thread just replaced the pool by a larger one
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)
        _leave_one_thread_blas()
        if isinstance(error, RuntimeError):
            return None
        raise
    return futures


def _restore_blas_threads() -> None:
    global _blas_threads_outside
    counts, _blas_threads_outside = _blas_threads_outside, None
    if counts is not None:
        for lib, count in zip(_controller.lib_controllers, counts):
            lib.set_num_threads(count)


def _leave_one_thread_blas() -> None:
    global _active
    with _lock:
        _active -= 1
        if _active == 0:
            _restore_blas_threads()


def _forget_threads_after_fork() -> None:
    # A forked child has none of the parent's threads: it starts a pool of its own when it needs one, and
    # gets back the BLAS threads of a section the parent had open.
    global _pool, _pool_size, _active, _lock
    try:
        _restore_blas_threads()
    except Exception:  # a child must start even if threadpoolctl fails here; it only costs speed
        pass
    _pool, _pool_size, _active, _lock = None, 0, 0, threading.Lock()
    _this_thread.in_part = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)
