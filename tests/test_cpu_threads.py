"""split_over_cores: independent loop parts on several threads, the BLAS single-threaded meanwhile."""

import os
import sys
import threading

import numpy as np
import pytest

import minigrad  # noqa: F401  (its thread settings come before NumPy's)
from minigrad.kernels import cpu_threads
from minigrad.kernels.cpu_threads import _parts, cpu_gemm_threads, split_over_cores


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


@needs_blas_control
@pytest.mark.parametrize("failing_part", [0, 1])
def test_a_failing_part_raises_after_all_parts_ended_and_the_blas_is_restored(failing_part):
    before, finished = blas_thread_counts(), []

    def body(lo: int, hi: int) -> None:
        if lo == _parts(4, 2)[failing_part][0]:
            raise ValueError(f"part {failing_part} failed")
        finished.append(lo)

    with pytest.raises(ValueError, match=f"part {failing_part} failed"):
        split_over_cores(4, body, workers=2)
    assert len(finished) == 1  # the other part ran to its end before the error came out
    assert blas_thread_counts() == before and cpu_threads._active == 0


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
