"""Data parallelism (`minigrad.distributed`): with one process everything is a no-op; under `mpiexec -n 2` the
gradients are averaged, the weights broadcast, N ranks take the steps one process takes, and a failure on any
rank ends the whole job within seconds.

The multi-process tests start the scripts in tests/mpi/ with the mpiexec next to this Python (the
`distributed` extra: mpi4py + MPICH) and check what they write; they are skipped, saying why, without it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import real_gpu_unavailable_reason, to_host

from minigrad import backend
from minigrad import distributed as dist
from minigrad.nn import Linear, Parameter
from minigrad.tensor import Tensor

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mpi"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
JOB_TIMEOUT_S = 60  # a hung job fails its test instead of hanging the suite
FAILURE_ENDS_WITHIN_S = 15  # each failure ends its job in about a second when the machine is idle

# the rows per dtype that must come back exactly, and the tolerance of a reduction against NumPy's
TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-14}


def mpi_unavailable_reason() -> str | None:
    if not MPIEXEC.exists():
        return f"no mpiexec next to {sys.executable}: pip install -e '.[distributed]'"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed: pip install -e '.[distributed]'"
    return None


needs_mpi = pytest.mark.skipif(mpi_unavailable_reason() is not None, reason=str(mpi_unavailable_reason()))


def run_job(script: str, *args: str, ranks: int | None = 2) -> tuple[subprocess.CompletedProcess, float]:
    """Run tests/mpi/<script> under `mpiexec -n ranks` (ranks=None: as one plain process); (result, seconds).

    The children import this checkout's minigrad and run one BLAS/OpenMP thread each (small models: two ranks
    on a 2-core machine must not fight over the cores). MPIEXEC_TIMEOUT makes hydra end a hung job itself.
    """
    env = {k: v for k, v in os.environ.items() if k not in dist.LAUNCHER_SIZE_VARIABLES}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        MPIEXEC_TIMEOUT=str(JOB_TIMEOUT_S),
    )
    command = [sys.executable, str(SCRIPTS / script), *args]
    if ranks is not None:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # hydra passes Ctrl-C on to the ranks and cleans up
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{script} {args} did not end within {JOB_TIMEOUT_S + 10} s:\n{err[-3000:]}")
    result = subprocess.CompletedProcess(command, proc.returncode, out, err)
    return result, time.perf_counter() - start


def run_ok(script: str, *args: str, ranks: int | None = 2) -> None:
    result, _ = run_job(script, *args, ranks=ranks)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}"


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"mpi_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- one process: no-ops


def test_the_world_of_one_process_is_rank_0_of_1() -> None:
    world = dist.world()
    assert (world.rank, world.size, world.local_rank, world.local_size) == (0, 1, 0, 1)
    assert world.backend is None and world.is_root and world.device == "cpu"


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, None),
        ({"PMI_RANK": "0", "PMI_SIZE": "4"}, 4),  # MPICH / Intel MPI hydra, Slurm PMI-2
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, 2),  # Open MPI
        ({"PMI_SIZE": "1"}, 1),
    ],
)
def test_launcher_size_comes_from_the_launchers_variables(environ: dict[str, str], expected: int | None) -> None:
    assert dist.launcher_size(environ) == expected


@pytest.mark.parametrize("environ", [{}, {"PMI_SIZE": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"}])
def test_without_a_launcher_of_several_processes_mpi_is_never_imported(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # any `import mpi4py` now raises ImportError
    assert dist.detect_world(environ) == dist.World()


def test_several_processes_without_mpi4py_is_an_error_not_n_separate_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match=r"started 2 processes but mpi4py is missing.*distributed"):
        dist.detect_world({"PMI_SIZE": "2"})


def test_one_process_collectives_change_nothing(device: str) -> None:
    model = Linear(3, 2).to(device)
    model.weight.grad = Tensor(model.weight.data * 2)
    grad_before, weight_before = model.weight.grad, model.weight.data
    dist.all_reduce_gradients(model)
    dist.all_reduce_gradients_plain(model)
    dist.broadcast_parameters(model)
    dist.barrier()
    assert model.weight.grad is grad_before and model.bias.grad is None
    assert model.weight.data is weight_before
    counts = model.weight.xp.asarray(np.array([3, 4]))
    summed = dist.all_reduce_sum(counts)
    assert summed is not counts and to_host(summed).tolist() == [3, 4]
    assert dist.all_reduce_sum(5).item() == 5


def test_one_process_abort_prints_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dist.abort("out of memory", code=7)
    assert exit_info.value.code == 7
    assert capsys.readouterr().err == "out of memory\n"


def test_one_process_errors_propagate_through_abort_on_error() -> None:
    with pytest.raises(ZeroDivisionError), dist.abort_on_error():
        _ = 1 / 0
    hook = sys.excepthook
    dist.install_abort_on_error()  # one process: Python's hook stays
    assert sys.excepthook is hook


# ----------------------------------------------------------------------------- sharding


def shard_by_loop(n_global: int, size: int) -> list[list[int]]:
    """Reference: deal the larger shares first, then hand out rows in order."""
    sizes = [n_global // size + (1 if r < n_global % size else 0) for r in range(size)]
    rows, shares = iter(range(n_global)), []
    for n in sizes:
        shares.append([next(rows) for _ in range(n)])
    return shares


@pytest.mark.parametrize("n_global, size", [(12, 2), (13, 2), (10, 3), (128, 8), (2, 4), (0, 3), (7, 1)])
def test_shard_gives_contiguous_shares_that_cover_the_batch_once(n_global: int, size: int) -> None:
    shares = [list(range(n_global))[dist.shard(n_global, rank, size)] for rank in range(size)]
    assert shares == shard_by_loop(n_global, size)
    assert sorted(i for share in shares for i in share) == list(range(n_global))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("n_global, rank, size", [(10, 3, 3), (10, -1, 3), (10, 0, 0), (-1, 0, 2)])
def test_shard_rejects_a_rank_outside_the_world(n_global: int, rank: int, size: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        dist.shard(n_global, rank, size)


# ----------------------------------------------------------------------------- the flat buffer, in one process


class SumOfTwoEqualRanks(dist.Alone):
    """The collective of two ranks that hold the same arrays: a sum doubles them."""

    def sum_(self, array: Any) -> None:
        array += array


def parameters_with_gradients(device: str) -> list[Parameter]:
    """float32 and float64 parameters (two buckets); one without a gradient, one frozen."""
    rng = np.random.default_rng(0)
    dtypes = [np.float32, np.float64, np.float32, np.float32, np.float64]
    shapes = [(3, 4), (5,), (2, 2, 3), (6,), (1,)]
    params = [Parameter(rng.standard_normal(s).astype(t)).to(device) for s, t in zip(shapes, dtypes)]
    for p in params:
        p.grad = Tensor(rng.standard_normal(p.shape).astype(p.dtype), device=device)
    params[3].grad = None
    params[4].requires_grad = False
    return params


def test_plan_buckets_groups_by_dtype_in_order() -> None:
    params = parameters_with_gradients("cpu")
    buckets = dist.plan_buckets(dist.trainable_parameters(params))
    assert [(b.dtype, b.members, b.offsets, b.sizes) for b in buckets] == [
        (np.dtype(np.float32), (0, 2, 3), (0, 12, 24), (12, 12, 6)),
        (np.dtype(np.float64), (1,), (0,), (5,)),
    ]
    assert [(b.flags_at, b.size) for b in buckets] == [(30, 33), (5, 6)]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_pack_lays_out_scaled_gradients_then_flags(xp: Any, device: str, scale: float) -> None:
    params = dist.trainable_parameters(parameters_with_gradients(device))
    bucket = dist.plan_buckets(params)[0]
    flat = dist.pack(bucket, params, scale=scale)
    grads = [to_host(params[i].grad.data).ravel() * np.float32(scale) for i in (0, 2)]
    expected = np.concatenate([*grads, np.zeros(6, np.float32), [1, 1, 0]]).astype(np.float32)
    assert isinstance(flat, xp.ndarray) and flat.dtype == np.float32
    np.testing.assert_array_equal(to_host(flat), expected)


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("reduce", [dist.all_reduce_gradients, dist.all_reduce_gradients_plain])
def test_reduction_of_two_equal_ranks(device: str, reduce: Any, average: bool) -> None:
    params = parameters_with_gradients(device)
    before = [None if p.grad is None else to_host(p.grad.data).copy() for p in params]
    world = dist.World(rank=0, size=2, backend="test", collective=SumOfTwoEqualRanks())
    reduce(params, average=average, world=world)
    for p, g in zip(params, before):
        if g is None:
            assert p.grad is None  # no rank had one: it stays None, as in one process
            continue
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype and p.grad.device == p.device
        reduced = g if average or not p.requires_grad else 2 * g  # a frozen parameter is left alone
        np.testing.assert_array_equal(to_host(p.grad.data), reduced)


def test_each_call_makes_its_own_buffer() -> None:
    params = parameters_with_gradients("cpu")
    world = dist.World(size=2, backend="test", collective=SumOfTwoEqualRanks())
    dist.all_reduce_gradients(params, world=world)
    first = params[0].grad.data
    kept = first.copy()
    dist.all_reduce_gradients(params, world=world)
    assert not np.shares_memory(first, params[0].grad.data)
    np.testing.assert_array_equal(first, kept)


def test_setup_on_the_cpu_is_the_world() -> None:
    assert dist.setup("cpu") is dist.world()


def test_setup_of_one_process_on_a_gpu_only_chooses_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import strict_cupy

    monkeypatch.setattr(dist, "_world", None)  # this test's world; the module's comes back afterwards
    with backend.use_gpu_module(strict_cupy):
        world = dist.setup("gpu")
    assert world.device == "cuda:0" and world.backend is None and dist.world() is world


def test_gpu_index_is_the_local_rank_when_there_are_enough_gpus() -> None:
    assert [dist.gpu_index(r, 4, 8) for r in range(4)] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="2 ranks run on this machine but it shows 1 GPU"):
        dist.gpu_index(1, 2, 1)


def test_nccl_dtype_codes() -> None:
    nccl = SimpleNamespace(NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT64=4, NCCL_FLOAT16=6)
    assert [dist.nccl_dtype(nccl, t) for t in (np.float32, np.float64, np.int64, np.float16)] == [7, 8, 4, 6]
    with pytest.raises(TypeError, match="complex64"):
        dist.nccl_dtype(nccl, np.complex64)


def test_nccl_without_a_gpu_says_why() -> None:
    if real_gpu_unavailable_reason() is None:
        pytest.skip("a GPU is usable here: test_nccl_matches_mpi_on_a_gpu covers NCCL")
    with pytest.raises(RuntimeError, match="NCCL needs a usable GPU"):
        backend.nccl()


def test_nccl_collective_shares_rank_0s_id_and_leaves_host_arrays_to_mpi(monkeypatch: pytest.MonkeyPatch) -> None:
    import strict_cupy

    joined: list[tuple] = []
    fake_nccl = SimpleNamespace(
        get_unique_id=lambda: b"id of rank 0", NcclCommunicator=lambda *args: joined.append(args)
    )

    class Host(SumOfTwoEqualRanks):
        def broadcast_object(self, obj: Any, root: int = 0) -> Any:
            return b"id of rank 0"  # what rank 0 sent

    monkeypatch.setattr(backend, "nccl", lambda: fake_nccl)
    with backend.use_gpu_module(strict_cupy):
        collective = dist.NcclCollective(Host(), rank=1, size=2, device_index=0)
        counts = np.array([1, 2])
        collective.sum_(counts)
    assert joined == [(2, b"id of rank 0", 1)]
    assert counts.tolist() == [2, 4]


# ----------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("collectives")
    run_ok("collectives.py", str(out))
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


@needs_mpi
def test_two_ranks_see_their_world(two_ranks: list[dict[str, np.ndarray]]) -> None:
    assert [r["world"].tolist() for r in two_ranks] == [[0, 2, 0, 2], [1, 2, 1, 2]]  # rank, size, local


@needs_mpi
@pytest.mark.parametrize("kind", ["flat", "plain"])
def test_all_reduce_gives_every_rank_the_mean_gradient(two_ranks: list[dict[str, np.ndarray]], kind: str) -> None:
    rank0, rank1 = two_ranks
    for name in ("w", "b", "p_float64", "p_none_on_rank1"):
        g0 = rank0[f"in/{name}"]
        g1 = rank1.get(f"in/{name}", np.zeros_like(g0))  # rank 1 has no gradient for p_none_on_rank1
        expected = (g0.astype(np.float64) + g1) / 2
        for ranked in two_ranks:
            got = ranked[f"{kind}/{name}"]
            assert got.dtype == g0.dtype
            np.testing.assert_allclose(got, expected, rtol=TOLERANCE[got.dtype], atol=0)
            np.testing.assert_allclose(ranked[f"summed/{name}"], 2 * expected, rtol=TOLERANCE[got.dtype], atol=0)
    assert all(f"{kind}/p_none" not in ranked for ranked in two_ranks)  # no rank had one: None everywhere


@needs_mpi
def test_one_buffer_equals_the_plain_definition_exactly(two_ranks: list[dict[str, np.ndarray]]) -> None:
    for ranked in two_ranks:
        for name in ("w", "b", "p_float64", "p_none_on_rank1"):
            np.testing.assert_array_equal(ranked[f"flat/{name}"], ranked[f"plain/{name}"])  # a + b == b + a


@needs_mpi
def test_broadcast_gives_every_rank_rank_0s_weights(two_ranks: list[dict[str, np.ndarray]]) -> None:
    rank0_start = load_script("collectives").make_parameters(0)
    for name, p in rank0_start.items():
        for ranked in two_ranks:
            np.testing.assert_array_equal(ranked[f"weights/{name}"], p.numpy())


@needs_mpi
def test_all_reduce_sum_adds_the_counts_of_every_rank(two_ranks: list[dict[str, np.ndarray]]) -> None:
    assert [r["counts"].tolist() for r in two_ranks] == [[3, 20], [3, 20]]


@needs_mpi
def test_two_ranks_take_the_steps_of_one_process(tmp_path: Path) -> None:
    run_ok("sgd_steps.py", str(tmp_path), ranks=None)
    run_ok("sgd_steps.py", str(tmp_path), ranks=2)
    one, two = np.load(tmp_path / "weights_1.npz"), np.load(tmp_path / "weights_2.npz")
    assert sorted(one.keys()) == sorted(two.keys()) and len(one.keys()) == 8  # "mean" and "sum" runs
    for name in one:
        relative = np.abs(two[name] - one[name]).max() / np.abs(one[name]).max()
        assert relative < 1e-5, f"{name}: relative difference {relative:.2e}"


@needs_mpi
@pytest.mark.parametrize(
    "mode, code, message",
    [
        ("raise", 1, "RuntimeError: rank 1 failed on purpose: ending all 2 processes"),
        ("uncaught", 1, "RuntimeError: rank 1 failed on purpose: ending all 2 processes"),
        ("exit", 3, "exited with 3: ending all 2 processes"),
        ("sigint", 130, "interrupted (Ctrl-C): ending all 2 processes"),
        ("sigkill", None, None),  # nothing of ours runs: the launcher sees the death and ends the rest
    ],
)
def test_a_failure_on_one_rank_ends_the_whole_job(mode: str, code: int | None, message: str | None) -> None:
    result, seconds = run_job("crash.py", mode)
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code
        assert f"[rank 1 of 2] {message}" in result.stderr
    assert seconds < FAILURE_ENDS_WITHIN_S, f"the job took {seconds:.1f} s to end"


@pytest.mark.gpu
def test_nccl_matches_mpi_on_a_gpu(tmp_path: Path) -> None:
    reason = real_gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    run_ok("check_nccl.py", str(tmp_path), ranks=None)
    assert (tmp_path / "nccl_check.json").exists()
