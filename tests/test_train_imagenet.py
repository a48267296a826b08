"""Training on colour data the ImageNet way (issue 16): `alexnet prepare` -> `alexnet train --data STORE` ->
`alexnet eval`, batches made by background workers, exact resume, and a raw folder with a broken file.

Small generated trees (`make_fake_imagefolder`) and alexnet-small at a quarter width: each test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alexnet.cli import main
from alexnet.config import TrainConfig
from alexnet.data import BadImageWarning, make_fake_imagefolder
from alexnet.runs import load_model
from alexnet.train import epoch_batches, start_run, train


def quiet(message: str) -> None:
    pass


def image_tree(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    """SRC/train/<class>/*.JPEG (two aspect ratios) and SRC/val/<class>/*.JPEG."""
    make_fake_imagefolder(root / "train", classes, per_class=per_class, size=[(90, 80), (80, 100)], seed=0)
    make_fake_imagefolder(root / "val", classes, per_class=2, size=(96, 96), seed=1)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A prepared store at alexnet-small's side (73 = 64 * 256 / 224)."""
    root = tmp_path_factory.mktemp("imagenet")
    src = image_tree(root / "src")
    assert main(["prepare", str(src), str(root / "store"), "--size", "73", "--workers", "1", "--no-progress"]) == 0
    return root / "store"


def small_config(data: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(
        model="alexnet-small", width=0.25, data=str(data), epochs=2, batch_size=4, val_size=3, out=str(out),
        progress=False, workers=1,
    )  # fmt: skip
    return TrainConfig(**{**settings, **changes})


def test_prepare_train_eval_end_to_end_through_the_cli(store, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", "alexnet-small", "--width", "0.25", "--data", str(store), "--epochs", "2",
                 "--batch-size", "4", "--val-size", "3", "--workers", "2", "--mean", "channel", "--out", str(run),
                 "--no-progress", "--no-plots"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"data: prepared store {store}" in captured.out
    assert "train 15 / validation 3 / test 6 images" in captured.out
    config = json.loads((run / "config.json").read_text())
    assert (config["mean"], config["workers"], config["data"]) == ("channel", 2, str(store.absolute()))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert (run / "data_stats.npz").is_file()
    trained = json.loads((run / "test.json").read_text())

    assert main(["eval", str(run), "--data", str(store), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "on 6 test images (prepared store" in out
    # The same weights (best.npz), data and normalisation as the run's own final test.
    assert f"top-1 error {100 * trained['test_top1_error']:.2f}%" in out
    assert f"top-5 error {100 * trained['test_top5_error']:.2f}%" in out

    assert main(["eval", str(run), "--ten-crop", "--workers", "0"]) == 0  # the run's data: the same store
    ten = capsys.readouterr().out
    assert f"on 6 test images (prepared store {store}; 10-crop)" in ten
    assert "top-5 error 0.00%" in ten  # 3 classes: always in the top 5


def test_eval_and_predict_use_the_runs_mean_image(store, tmp_path, capsys):
    run = tmp_path / "run"
    result = train(small_config(store, run, epochs=1), log=quiet)
    assert json.loads((run / "config.json").read_text())["mean"] == "image"  # the paper's, the default
    assert main(["eval", str(run), "--workers", "0"]) == 0
    assert f"top-1 error {100 * result.test.top1_error:.2f}%" in capsys.readouterr().out
    image = next((store.parent / "src" / "val").rglob("*.JPEG"))
    assert main(["predict", str(run), str(image), "--top", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3


def batches_of(cfg: TrainConfig, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    run = start_run(cfg, quiet)
    try:
        return [(x.copy(), y) for _, x, y, _ in epoch_batches(run, epoch)]
    finally:
        run.close()


def test_the_training_batches_are_the_same_for_1_and_3_workers(store, tmp_path):
    one = batches_of(small_config(store, tmp_path / "a", workers=1), epoch=2)
    three = batches_of(small_config(store, tmp_path / "b", workers=3), epoch=2)
    assert len(one) == len(three) == 4  # 15 training images in batches of 4, the last one of 3
    for (x1, y1), (x3, y3) in zip(one, three):
        np.testing.assert_array_equal(x1, x3)
        np.testing.assert_array_equal(y1, y3)
    assert one[0][0].shape == (4, 3, 64, 64) and one[-1][0].shape == (3, 3, 64, 64)


def test_a_stopped_and_resumed_run_with_workers_ends_with_the_weights_of_an_uninterrupted_one(store, tmp_path):
    whole = train(small_config(store, tmp_path / "whole"), log=quiet)
    part = tmp_path / "part"
    stopped = train(small_config(store, part), after_batch=lambda e, b: (e, b) == (1, 2), log=quiet)
    assert stopped.stopped_early
    resumed = train(small_config(store, part, workers=2), resume=part, log=quiet)  # other workers: same batches
    assert not resumed.stopped_early
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert json.loads((part / "test.json").read_text()) == json.loads((tmp_path / "whole" / "test.json").read_text())


def test_a_truncated_jpeg_in_a_raw_folder_is_skipped_and_named_while_training(tmp_path, capsys):
    src = image_tree(tmp_path / "src")
    good = next((src / "train" / "n00000001").glob("*.JPEG")).read_bytes()
    broken = src / "train" / "n00000001" / "broken.JPEG"
    broken.write_bytes(good[: len(good) // 2])
    run = tmp_path / "run"
    with pytest.warns(BadImageWarning, match=f"skipped unreadable image {broken}"):
        code = main(["train", "--model", "alexnet-small", "--width", "0.25", "--data", str(src), "--epochs", "1",
                     "--batch-size", "4", "--val-size", "2", "--workers", "1", "--out", str(run), "--no-progress",
                     "--no-plots"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"data: image folder {src}" in captured.out
    _, meta = load_model(run)
    assert meta["state"]["epoch"] == 2  # the epoch was trained to its end
