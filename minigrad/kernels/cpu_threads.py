"""Independent matrix products on all CPU cores at once, one product per core.

OpenBLAS splits every product across the cores. That is the right thing for one large product, less so
for many medium ones with a small output: conv1's weight gradient, image by image, is a
(365, 3025) @ (3025, 96) product, and two threads splitting its (365, 96) output both pack all of the long
operands. Giving each core whole images instead, with the BLAS single-threaded meanwhile, makes each core
pack only its own images' operands (benchmarks/README.md has the measurements).

`split_over_cores(count, body)` does that for any loop whose iterations are independent. It needs
threadpoolctl to switch the BLAS to one thread (NumPy's matmul lets go of the GIL while it runs); where
threadpoolctl cannot see or set the BLAS, or the BLAS already runs one thread, it runs the loop as one
piece in the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

try:
    import threadpoolctl
except ImportError:  # an optional speed-up: everything works without it
    threadpoolctl = None

T = TypeVar("T")

_lock = threading.Lock()
_this_thread = threading.local()  # .in_part: this thread runs a part of a split now
_controller: Any = None  # threadpoolctl's handle on the BLAS libraries, found on first use
_controller_found = False
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_active = 0  # sections running now, from any thread: the first sets the BLAS to one thread, the last restores it
_limiter: Any = None


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
    """How many threads the CPU's BLAS runs one matrix product on; 1 where minigrad cannot change it."""
    controller = _blas_controller()
    if controller is None:
        return 1
    counts = [lib.num_threads for lib in controller.lib_controllers if isinstance(lib.num_threads, int)]
    return max(1, min(counts)) if counts else 1


def _parts(count: int, workers: int) -> list[tuple[int, int]]:
    """range(count) cut into `workers` contiguous parts whose sizes differ by at most one."""
    bounds = [count * k // workers for k in range(workers + 1)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def in_split_section() -> bool:
    """True in a thread that runs a part of split_over_cores now (there a nested split runs inline)."""
    return getattr(_this_thread, "in_part", False)


def split_over_cores(count: int, body: Callable[[int, int], T], workers: int | None = None) -> list[T]:
    """Run body(lo, hi) for contiguous parts of range(count), one part per thread, in parallel.

    `workers` parts (default: cpu_gemm_threads(), one per thread of the BLAS), and the BLAS runs
    single-threaded until all are done, so each part's matrix products get one core. That holds for the
    whole process: other threads' products run on one thread too while a section is open. body must only
    write what its part owns; its results come back in part order, and nothing returns or raises before
    every part has ended. It is one call body(0, count) in this thread, with the BLAS as it was, with
    fewer than 2 workers, fewer iterations than workers, inside a part of another split (the pool's
    threads are busy with that one), or when the pool takes no more work (the interpreter is exiting).
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
    global _active, _limiter, _pool, _pool_size
    with _lock:
        if _pool_size < len(parts):
            if _pool is not None:
                _pool.shutdown(wait=False)  # its threads end after the parts they run, if any
            _pool, _pool_size = ThreadPoolExecutor(len(parts), thread_name_prefix="minigrad-gemm"), len(parts)
        pool = _pool
        if _active == 0 and controller is not None:
            _limiter = controller.limit(limits=1)
        _active += 1
    futures: list[concurrent.futures.Future] = []
    try:
        for lo, hi in parts:
            futures.append(pool.submit(_run_part, body, lo, hi))
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


def _leave_one_thread_blas() -> None:
    global _active, _limiter
    with _lock:
        _active -= 1
        if _active == 0 and _limiter is not None:
            _limiter.restore_original_limits()
            _limiter = None


def _forget_threads_after_fork() -> None:
    # A forked child has none of the parent's threads: it starts a pool of its own when it needs one, and
    # gets back the BLAS threads of a section the parent had open.
    global _pool, _pool_size, _active, _limiter, _lock
    if _limiter is not None:
        try:
            _limiter.restore_original_limits()
        except Exception:  # a child must start even if threadpoolctl fails here; it only costs speed
            pass
    _pool, _pool_size, _active, _limiter, _lock = None, 0, 0, None, threading.Lock()
    _this_thread.in_part = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)
