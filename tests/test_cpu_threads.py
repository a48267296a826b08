"""split_over_cores: independent loop parts on several threads, the BLAS single-threaded meanwhile; how many
cores minigrad's CPU ops use (cpu_gemm_threads for products, cpu_cores for the compiled loops)."""

import os
import sys
import threading
import time

import numpy as np
import pytest

from minigrad.kernels import cpu_threads
from minigrad.kernels.cpu_threads import _parts, cpu_cores, cpu_gemm_threads, split_over_cores


def blas_thread_counts() -> list[int]:
    controller = cpu_threads._blas_controller()
    return [] if controller is None else [lib.num_threads for lib in controller.lib_controllers]


needs_blas_control = pytest.mark.skipif(
    not blas_thread_counts(), reason="threadpoolctl cannot see this NumPy's BLAS: nothing to switch"
)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 8, 33])
def test_parts_cover_the_range_once_in_order_and_differ_by_at_most_one(count, workers):
    parts = _parts(count, workers)
    covered = [i for lo, hi in parts for i in range(lo, hi)]
    assert covered == list(range(count))
    sizes = [hi - lo for lo, hi in parts]
    assert all(size > 0 for size in sizes) and len(parts) == min(count, workers)
    assert not sizes or max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("count", [4, 5, 9])
def test_every_index_runs_once_and_results_come_back_in_part_order(count, workers):
    seen, lock = [], threading.Lock()
    all_parts_running = threading.Barrier(workers)  # passed only if the parts run at the same time

    def body(lo: int, hi: int) -> tuple[int, int, int]:
        with lock:
            seen.extend(range(lo, hi))
        all_parts_running.wait(timeout=30)
        return lo, hi, threading.get_ident()

    results = split_over_cores(count, body, workers)
    assert sorted(seen) == list(range(count))
    assert [(lo, hi) for lo, hi, _ in results] == _parts(count, workers)
    assert results[0][2] == threading.get_ident()  # the caller takes the first part
    assert len({ident for _, _, ident in results}) == workers  # each part on its own thread


@pytest.mark.parametrize("workers, count", [(1, 5), (2, 1), (4, 3), (3, 0)])
def test_one_worker_or_too_few_iterations_is_one_call_in_this_thread(workers, count):
    calls = []
    results = split_over_cores(count, lambda lo, hi: calls.append((lo, hi, threading.get_ident())) or "done", workers)
    assert results == ["done"] and calls == [(0, count, threading.get_ident())]


@needs_blas_control
def test_the_blas_runs_one_thread_inside_the_parts_and_is_restored_after():
    before = blas_thread_counts()
    inside = split_over_cores(4, lambda lo, hi: blas_thread_counts(), workers=2)
    assert inside == [[1] * len(before)] * 2
    assert blas_thread_counts() == before


@pytest.mark.parametrize("workers, failing_part", [(2, 0), (2, 1), (3, 0), (3, 1)])
def test_a_failing_part_raises_after_all_parts_ended_and_the_blas_is_restored(workers, failing_part):
    before, finished = blas_thread_counts(), []
    parts = _parts(6, workers)

    def body(lo: int, hi: int) -> None:
        if lo == parts[failing_part][0]:
            raise ValueError(f"part {failing_part} failed")
        if lo == parts[-1][0]:
            time.sleep(0.2)  # the last part is still writing when the failing one has failed
        finished.append(lo)

    with pytest.raises(ValueError, match=f"part {failing_part} failed"):
        split_over_cores(6, body, workers)
    assert len(finished) == workers - 1  # every other part ran to its end before the error came out
    assert blas_thread_counts() == before and cpu_threads._active == 0


def test_a_split_inside_a_part_runs_inline_instead_of_waiting_for_the_busy_pool():
    outcome = []

    def outer(lo: int, hi: int) -> list:
        assert cpu_threads.in_split_section()
        return split_over_cores(4, lambda a, b: (a, b, threading.get_ident()), workers=2)

    thread = threading.Thread(target=lambda: outcome.append(split_over_cores(4, outer, workers=2)))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "a nested split deadlocked"
    (results,) = outcome
    assert [[part[:2] for part in inner] for inner in results] == [[(0, 4)], [(0, 4)]]
    assert not cpu_threads.in_split_section() and cpu_threads._active == 0


