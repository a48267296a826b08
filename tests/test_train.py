"""Training runs: resuming gives exactly the uninterrupted weights; failures are loud and lose nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from alexnet import checkpoint as ckpt
from alexnet.checkpoint import CheckpointError, atomic_open, load_checkpoint, save_checkpoint, write_text_atomically
from alexnet.config import TrainConfig
from alexnet.model import build_model
from alexnet.run_data import prepare_data
from alexnet.runs import load_model, restore_model
from alexnet.train import TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]


def small_config(out: Path, **overrides) -> TrainConfig:
    """A run that takes a second or two: 640 training images of the bundled subset, 2 epochs."""
    settings = dict(
        model="alexnet-tiny",
        data="bundled",
        epochs=2,
        batch_size=64,
        max_train_images=640,
        val_size=200,
        width=0.5,
        out=str(out),
        progress=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def quiet(*_: object) -> None:
    pass


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run_dir / "checkpoint.npz")
    return arrays


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "straight"
    result = train(small_config(run), log=quiet)
    assert not result.stopped_early and len(result.metrics) == 2
    return run


def test_stopping_mid_epoch_and_resuming_ends_with_the_same_weights(uninterrupted, tmp_path):
    run = tmp_path / "stopped"
    stopped = train(small_config(run), after_batch=lambda epoch, batch: (epoch, batch) == (2, 4), log=quiet)
    assert stopped.stopped_early and stopped.test is None
    _, meta = load_checkpoint(run / "checkpoint.npz")
    assert (meta["state"]["epoch"], meta["state"]["batch"]) == (2, 4)

    resumed = train(small_config(run), resume=run, log=quiet)
    assert not resumed.stopped_early
    # Model, optimizer velocities, everything: bit for bit.
    assert_same_arrays(weights(uninterrupted), weights(run))
    straight_metrics = [m["val_top1_error"] for m in train_metrics(uninterrupted)]
    assert [m["val_top1_error"] for m in train_metrics(run)] == straight_metrics


def test_stopping_in_the_last_batch_of_an_epoch_saves_that_epoch_and_says_how_to_go_on(uninterrupted, tmp_path):
    run, lines = tmp_path / "stopped", []
    last_batch = 640 // 64  # batches count from 1
    stopped = train(
        small_config(run), after_batch=lambda epoch, batch: (epoch, batch) == (1, last_batch), log=lines.append
    )
    assert stopped.stopped_early and stopped.test is None
    assert lines[-2:] == [
        f"stopped after epoch 1; saved {run / 'checkpoint.npz'}",
        f"continue with: alexnet train --resume {run}",
    ]
    _, meta = load_checkpoint(run / "checkpoint.npz")
    assert (meta["state"]["epoch"], meta["state"]["batch"]) == (2, 0)
    assert [m["epoch"] for m in train_metrics(run)] == [1]

    train(small_config(run), resume=run, log=quiet)
    assert_same_arrays(weights(uninterrupted), weights(run))
    timings = ("images_per_second", "epoch_seconds")
    untimed = [{k: v for k, v in m.items() if k not in timings} for m in train_metrics(uninterrupted)]
    assert [{k: v for k, v in m.items() if k not in timings} for m in train_metrics(run)] == untimed


def train_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resuming_a_finished_epoch_with_more_epochs_matches(uninterrupted, tmp_path):
    run = tmp_path / "short"
    train(small_config(run, epochs=1), log=quiet)
    (run / "best.npz.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # as a killed save leaves it
    (run / "metrics.jsonl.a1b2c3.tmp").write_text('{"epoch": 1, "tra')
    train(small_config(run, epochs=2), resume=run, log=quiet)
    assert_same_arrays(weights(uninterrupted), weights(run))
    assert not list(run.glob("*.tmp"))


def test_a_killed_process_resumes_to_the_same_weights(uninterrupted, tmp_path):
    """SIGKILL (no chance to save) while epoch 2 runs; the epoch-1 checkpoint is intact and resumes exactly."""
    run = tmp_path / "killed"
    args = [
        sys.executable, "-m", "alexnet.cli", "train", "--data", "bundled", "--epochs", "2", "--batch-size", "64",
        "--max-train-images", "640", "--val-size", "200", "--width", "0.5", "--out", str(run),
        "--no-progress", "--no-plots",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert (run / "checkpoint.npz").exists(), proc.stderr.read().decode()
    load_checkpoint(run / "checkpoint.npz")  # whole, whenever the kill came
    train(small_config(run), resume=run, log=quiet)
    assert_same_arrays(weights(uninterrupted), weights(run))
    assert not list(run.glob("*.tmp")), "resuming should clear temporary files of an interrupted save"


def test_a_kill_between_the_end_of_epoch_saves_resumes_to_the_same_best_epoch(uninterrupted, tmp_path, monkeypatch):
    val_errors = [m["val_top1_error"] for m in train_metrics(uninterrupted)]
    assert val_errors[1] < val_errors[0]  # epoch 2 is a new best, so its end writes both files

    class Killed(BaseException):
        pass

    import alexnet.train as train_module

    original = train_module.save_run_checkpoint
    saved_at_end_of_epoch_2 = []

    def save_then_die(path, *args):
        result = original(path, *args)
        state = args[3]
        if (state.epoch, state.batch) == (3, 0):
            saved_at_end_of_epoch_2.append(path.name)
            raise Killed  # as SIGKILL right after the first of the two files
        return result

    monkeypatch.setattr(train_module, "save_run_checkpoint", save_then_die)
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        train(small_config(run), log=quiet)
    monkeypatch.undo()
    assert len(saved_at_end_of_epoch_2) == 1

    train(small_config(run), resume=run, log=quiet)
    assert_same_arrays(load_checkpoint(uninterrupted / "best.npz")[0], load_checkpoint(run / "best.npz")[0])
    assert (run / "test.json").read_text() == (uninterrupted / "test.json").read_text()


def poisoned_run(run: Path, at: tuple[int, int], **overrides) -> pytest.ExceptionInfo:
    """Train until after batch `at` = (epoch, batch), then set a weight to NaN; returns the TrainingDiverged."""
    models = []
    import alexnet.train as train_module

    original = train_module.make_optimizer

    def capture(cfg, model):
        models.append(model)
        return original(cfg, model)

    def poison(epoch: int, batch: int) -> bool:
        if (epoch, batch) == at:
            models[-1].parameters()[0].data[...] = np.nan
        return False

    train_module.make_optimizer = capture
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no raw NumPy warning may reach the user
            with pytest.raises(TrainingDiverged) as info:
                train(small_config(run, **overrides), after_batch=poison, log=quiet)
    finally:
        train_module.make_optimizer = original
    return info


def test_a_nan_loss_stops_training_and_names_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "diverged"
    info = poisoned_run(run, at=(2, 1))
    message = str(info.value)
    assert "the loss became nan at epoch 2, batch 2 of 10 (lr 0.05)" in message
    assert f"the last good weights are in {run / 'checkpoint.npz'} (the end of epoch 1)" in message
    assert f"the best epoch's in {run / 'best.npz'}" in message
    _, meta = load_checkpoint(run / "checkpoint.npz")
    assert (meta["state"]["epoch"], meta["state"]["batch"]) == (2, 0)  # the end of epoch 1, untouched
    model, _ = load_model(run / "checkpoint.npz")
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


def test_a_run_that_diverges_in_its_first_epoch_says_nothing_was_saved(tmp_path):
    run = tmp_path / "diverged"
    info = poisoned_run(run, at=(1, 3))
    assert "at epoch 1, batch 4 of 10" in str(info.value)
    assert f"nothing was saved yet: it diverged before its first epoch ended ({run} holds only config.json)" in str(
        info.value
    )
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_a_huge_learning_rate_stops_with_the_error_and_no_numpy_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            TrainingDiverged, match=r"became (nan|inf|-inf|NaN or infinite) at epoch 1, batch \d+ of 10"
        ):
            train(small_config(tmp_path / "run", lr=1e6), log=quiet)


def test_a_stop_and_its_resume_count_batches_from_one(tmp_path):
    run, lines = tmp_path / "run", []
    train(small_config(run), after_batch=lambda epoch, batch: (epoch, batch) == (1, 3), log=lines.append)
    assert lines[-2] == f"stopped at epoch 1, after batch 3 of 10; saved {run / 'checkpoint.npz'}"
    resumed: list[str] = []
    train(small_config(run, epochs=1), resume=run, after_batch=lambda epoch, batch: True, log=resumed.append)
    assert f"resuming {run} at epoch 1, after batch 3 of 10" in resumed


def test_a_new_run_refuses_to_overwrite_an_existing_one(uninterrupted):
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_config(uninterrupted), log=quiet)


@pytest.mark.parametrize(
    ("setting", "value", "allowed"),
    [
        ("epochs", 0, "a whole number >= 1"),
        ("batch_size", 0, "a whole number >= 1"),
        ("val_size", 0, "a whole number >= 1"),
        ("max_train_images", 0, "a whole number >= 1"),
        ("epochs", 2.5, "a whole number >= 1"),
        ("lr", float("nan"), "a finite number > 0"),
        ("lr", float("inf"), "a finite number > 0"),
        ("lr", 0.0, "a finite number > 0"),
        ("weight_decay", -1.0, "a finite number >= 0"),
        ("momentum", 1.0, "a finite number in [0, 1)"),
        ("dropout", 1.5, "a finite number in [0, 1)"),
        ("min_lr", -1e-5, "a finite number >= 0"),
        ("seed", -1, "a whole number >= 0"),
        ("width", 0.0, "a finite number > 0"),
    ],
)
def test_a_setting_out_of_its_range_is_refused_before_a_run_folder_is_made(setting, value, allowed, tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{setting} must be {allowed}, got {value!r}")):
        train(small_config(tmp_path / "run", **{setting: value}), log=quiet)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- data of a run


def colour_folder(root: Path, classes: int, train_per_class: int) -> Path:
    """A small generated image folder; ImageFolder lists its training images class by class."""
    from alexnet.data import make_fake_imagefolder

    make_fake_imagefolder(root / "train", classes, per_class=train_per_class, size=24, seed=0)
    make_fake_imagefolder(root / "val", classes, per_class=1, size=24, seed=1)
    return root


def test_max_train_images_keeps_a_seeded_random_subset_of_every_class(tmp_path):
    root = colour_folder(tmp_path / "images", classes=4, train_per_class=10)
    cfg = TrainConfig(model="alexnet-small", data=str(root), val_size=4, max_train_images=12)
    prepared = prepare_data(cfg, in_channels=3, image_size=64)
    assert len(prepared.train_labels) == 12
    assert set(prepared.train_labels) == {0, 1, 2, 3}  # not just the first classes of the sorted folder
    assert np.all(np.diff(prepared.train.indices) > 0)  # in the data's order
    again = prepare_data(cfg, in_channels=3, image_size=64)
    np.testing.assert_array_equal(prepared.train.indices, again.train.indices)
    other_seed = prepare_data(dataclasses.replace(cfg, seed=1), in_channels=3, image_size=64)
    assert not np.array_equal(prepared.train.indices, other_seed.train.indices)


def test_a_small_data_set_still_gets_a_validation_image(tmp_path):
    root = colour_folder(tmp_path / "images", classes=2, train_per_class=3)
    prepared = prepare_data(TrainConfig(model="alexnet-small", data=str(root)), in_channels=3, image_size=64)
    assert (len(prepared.val_labels), len(prepared.train_labels)) == (1, 5)
    assert not set(prepared.val.indices) & set(prepared.train.indices)  # held out of the training images


def test_a_validation_split_that_leaves_nothing_to_train_on_is_refused(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--val-size 9,000 leaves no images to train on: .* has 9,000 training"):
        train(small_config(run, val_size=9000, max_train_images=None), log=quiet)
    assert not run.exists()  # a run that fails before it starts leaves no empty folder


def test_a_run_without_data_setting_resumes_on_the_data_it_started_on(tmp_path, monkeypatch):
    """With no --data the run records the data it found, so a resume elsewhere reads the same images."""
    from alexnet.data import FASHION_MNIST_FILES, load_fashion_mnist_subset, write_idx

    subset = load_fashion_mnist_subset()
    idx_dir = tmp_path / "fashion"
    idx_dir.mkdir()
    arrays = {
        "train_images": subset.train.images[:1000, 0],
        "train_labels": subset.train.labels[:1000].astype(np.uint8),
        "test_images": subset.test.images[:200, 0],
        "test_labels": subset.test.labels[:200].astype(np.uint8),
    }
    for key, name in FASHION_MNIST_FILES.items():
        write_idx(idx_dir / name, arrays[key])
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(idx_dir))
    run = tmp_path / "run"
    train(small_config(run, data=None, val_size=100), after_batch=lambda epoch, batch: True, log=quiet)
    assert json.loads((run / "config.json").read_text())["data"] == str(idx_dir)

    monkeypatch.delenv("ALEXNET_FASHION_MNIST")  # a new shell: the default data would now be another set
    resumed = train(small_config(run, data=None), resume=run, log=quiet)
    assert resumed.data.source == f"full Fashion-MNIST from {idx_dir}"
    assert resumed.test is not None and resumed.test.count == 200


def test_a_relative_data_path_is_saved_absolute_and_moved_data_can_be_named_on_resume(tmp_path, monkeypatch):
    from alexnet.data import FASHION_MNIST_FILES, load_fashion_mnist_subset, write_idx

    subset = load_fashion_mnist_subset()
    arrays = {
        "train_images": subset.train.images[:1000, 0],
        "train_labels": subset.train.labels[:1000].astype(np.uint8),
        "test_images": subset.test.images[:200, 0],
        "test_labels": subset.test.labels[:200].astype(np.uint8),
    }
    (tmp_path / "fashion").mkdir()
    for key, name in FASHION_MNIST_FILES.items():
        write_idx(tmp_path / "fashion" / name, arrays[key])
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(small_config(run, data="fashion", val_size=100), after_batch=lambda epoch, batch: True, log=quiet)
    assert json.loads((run / "config.json").read_text())["data"] == str(tmp_path / "fashion")

    (tmp_path / "fashion").rename(tmp_path / "moved")
    monkeypatch.chdir(run)  # another working directory
    lines: list[str] = []
    resumed = train(small_config(run, data=str(tmp_path / "moved")), resume=run, log=lines.append)
    assert f"reading the data from {tmp_path / 'moved'} (the run used {tmp_path / 'fashion'})" in lines
    assert resumed.test is not None and resumed.test.count == 200


# ----------------------------------------------------------------------------- checkpoint files


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"note": "first"})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": np.arange(4.0)}, {"note": "second"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = write_text_atomically(tmp_path / "metrics.jsonl", '{"epoch": 1}\n')
    with pytest.raises(RuntimeError, match="killed"), atomic_open(path) as f:
        f.write(b'{"epoch": 1}\n{"epo')
        raise RuntimeError("killed halfway (simulated)")
    assert path.read_text() == '{"epoch": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_saved_files_get_the_usual_permissions(tmp_path, monkeypatch):
    """Not mkstemp's private 0600: a run folder is as readable as any other file the user writes."""
    monkeypatch.setattr(ckpt, "_UMASK", 0o027)  # the umask as read when the module was imported
    save_checkpoint(tmp_path / "c.npz", {"w": np.ones(2)}, {})
    write_text_atomically(tmp_path / "m.jsonl", "{}\n")
    assert [oct((tmp_path / name).stat().st_mode & 0o777) for name in ("c.npz", "m.jsonl")] == ["0o640", "0o640"]


