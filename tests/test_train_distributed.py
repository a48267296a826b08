"""Training across processes (issue 18): `mpiexec -n 2 alexnet train` takes the steps of one process with the
same global batch, resumes a one-process checkpoint and the reverse, and ends the whole job when a rank dies.
Also the dropout change it relies on: a rank's rows of the global batch's mask.

The MPI tests run alexnet-tiny on a few batches of the bundled Fashion-MNIST subset, with dropout and
augmentation on; they skip (saying why) where mpiexec or mpi4py is missing. Every subprocess has a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from alexnet.checkpoint import load_checkpoint, split_prefix
from minigrad import backend, nn

MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(
    not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None,
    reason=f"needs mpiexec next to the Python ({MPIEXEC}) and mpi4py: pip install -e '.[distributed]'",
)
# A short run: 60 training images in global batches of 16 (16, 16, 16, 12), dropout and augmentation on. The
# modest learning rate keeps the comparison about the steps: the ranks add their partial sums in another order
# (differences of 1e-7), and at alexnet-tiny's 0.05 such a difference can flip a max-pool choice between two
# near-equal values within a few steps, which moves some weights by far more than 1e-5.
RUN = ["--model", "alexnet-tiny", "--data", "bundled", "--max-train-images", "60", "--val-size", "30",
       "--batch-size", "16", "--lr", "0.01", "--dropout", "0.5", "--augment", "--no-plots",
       "--no-progress"]  # fmt: skip
TIMEOUT = 240  # seconds: a hung job fails the test instead of CI


def to_host(a) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)


# ----------------------------------------------------------------------------- dropout on a share of a batch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_rows_of_a_global_batch_equal_the_rows_of_the_whole_batchs_mask(device, dtype):
    """Two ranks with rows 0:3 and 3:7 of a global batch of 7 drop exactly what one process drops."""
    x = mg.tensor(np.ones((7, 5), dtype), device=device)
    backend.manual_seed(3)
    whole = to_host(F.dropout(x, 0.4).data)
    parts = []
    for rows in (slice(0, 3), slice(3, 7)):
        backend.manual_seed(3)  # each rank's generator is in the same state
        share = mg.tensor(np.ones((rows.stop - rows.start, 5), dtype), device=device)
        parts.append(to_host(F.dropout(share, 0.4, rows=rows, n_global=7).data))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < (whole == 0).sum() < whole.size


def test_the_dropout_layer_passes_its_rows_on(device):
    layer = nn.Dropout(0.5)
    x = mg.tensor(np.ones((6, 4), np.float32), device=device)
    backend.manual_seed(1)
    whole = to_host(layer(x).data)
    layer.rows, layer.n_global = slice(2, 4), 6
    backend.manual_seed(1)
    np.testing.assert_array_equal(to_host(layer(x[2:4]).data), whole[2:4])
    with pytest.raises(ValueError, match="do not fit"):
        layer(x)  # 6 rows given for rows 2:4


# ----------------------------------------------------------------------------- mpiexec -n 2 alexnet train


def alexnet(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "alexnet", "train", *args]
    if processes > 1:
        command = [str(MPIEXEC), "-n", str(processes), *command]
    env = {**os.environ, "MINIGRAD_QUIET": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def weights(run: Path) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run / "checkpoint.npz")
    return split_prefix(arrays, "model")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:  # relative 1e-5: the ranks' partial sums are added in another order
        np.testing.assert_allclose(wb[name], wa[name], rtol=1e-5, atol=1e-5 * np.abs(wa[name]).max(), err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One epoch in 1 and in 2 processes; each taken to a second epoch by a resume in 1 and in 2 processes."""
    if not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None:
        pytest.skip(f"needs mpiexec next to the Python ({MPIEXEC}) and mpi4py")
    root = tmp_path_factory.mktemp("distributed")
    paths = {name: root / name for name in ("one", "two", "one_then_two", "two_then_one", "one_then_one")}
    alexnet([*RUN, "--epochs", "1", "--out", str(paths["one"])])
    out = alexnet([*RUN, "--epochs", "1", "--out", str(paths["two"])], processes=2)
    paths["two_log"] = out.stdout  # type: ignore[assignment]
    for start, then, processes in (("one", "one_then_two", 2), ("two", "two_then_one", 1), ("one", "one_then_one", 1)):
        shutil.copytree(paths[start], paths[then])
        alexnet(["--resume", str(paths[then]), "--epochs", "2", "--no-plots", "--no-progress"], processes=processes)
    return paths


@needs_mpi
def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(runs):
    assert_same_weights(runs["one"], runs["two"])
    log = str(runs["two_log"])
    assert log.count("epoch 1: train loss") == 1  # rank 0 alone prints
    assert "2 processes (mpi" in log and "BLAS thread(s)" in log
    assert sorted(p.name for p in runs["two"].iterdir()) == sorted(p.name for p in runs["one"].iterdir())


@needs_mpi
def test_a_run_resumes_in_another_number_of_processes(runs):
    assert_same_weights(runs["one_then_one"], runs["one_then_two"])  # 1 process, then 2
    assert_same_weights(runs["one_then_one"], runs["two_then_one"])  # 2 processes, then 1


def descendants(pid: int) -> list[int]:
    """The processes started (directly or not) by `pid`, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        frontier += children
    return found


def rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"alexnet" not in cmdline:
        return None
    ranks = [int(v.split(b"=")[1]) for v in environ if v.startswith(b"PMI_RANK=")]
    return ranks[0] if ranks else None


@needs_mpi
def test_killing_one_rank_ends_the_whole_job_within_seconds(tmp_path):
    run = tmp_path / "run"
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "alexnet", "train",
               *RUN, "--epochs", "50", "--out", str(run)]  # fmt: skip
    env = {**os.environ, "MINIGRAD_QUIET": "1"}
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "metrics.jsonl").exists():  # training, past its first epoch
            assert job.poll() is None and time.monotonic() < deadline, "the job did not start training"
            time.sleep(0.2)
        victim = next(pid for pid in descendants(job.pid) if rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        code = job.wait(timeout=60)
        assert time.monotonic() - killed < 30
        assert code != 0
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


@needs_mpi
def test_two_processes_on_a_prepared_store_take_the_steps_of_one(tmp_path):
    """The loader's rank slices: uneven shares (global batches of 5 over 2 ranks; 3 validation images)."""
    from alexnet.cli import main
    from alexnet.data import make_fake_imagefolder

    make_fake_imagefolder(tmp_path / "src" / "train", 3, per_class=6, size=(90, 80), seed=0)
    make_fake_imagefolder(tmp_path / "src" / "val", 3, per_class=2, size=(96, 96), seed=1)
    store = tmp_path / "store"
    assert main(["prepare", str(tmp_path / "src"), str(store), "--size", "73", "--workers", "0", "--no-progress"]) == 0
    run = ["--model", "alexnet-small", "--width", "0.25", "--data", str(store), "--epochs", "2", "--batch-size", "5",
           "--val-size", "3", "--workers", "1", "--no-plots", "--no-progress"]  # fmt: skip
    alexnet([*run, "--out", str(tmp_path / "one")])
    alexnet([*run, "--out", str(tmp_path / "two")], processes=2)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    one, two = (json.loads((tmp_path / name / "test.json").read_text()) for name in ("one", "two"))
    assert (two["test_top1_error"], two["test_top5_error"], two["count"]) == (
        one["test_top1_error"], one["test_top5_error"], one["count"])  # fmt: skip
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)  # summed over the ranks' shares