def test_no_helper_thread_able_to_start_means_one_call_in_this_thread(monkeypatch):
    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")  # as while the interpreter exits

    before = blas_thread_counts()
    monkeypatch.setattr(cpu_threads, "_inboxes", [])
    monkeypatch.setattr(threading.Thread, "start", refuse)
    calls = []
    assert split_over_cores(4, lambda lo, hi: calls.append((lo, hi)) or len(calls), workers=2) == [1]
    assert calls == [(0, 4)] and blas_thread_counts() == before and cpu_threads._active == 0


def test_a_helper_keeps_serving_after_a_part_raised_an_exception_that_is_not_an_error():
    def body(lo: int, hi: int) -> int:
        if lo > 0:
            raise KeyboardInterrupt  # not an Exception: it must still reach the caller, the helper survives
        return lo

    with pytest.raises(KeyboardInterrupt):
        split_over_cores(4, body, workers=2)
    assert split_over_cores(4, lambda lo, hi: hi - lo, workers=2) == [2, 2]


@needs_blas_control
def test_sections_from_two_threads_at_once_restore_the_blas_when_the_last_ends():
    before, barrier, errors = blas_thread_counts(), threading.Barrier(2), []

    def section() -> None:
        try:
            for _ in range(20):
                split_over_cores(4, lambda lo, hi: barrier.wait(timeout=10) if lo == 0 else None, workers=2)
        except Exception as error:  # surfaced below: an assert in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=section) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and blas_thread_counts() == before and cpu_threads._active == 0


@pytest.mark.parametrize("workers", [2, 3])
def test_matrix_products_split_over_threads_equal_the_serial_ones(workers):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 40, 50), dtype=np.float32)
    b = rng.standard_normal((6, 50, 30), dtype=np.float32)
    out = np.empty((6, 40, 30), dtype=np.float32)

    def products(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            np.matmul(a[i], b[i], out=out[i])

    split_over_cores(6, products, workers)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


def test_without_a_controllable_blas_there_is_one_worker_and_explicit_splits_still_work(monkeypatch):
    monkeypatch.setattr(cpu_threads, "_controller", None)
    monkeypatch.setattr(cpu_threads, "_controller_found", True)
    assert cpu_gemm_threads() == 1
    assert split_over_cores(3, lambda lo, hi: hi - lo, workers=3) == [1, 1, 1]


def test_cpu_gemm_threads_is_the_blas_thread_count():
    counts = blas_thread_counts()
    assert cpu_gemm_threads() == (min(counts) if counts else 1)


@needs_blas_control
def test_inside_a_section_the_core_counts_are_those_outside_it_not_the_one_thread_blas():
    """Another thread asking while a section is open (or a part itself) gets the counts minigrad splits over."""
    outside = (cpu_gemm_threads(), cpu_cores())
    inside = split_over_cores(4, lambda lo, hi: (blas_thread_counts(), cpu_gemm_threads(), cpu_cores()), workers=2)
    assert all(counts == [1] * len(counts) and (gemm, loops) == outside for counts, gemm, loops in inside)


def test_without_a_controllable_blas_the_compiled_loops_use_the_usable_cores(monkeypatch):
    monkeypatch.setattr(cpu_threads, "_controller", None)
    monkeypatch.setattr(cpu_threads, "_controller_found", True)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpu_gemm_threads() == 1 and cpu_cores() == usable


@pytest.mark.parametrize("setting", ["ignore", "raise"])
def test_the_parts_run_under_the_callers_numpy_errstate(setting):
    """NumPy's errstate is a context variable: each part runs in a copy of the caller's context."""
    with np.errstate(over=setting):
        seen = split_over_cores(4, lambda lo, hi: np.geterr()["over"], workers=2)
    assert seen == [setting, setting]
    assert split_over_cores(4, lambda lo, hi: np.geterr()["over"], workers=2) == [np.geterr()["over"]] * 2


@needs_blas_control
@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork (Linux)")
def test_a_child_forked_during_a_section_gets_the_blas_threads_back():
    before = blas_thread_counts()

    def body(lo: int, hi: int) -> int:
        if lo > 0:
            return 0
        pid = os.fork()  # in the calling thread's part, while the BLAS runs one thread
        if pid == 0:
            os._exit(0 if blas_thread_counts() == before and cpu_gemm_threads() == min(before) else 1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert split_over_cores(2, body, workers=2)[0] == 0


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork (Linux)")
def test_a_forked_child_starts_its_own_threads():
    split_over_cores(4, lambda lo, hi: None, workers=2)  # the parent has a pool now
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool threads do not exist here
        try:
            ok = split_over_cores(4, lambda lo, hi: threading.get_ident(), workers=2)
            os._exit(0 if len(set(ok)) == 2 and cpu_threads._active == 0 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
