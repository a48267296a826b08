"""`alexnet train --precision`: fp16 tracks fp32, resumes exactly, skips overflowing steps; tf32 on the CPU is fp32.

On the CPU fp16 runs in NumPy float16, much slower than float32: the runs here are a few steps each.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import quiet, small_config, weights  # the same small runs as the fp32 training tests

from alexnet import arguments
from alexnet.checkpoint import load_checkpoint
from alexnet.config import TrainConfig
from alexnet.model import build_model
from alexnet.precision import MAX_SKIPS_IN_A_ROW, PrecisionState, master_weights, skip_verdict
from alexnet.runs import load_model
from alexnet.train import TrainingDiverged, train
from minigrad import amp
from minigrad.amp import LossScaler, MixedPrecision

# fp16 against fp32 after the same steps from the same weights: the mean training and validation loss per epoch.
# float16 rounds each activation to ~3 decimal digits; over a few dozen steps the runs drift apart by a few
# hundredths of a loss that starts at ln 10 = 2.3.
LOSS_TOLERANCE_FP16 = 0.06


def tiny_config(out: Path, **overrides) -> TrainConfig:
    """8 steps of 32 images over 2 epochs: seconds in fp32, tens of seconds in fp16 on the CPU."""
    return small_config(out, **{"batch_size": 32, "max_train_images": 128, "val_size": 64, **overrides})


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same run in fp32 and in fp16, uninterrupted."""
    root = tmp_path_factory.mktemp("precision")
    for precision in ("fp32", "fp16"):
        result = train(tiny_config(root / precision, precision=precision), log=quiet)
        assert not result.stopped_early
    return {p: root / p for p in ("fp32", "fp16")}


@pytest.mark.parametrize("key", ["train_loss", "val_loss"])
def test_fp16_tracks_fp32_within_the_stated_tolerance(runs, key):
    fp32, fp16 = metrics(runs["fp32"]), metrics(runs["fp16"])
    assert len(fp32) == len(fp16) == 2
    for a, b in zip(fp32, fp16):
        assert abs(a[key] - b[key]) <= LOSS_TOLERANCE_FP16, (key, a[key], b[key])
    assert fp16[-1]["train_loss"] < fp16[0]["train_loss"]  # and it learns


def test_an_fp16_run_records_its_precision_skipped_steps_and_loss_scale(runs):
    config = json.loads((runs["fp16"] / "config.json").read_text())
    assert config["precision"] == "fp16"
    for record in metrics(runs["fp16"]):
        assert record["precision"] == "fp16"
        assert record["skipped_steps"] >= 0 and record["loss_scale"] >= 1.0
    assert "precision" not in metrics(runs["fp32"])[0]  # fp32 records stay as they were


def test_an_fp16_checkpoint_holds_float32_master_weights_that_load_as_a_plain_model(runs):
    arrays = weights(runs["fp16"])
    assert all(a.dtype == np.float32 for a in arrays.values())
    model, meta = load_model(runs["fp16"])
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert meta["state"]["amp"]["precision"] == "fp16"
    assert meta["state"]["amp"]["scaler"]["scale"] == metrics(runs["fp16"])[-1]["loss_scale"]


@pytest.mark.parametrize("stop_at", [(1, 2), (2, 1)])
def test_a_stopped_fp16_run_resumes_to_exactly_the_uninterrupted_weights(runs, tmp_path, stop_at):
    run = tmp_path / "stopped"
    cfg = tiny_config(run, precision="fp16")
    stopped = train(cfg, after_batch=lambda epoch, batch: (epoch, batch) == stop_at, log=quiet)
    assert stopped.stopped_early
    train(tiny_config(run), resume=run, log=quiet)  # the run keeps its own precision
    resumed, straight = weights(run), weights(runs["fp16"])
    assert sorted(resumed) == sorted(straight)
    for key in straight:  # master weights and optimizer velocities: bit for bit
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    _, meta_resumed = load_checkpoint(run / "checkpoint.npz")
    _, meta_straight = load_checkpoint(runs["fp16"] / "checkpoint.npz")
    assert meta_resumed["state"]["amp"] == meta_straight["state"]["amp"]


def test_the_trained_model_comes_back_in_float32(runs, tmp_path):
    result = train(tiny_config(tmp_path / "r", precision="fp16", epochs=1, max_train_images=32), log=quiet)
    assert all(p.dtype == np.float32 for p in result.model.parameters())


