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
BLAS, and its compiled loops are serial (`nogil=True`), run on this module's helper threads, which
wait for work on a queue (asleep, not spinning).

`split_over_cores(count, body)` runs body(lo, hi) on contiguous parts of range(count), one part per core.
How many cores: `cpu_gemm_threads()`, the BLAS's own thread count (so OPENBLAS_NUM_THREADS or
threadpoolctl's `threadpool_limits` set minigrad's too). It needs threadpoolctl to switch the BLAS to one
thread (NumPy's matmul lets go of the GIL while it runs); where threadpoolctl cannot see or set the BLAS,
products are not split, and the compiled loops use the usable cores (`cpu_cores()`).
"""

from __future__ import annotations

import contextvars
import itertools
import os
import queue
import threading
from collections.abc import Callable
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
_inboxes: list[queue.SimpleQueue] = []  # one a helper thread: the parts it is to run
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
    workers, inside a part of another split (the helper threads are busy with that one), or when no helper
    thread can start (the interpreter is exiting).
    """
    workers = cpu_gemm_threads() if workers is None else workers
    if workers < 2 or count < workers or in_split_section():
        return [body(0, count)]
    parts = _parts(count, workers)
    helpers = _helpers(len(parts) - 1)
    if helpers is None:
        return [body(0, count)]
    _enter_one_thread_blas(_blas_controller())
    try:
        finished: queue.SimpleQueue = queue.SimpleQueue()
        for index, (helper, (lo, hi)) in enumerate(zip(helpers, parts[1:]), start=1):
            # in a copy of the caller's context: NumPy's errstate (a context variable) holds in the part too
            helper.put((contextvars.copy_context(), body, lo, hi, index, finished))
        outcomes: list[tuple[int, bool, Any]] = []
        try:
            _this_thread.in_part = True  # this thread takes the first part rather than wait idle
            outcomes.append((0, True, body(*parts[0])))
        except BaseException as error:  # the others still write their outputs: wait for them all the same
            outcomes.append((0, False, error))
        finally:
            _this_thread.in_part = False
            outcomes.extend(finished.get() for _ in parts[1:])
        return _results_in_part_order(outcomes)
    finally:
        _leave_one_thread_blas()


def _results_in_part_order(outcomes: list[tuple[int, bool, Any]]) -> list:
    """The parts' results by part index; the first part's error (in part order) is raised, if any failed."""
    outcomes.sort(key=lambda outcome: outcome[0])
    for _, succeeded, value in outcomes:
        if not succeeded:
            raise value
    return [value for _, _, value in outcomes]


def _help_forever(inbox: queue.SimpleQueue) -> None:
    """A helper thread: run each part put in its inbox, and report (index, succeeded, result or error)."""
    _this_thread.in_part = True  # a split inside a part runs inline: the other helpers may be busy
    while True:
        context, body, lo, hi, index, finished = inbox.get()  # asleep until there is work
        try:
            finished.put((index, True, context.run(body, lo, hi)))
        except BaseException as error:
            finished.put((index, False, error))
        del context, body, finished  # the section's objects are not kept alive by an idle helper


def _helpers(count: int) -> list[queue.SimpleQueue] | None:
    """The inboxes of `count` helper threads, started on first need; None if a thread cannot start."""
    with _lock:
        try:
            while len(_inboxes) < count:
                inbox: queue.SimpleQueue = queue.SimpleQueue()
                name = f"minigrad-cpu-{len(_inboxes)}"
                threading.Thread(target=_help_forever, args=(inbox,), name=name, daemon=True).start()
                _inboxes.append(inbox)
        except RuntimeError:  # "can't create new thread": the interpreter is exiting
            return None
        return _inboxes[:count]


def _enter_one_thread_blas(controller: Any) -> None:
    """Switch the BLAS to one thread, unless a section open in another thread already did."""
    global _active, _blas_threads_outside
    with _lock:
        if _active == 0 and controller is not None:
            # threadpoolctl's own limiter costs more than the small parts it would guard: set the counts directly
            _blas_threads_outside = [lib.num_threads for lib in controller.lib_controllers]
            for lib in controller.lib_controllers:
                lib.set_num_threads(1)
        _active += 1


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
    # A forked child has none of the parent's threads: it starts helpers of its own when it needs them, and
    # gets back the BLAS threads of a section the parent had open.
    global _inboxes, _active, _lock
    try:
        _restore_blas_threads()
    except Exception:  # a child must start even if threadpoolctl fails here; it only costs speed
        pass
    _inboxes, _active, _lock = [], 0, threading.Lock()
    _this_thread.in_part = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)
