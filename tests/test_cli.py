"""The `alexnet` command line: help texts, errors, and a small end-to-end run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from alexnet.cli import build_parser, main
from alexnet.data import load_fashion_mnist, make_fake_imagefolder
from alexnet.figures import sample_indices
from minigrad import backend


@pytest.mark.parametrize("command", ["train", "eval", "predict", "plot", "summary", "gradcheck"])
def test_every_command_explains_its_options(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapping inside "(default: ...)"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: alexnet" in text
    if command == "train":
        for option in ["--model", "--data", "--device", "--epochs", "--batch-size", "--lr", "--optimizer",
                       "--seed", "--out", "--resume", "--no-lrn", "--groups", "--no-overlap", "--width"]:  # fmt: skip
            assert option in text
        assert (
            "0.01 as in the paper" in text and "(default: 128)" in text and "3 epochs of the full Fashion-MNIST" in text
        )


def test_the_help_states_only_true_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--")}
    # Augmentation is decided by the data (on for colour folders, off for Fashion-MNIST), not off by default.
    assert "default" not in lines["--no-augment"]
    assert "(default: on for colour image folders" in lines["--augment"]
    assert "(default: None)" not in "".join(lines.values())


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--batch-size", "0"],
        ["train", "--epochs", "0"],
        ["train", "--val-size", "0"],
        ["train", "--max-train-images", "-3"],
        ["eval", "run", "--batch-size", "0"],
        ["summary", "--groups", "0"],
    ],
)
def test_counts_below_one_are_refused_before_anything_runs(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {args[-2]}: must be at least 1, got {args[-1]}" in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no config.json


def test_summary_prints_the_layer_table(capsys):
    assert main(["summary", "--model", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out and "MFLOPs" in out


def test_every_command_keeps_freed_memory_for_reuse(capsys, monkeypatch):
    """The application (not the library) chooses the allocator policy: main() asks for it once."""
    calls = []
    monkeypatch.setattr("alexnet.cli.keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["summary", "--model", "alexnet-tiny"]) == 0
    assert calls == [1]


@pytest.mark.skipif(backend.gpu_available(), reason="checks the message shown when no GPU is usable")
def test_asking_for_a_gpu_without_one_says_why(capsys):
    assert main(["train", "--device", "gpu"]) == 2
    assert "no GPU is usable" in capsys.readouterr().err


def test_an_unknown_device_is_named(capsys):
    assert main(["train", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_train_eval_predict_and_plot_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", "bundled", "--epochs", "1", "--max-train-images", "512", "--val-size", "100",
                 "--width", "0.5", "--out", str(run), "--no-progress"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "test (2,000 images, best epoch 1 by validation error): top-1 accuracy" in out and "plots:" in out
    for name in ["curves.png", "conv1_kernels.png", "predictions.png", "nearest_neighbours.png"]:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["epoch"] == 1 and {"train_loss", "val_top1_error", "val_top5_error", "lr"} <= set(metrics[0])

    assert main(["eval", str(run), "--data", "bundled"]) == 0
    report = capsys.readouterr().out
    test_json = json.loads((run / "test.json").read_text())
    assert f"top-1 error {100 * test_json['test_top1_error']:.2f}%" in report

    image = load_fashion_mnist(subset=True).test.images[0, 0]
    path = tmp_path / "shirt.png"
    Image.fromarray(image).save(path)
    assert main(["predict", str(run), str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(path) and len(lines) == 6
    probs = [float(line.split("%")[0]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01

    assert main(["plot", str(run)]) == 0
    assert "conv1_kernels.png" in capsys.readouterr().out


def test_a_run_with_fewer_test_images_than_figure_slots_is_plotted(tmp_path, capsys):
    """3 test images, not the 8 of Fig. 4: the figures show what there is, and the run succeeds."""
    root = tmp_path / "images"
    make_fake_imagefolder(root / "train", 3, per_class=6, size=24, seed=0)
    make_fake_imagefolder(root / "val", 3, per_class=1, size=24, seed=1)
    run = tmp_path / "run"
    code = main(["train", "--model", "alexnet-small", "--data", str(root), "--epochs", "1", "--batch-size", "8",
                 "--val-size", "3", "--width", "0.5", "--out", str(run), "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning" not in captured.err
    for name in ["predictions.png", "nearest_neighbours.png"]:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_that_fails_after_training_is_a_warning_not_a_failure(tmp_path, capsys, monkeypatch):
    trained = SimpleNamespace(run_dir=tmp_path / "run", stopped_early=False)
    monkeypatch.setattr("alexnet.cli.train", lambda cfg, resume=None: trained)

    def broken_plot(run_dir, device):
        raise RuntimeError("no display (simulated)")

    monkeypatch.setattr("alexnet.figures.plot_run", broken_plot)
    assert main(["train", "--data", "bundled"]) == 0
    captured = capsys.readouterr()
    assert (
        f"warning: no plots (RuntimeError: no display (simulated)); try: alexnet plot {trained.run_dir}" in captured.err
    )
    assert f"run folder: {trained.run_dir}" in captured.out


def test_figure_samples_are_random_sorted_and_never_more_than_there_are():
    labels = np.repeat(np.arange(5), 600)  # a class-sorted training set, as an image folder gives
    bank = sample_indices(len(labels), 2000, np.random.default_rng(0))
    assert len(np.unique(bank)) == 2000 and np.all(np.diff(bank) > 0)
    assert np.bincount(labels[bank]).min() > 300  # every class, not the first 2000 images' 3.3 classes
    np.testing.assert_array_equal(bank, sample_indices(len(labels), 2000, np.random.default_rng(0)))
    np.testing.assert_array_equal(sample_indices(3, 8, np.random.default_rng(0)), [0, 1, 2])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["summary", "--groups", "5"], "256 channels cannot be split into 5 groups"),
        (["gradcheck", "--width", "-1"], "width multiplier must be positive, got -1.0"),
    ],
)
def test_an_impossible_model_is_an_error_message(args, message, capsys):
    assert main(args) == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_an_unreadable_image_in_the_data_folder_is_named(tmp_path, capsys):
    root = tmp_path / "images"
    make_fake_imagefolder(root / "train", 2, per_class=2, size=24)
    make_fake_imagefolder(root / "val", 2, per_class=1, size=24, seed=1)
    (root / "train" / "n00000001" / "broken.jpg").write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    assert main(["train", "--model", "alexnet-small", "--data", str(root), "--out", str(run)]) == 2
    assert f"error: cannot read image {root / 'train' / 'n00000001' / 'broken.jpg'}" in capsys.readouterr().err
    assert not run.exists()


def test_eval_and_plot_name_a_missing_checkpoint_or_run_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing.npz")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_the_model_gradcheck_command_passes(capsys):
    code = main(["gradcheck", "--model", "alexnet-tiny", "--width", "0.25", "--max-elements", "16"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "features.0.weight" in out and "PASS: alexnet-tiny" in out
    assert np.all(["FAIL" not in line for line in out.splitlines()])


@pytest.mark.parametrize("command", ["summary", "gradcheck"])
def test_the_activation_flag_builds_a_tanh_model(command, capsys):
    args = [command, "--model", "alexnet-tiny", "--width", "0.25", "--activation", "tanh"]
    if command == "gradcheck":
        args += ["--max-elements", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("tanh " in out) if command == "summary" else ("PASS: alexnet-tiny" in out)


def test_train_passes_the_activation_to_the_run(monkeypatch, capsys):
    seen = {}

    def fake_train(cfg, resume=None):
        seen["activation"] = cfg.activation
        return SimpleNamespace(run_dir="run", stopped_early=True)

    monkeypatch.setattr("alexnet.cli.train", fake_train)
    assert main(["train", "--activation", "tanh"]) == 130
    assert seen == {"activation": "tanh"}