def test_a_torn_metrics_file_is_named_with_its_line(uninterrupted, tmp_path):
    run = tmp_path / "torn"
    shutil.copytree(uninterrupted, run)
    first, second = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(first + "\n" + second[:40])
    with pytest.raises(CheckpointError, match=r"metrics\.jsonl, line 2: not a JSON record"):
        train(small_config(run, epochs=3), resume=run, log=quiet)


def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    good = save_checkpoint(tmp_path / "good.npz", {"w": np.ones(1000)}, {})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"hello, not a zip file")
    with pytest.raises(CheckpointError, match=r"garbage\.npz"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(2))
    with pytest.raises(CheckpointError, match="not an AlexNet checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_a_checkpoint_of_another_model_is_refused(uninterrupted):
    with pytest.raises(CheckpointError, match="holds a 'alexnet-tiny' model, not 'alexnet'"):
        load_model(uninterrupted / "checkpoint.npz", expect_model="alexnet")
    arrays, _ = load_checkpoint(uninterrupted / "checkpoint.npz")
    state = ckpt.split_prefix(arrays, "model")
    wider = build_model("alexnet-tiny")  # full width; the run used width 0.5
    with pytest.raises(CheckpointError, match=r"different model.*shape"):
        restore_model(wider, state)
    other = build_model("alexnet-small", num_classes=10)
    with pytest.raises(CheckpointError, match="different model"):
        restore_model(other, state)


def test_a_checkpoint_round_trip_gives_the_same_predictions(uninterrupted):
    model, meta = load_model(uninterrupted)  # a run folder means its best epoch
    # the loaded parameters are the arrays stored in best.npz, read independently of load_model
    arrays, _ = load_checkpoint(uninterrupted / "best.npz")
    stored = ckpt.split_prefix(arrays, "model")
    loaded = model.state_dict()
    assert list(loaded) == list(stored)
    for name, value in stored.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    again, _ = load_model(uninterrupted / "best.npz")
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    import minigrad as mg

    model.eval()
    again.eval()
    np.testing.assert_array_equal(model(mg.tensor(x)).numpy(), again(mg.tensor(x)).numpy())
    assert meta["class_names"][0] == "T-shirt/top"


def test_a_colour_model_trains_on_an_image_folder(tmp_path):
    """The full-size pipeline (resize, random crops, flips, PCA lighting, 10-crop test) on generated JPEGs,
    decoded by the loader's workers as they are read."""
    from alexnet.data import make_fake_imagefolder

    root = tmp_path / "images"
    make_fake_imagefolder(root / "train", ["n01", "n02", "n03"], per_class=8, size=[(90, 80), (80, 100)], seed=0)
    make_fake_imagefolder(root / "val", ["n01", "n02", "n03"], per_class=3, size=(96, 96), seed=1)
    cfg = TrainConfig(
        model="alexnet-small", data=str(root), epochs=1, batch_size=8, val_size=3, out=str(tmp_path / "run"),
        progress=False, ten_crop=True, width=0.5, workers=1,
    )  # fmt: skip
    result = train(cfg, log=quiet)
    assert result.model.config.num_classes == 3
    assert result.data.image_size == (73, 73)  # 64 * 256 / 224: the paper's resize ratio
    assert result.data.statistics.eigvals.shape == (3,)  # PCA lighting's, estimated from the folder
    assert result.test is not None and result.test.count == 9
    assert 0.0 <= result.test.top1_error <= 1.0 and result.test.top5_error == 0.0  # only 3 classes


def test_a_tanh_run_records_its_activation_and_keeps_it_on_resume_and_load(tmp_path):
    from minigrad import nn

    run = tmp_path / "tanh"
    stopped = train(small_config(run, activation="tanh"), after_batch=lambda epoch, batch: batch == 1, log=quiet)
    assert stopped.stopped_early
    assert json.loads((run / "config.json").read_text())["activation"] == "tanh"
    resumed = train(small_config(run, epochs=1), resume=run, log=quiet)  # no activation given: the run's
    assert isinstance(resumed.model.features[1], nn.Tanh)
    model, meta = load_model(run)
    assert meta["model_config"]["activation"] == "tanh" and isinstance(model.features[1], nn.Tanh)


# ----------------------------------------------------------------------------- what a resume says


def test_a_resume_names_the_flags_it_ignores(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "test.json").unlink()  # so there is something left to do: the test
    lines: list[str] = []
    cfg = small_config(run, lr=0.1, model="alexnet", batch_size=64, device="cpu")
    train(cfg, resume=run, log=lines.append, given={"lr", "model", "batch_size", "device", "epochs"})
    # --batch-size 64 is the run's own setting, and --epochs and --device are what a resume takes: not listed.
    assert lines[0] == (
        "note: --resume keeps the run's own settings; ignored: --lr 0.1 (the run's: 0.05), "
        "--model alexnet (the run's: alexnet-tiny)"
    )
    assert f"all 2 epochs of {run} are trained; scoring the test set" in lines
    assert (run / "test.json").exists()


def test_a_resume_without_a_list_of_given_flags_compares_with_the_defaults(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    lines: list[str] = []
    cfg = dataclasses.replace(small_config(run, epochs=3, optimizer="adam"), out=None)
    train(cfg, resume=run, log=lines.append)
    assert lines[0] == "note: --resume keeps the run's own settings; ignored: --optimizer adam (the run's: sgd)"


@pytest.mark.parametrize(
    ("epochs", "message"),
    [
        (None, "has already trained its 2 epochs and scored the test set (test.json): nothing to resume"),
        (2, "has already trained its 2 epochs and scored the test set"),
        (1, "has already trained 2 epochs, more than --epochs 1; to train longer give --epochs 3 or more"),
    ],
)
def test_a_resume_refuses_a_target_it_has_reached(uninterrupted, tmp_path, epochs, message):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=re.escape(f"{run} {message}")):
        train(small_config(run, epochs=epochs), resume=run, log=quiet)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched


def test_a_resume_into_an_epoch_refuses_a_target_before_it(tmp_path):
    run = tmp_path / "run"
    train(small_config(run), after_batch=lambda epoch, batch: (epoch, batch) == (2, 2), log=quiet)
    with pytest.raises(ValueError, match=r"is already into epoch 2 \(2 batches of it trained\): --epochs 1"):
        train(small_config(run, epochs=1), resume=run, log=quiet)


def test_extending_a_run_records_the_new_epoch_count_in_its_config(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    lines: list[str] = []
    train(small_config(run, epochs=3), resume=run, after_batch=lambda epoch, batch: True, log=lines.append)
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 3
    assert [(e["epochs"], e["from"]) for e in config["extensions"]] == [(3, 2)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", config["extensions"][0]["date"])
    assert "the run now trains 3 epochs (was 2; recorded in config.json)" in lines
    _, meta = load_checkpoint(run / "checkpoint.npz")
    assert meta["train_config"]["epochs"] == 3 and len(meta["train_config"]["extensions"]) == 1