def test_tf32_on_the_cpu_is_fp32_with_a_note(runs, tmp_path):
    lines: list[str] = []
    train(tiny_config(tmp_path / "tf32", precision="tf32"), log=lines.append)
    assert any("tf32 runs as fp32 here: NumPy has no TF32" in line for line in lines)
    tf32, fp32 = weights(tmp_path / "tf32"), weights(runs["fp32"])
    for key in fp32:
        np.testing.assert_array_equal(tf32[key], fp32[key], err_msg=key)
    assert all(record["tf32"] is False for record in metrics(tmp_path / "tf32"))


def test_an_overflowing_loss_scale_skips_steps_instead_of_stopping(tmp_path, monkeypatch):
    # A first scale of 2**24 makes the scaled float16 gradients overflow: the scale halves on each skipped step
    # until they fit, and training goes on.
    monkeypatch.setattr(amp, "LossScaler", lambda: LossScaler(init_scale=2.0**24))
    train(tiny_config(tmp_path / "r", precision="fp16", epochs=1, max_train_images=256), log=quiet)
    record = metrics(tmp_path / "r")[0]
    assert 1 <= record["skipped_steps"] < 256 // 32  # some skipped, at least one taken
    assert record["loss_scale"] < 2.0**24
    assert np.isfinite(record["train_loss"])


def test_an_fp16_run_whose_steps_keep_overflowing_stops_as_diverged(tmp_path):
    cfg = tiny_config(tmp_path / "r", precision="fp16", lr=1e12, batch_size=8, epochs=1, max_train_images=400)
    with pytest.raises(TrainingDiverged, match=r"smallest loss scale|in a row were skipped"):
        train(cfg, log=quiet)


def small_mixed_precision() -> MixedPrecision:
    return MixedPrecision(build_model("alexnet-tiny", width=0.25), "fp16", scaler=LossScaler(init_scale=8.0))


def test_skipping_is_loss_scaling_until_the_scale_is_at_its_minimum_or_too_many_skips_in_a_row():
    mp = small_mixed_precision()
    mp.scaler.update(False)  # 8 -> 4
    assert skip_verdict(mp, 1) is None
    assert "in a row" in skip_verdict(mp, MAX_SKIPS_IN_A_ROW)
    for _ in range(3):
        mp.scaler.update(False)  # down to the minimum, 1
    assert "smallest loss scale" in skip_verdict(mp, 4)


def test_master_weights_lends_the_float32_weights_and_gives_the_float16_back():
    mp = small_mixed_precision()
    before = [p.data for p in mp.model.parameters()]
    with master_weights(mp):
        assert all(p.dtype == np.float32 for p in mp.model.parameters())
        assert all(p.data is m.data for p, m in zip(mp.model.parameters(), mp.parameters()))
    assert all(p.data is b for p, b in zip(mp.model.parameters(), before))


def test_the_precision_state_round_trips_the_scaler():
    mp = small_mixed_precision()
    mp.scaler.update(False)
    state = PrecisionState()
    state.record(mp, skips_in_a_row=1)
    fresh = small_mixed_precision()
    assert PrecisionState(**{**vars(state)}).restore(fresh) == 1
    assert fresh.scaler.state_dict() == mp.scaler.state_dict()


def test_the_flag_takes_the_three_precisions_and_refuses_others(capsys):
    parser = arguments.build_parser()
    assert parser.parse_args(["train", "--precision", "fp16"]).precision == "fp16"
    assert parser.parse_args(["train"]).precision is None  # not given: TrainConfig's fp32
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--precision", "bf16"])
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, fp16"):
        TrainConfig(precision="fp8").check()


MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.mark.skipif(
    not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None,
    reason=f"needs mpiexec next to the Python ({MPIEXEC}) and mpi4py: pip install -e '.[distributed]'",
)
def test_two_processes_in_fp16_take_the_steps_of_one(tmp_path):
    # The ranks' float16 gradients are rounded before they are summed: the losses agree to float16 precision.
    args = ["--precision", "fp16", "--data", "bundled", "--epochs", "1", "--batch-size", "32"]
    args += ["--max-train-images", "96", "--val-size", "64", "--width", "0.5", "--no-plots", "--no-progress"]
    env = {**os.environ, "MINIGRAD_QUIET": "1"}
    for processes, name in ((1, "one"), (2, "two")):
        command = [sys.executable, "-m", "alexnet", "train", *args, "--out", str(tmp_path / name)]
        if processes > 1:
            command = [str(MPIEXEC), "-n", str(processes), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    one, two = metrics(tmp_path / "one")[0], metrics(tmp_path / "two")[0]
    for key in ("train_loss", "val_loss"):
        assert abs(one[key] - two[key]) <= 0.01, (key, one[key], two[key])
    assert one["skipped_steps"] == two["skipped_steps"] and one["loss_scale"] == two["loss_scale"]
