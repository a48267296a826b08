"""The `alexnet` command line: help texts, errors, and a small end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import alexnet
import minigrad
from alexnet.cli import build_parser, main
from alexnet.config import TrainConfig
from alexnet.data import FASHION_MNIST_FILES, BadImageWarning, load_fashion_mnist, make_fake_imagefolder, write_idx
from alexnet.figures import sample_indices
from minigrad import backend

ROOT = Path(__file__).resolve().parents[1]


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
    ("args", "allowed"),
    [
        (["train", "--lr", "nan"], "a finite number > 0"),
        (["train", "--lr", "inf"], "a finite number > 0"),
        (["train", "--lr", "-0.1"], "a finite number > 0"),
        (["train", "--weight-decay", "-1"], "a finite number >= 0"),
        (["train", "--momentum", "2"], "a finite number in [0, 1)"),
        (["train", "--dropout", "1.5"], "a finite number in [0, 1)"),
        (["train", "--min-lr", "nan"], "a finite number >= 0"),
        (["train", "--width", "0"], "a finite number > 0"),
        (["train", "--epochs", "0"], "a whole number >= 1"),
        (["train", "--epochs", "2.5"], "a whole number >= 1"),
        (["train", "--batch-size", "0"], "a whole number >= 1"),
        (["train", "--val-size", "0"], "a whole number >= 1"),
        (["train", "--max-train-images", "-3"], "a whole number >= 1"),
        (["train", "--patience", "-1"], "a whole number >= 0"),
        (["train", "--seed", "-1"], "a whole number >= 0"),
        (["train", "--groups", "0"], "a whole number >= 1"),
        (["eval", "run", "--batch-size", "0"], "a whole number >= 1"),
        (["predict", "run", "x.png", "--top", "0"], "a whole number >= 1"),
        (["summary", "--groups", "0"], "a whole number >= 1"),
        (["summary", "--num-classes", "1"], "a whole number >= 2"),
        (["gradcheck", "--max-elements", "0"], "a whole number >= 1"),
        (["gradcheck", "--width", "inf"], "a finite number > 0"),
    ],
)
def test_every_numeric_flag_is_checked_before_anything_runs(args, allowed, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {args[-2]}: must be {allowed}, got " in err
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
    monkeypatch.setattr("alexnet.cli.train", lambda cfg, resume=None, given=None: trained)

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
        (["summary", "--model", "alexnet", "--groups", "5"], "256 channels cannot be split into 5 groups"),
        (["gradcheck", "--groups", "5"], "48 channels cannot be split into 5 groups"),
    ],
)
def test_an_impossible_model_is_an_error_message(args, message, capsys):
    assert main(args) == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_an_unreadable_image_in_the_data_folder_is_named_and_skipped(tmp_path, capsys):
    root = tmp_path / "images"
    make_fake_imagefolder(root / "train", 2, per_class=3, size=24)
    make_fake_imagefolder(root / "val", 2, per_class=1, size=24, seed=1)
    broken = root / "train" / "n00000001" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    with pytest.warns(BadImageWarning, match=f"skipped unreadable image {broken}"):
        code = main(["train", "--model", "alexnet-small", "--width", "0.25", "--data", str(root), "--epochs",
                     "1", "--val-size", "1", "--workers", "0", "--out", str(run), "--no-plots",
                     "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (run / "test.json").is_file()


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

    def fake_train(cfg, resume=None, given=None):
        seen["activation"] = cfg.activation
        return SimpleNamespace(run_dir="run", stopped_early=True)

    monkeypatch.setattr("alexnet.cli.train", fake_train)
    assert main(["train", "--activation", "tanh"]) == 130
    assert seen == {"activation": "tanh"}


# ----------------------------------------------------------------------------- the first hour (issue 13)


COMMANDS = ["train", "eval", "predict", "plot", "summary", "gradcheck"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_examples(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: alexnet {command}") and len(description.split()) >= 10
    examples = text.split("examples:\n")[1].splitlines()
    assert examples and all(line.startswith(f"  alexnet {command}") for line in examples if line.strip())


def test_the_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"alexnet {alexnet.__version__} (minigrad {minigrad.__version__})"


def test_the_commands_that_build_a_model_default_to_the_same_one():
    parser = build_parser()
    defaults = {command: parser.parse_args([command]).model for command in ("summary", "gradcheck")}
    assert (
        defaults
        == {"summary": TrainConfig().model, "gradcheck": TrainConfig().model}
        == {
            "summary": "alexnet-tiny",
            "gradcheck": "alexnet-tiny",
        }
    )
    assert parser.parse_args(["train"]).model is None  # not given: TrainConfig's default, alexnet-tiny


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_python_dash_m_alexnet_is_the_alexnet_command():
    result = run_python("-m", "alexnet", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"alexnet {alexnet.__version__}")


def test_help_does_not_import_matplotlib():
    code = "import sys\nfrom alexnet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    code += "print('matplotlib' in sys.modules, 'alexnet.plots' in sys.modules)"
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"


@pytest.fixture
def data_folders(tmp_path):
    """An empty folder, an image folder (colour models' data) and a Fashion-MNIST folder (greyscale)."""
    (tmp_path / "empty").mkdir()
    make_fake_imagefolder(tmp_path / "images" / "train", 2, per_class=2, size=24)
    make_fake_imagefolder(tmp_path / "images" / "val", 2, per_class=1, size=24, seed=1)
    subset = load_fashion_mnist(subset=True)
    (tmp_path / "fashion").mkdir()
    arrays = {"train_images": subset.train.images[:50, 0], "train_labels": subset.train.labels[:50],
              "test_images": subset.test.images[:10, 0], "test_labels": subset.test.labels[:10]}  # fmt: skip
    for key, name in FASHION_MNIST_FILES.items():
        write_idx(tmp_path / "fashion" / f"{name}.gz", arrays[key].astype(np.uint8))
    return tmp_path


FASHION = "alexnet-tiny reads Fashion-MNIST: a folder of its IDX files (train-images-idx3-ubyte.gz, "
FOLDER = "colour models (alexnet-small or alexnet) read an image folder: --data DIR with DIR/train/<class>/*.jpg"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "alexnet-small", "--data", "bundled"],
         f"the bundled data is greyscale Fashion-MNIST, for --model alexnet-tiny; {FOLDER}"),
        (["--model", "alexnet-small"], f"alexnet-small needs --data DIR: {FOLDER}"),
        (["--data", "{root}/nonexistent"], f"--data {{root}}/nonexistent does not exist ({FASHION}"),
        (["--data", "{root}/empty"], f"--data {{root}}/empty is empty: {FASHION}"),
        (["--data", "{root}/images"],
         "--data {root}/images is an image folder (train/<class>/...), data for the colour models: add --model "
         "alexnet-small or alexnet; " + FASHION),
        (["--model", "alexnet-small", "--data", "{root}/fashion"],
         f"--data {{root}}/fashion holds Fashion-MNIST (greyscale 28x28): add --model alexnet-tiny; {FOLDER}"),
        (["--model", "alexnet-small", "--data", "{root}/nonexistent"],
         f"--data {{root}}/nonexistent does not exist ({FOLDER}"),
        (["--model", "alexnet-small", "--data", "{root}/empty"], f"--data {{root}}/empty is empty: {FOLDER}"),
    ],
)  # fmt: skip
def test_data_errors_say_what_was_looked_for_and_what_would_fit(args, message, data_folders, capsys):
    run = data_folders / "run"
    args = [a.format(root=data_folders) for a in args]
    assert main(["train", *args, "--out", str(run), "--no-progress"]) == 2
    assert f"error: {message.format(root=data_folders)}" in capsys.readouterr().err
    assert not run.exists()


def test_a_fashion_mnist_environment_setting_that_points_nowhere_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(tmp_path / "gone"))
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert f"error: $ALEXNET_FASHION_MNIST = {tmp_path / 'gone'} does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--data", "bundled", "--epochs", "1", "--max-train-images", "256", "--val-size", "64",
            "--width", "0.25", "--out", str(run), "--no-progress", "--no-plots"]  # fmt: skip
    assert main(args) == 0
    return run


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["eval", "{png}"], "alexnet eval RUN [--ten-crop]"),
        (["predict", "{png}", "{run}"], "alexnet predict RUN IMAGE"),
    ],
)
def test_swapped_arguments_say_what_file_was_expected(args, usage, trained_run, tmp_path, capsys):
    png = tmp_path / "shirt.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    assert main([a.format(png=png, run=trained_run) for a in args]) == 2
    err = capsys.readouterr().err
    assert f"error: {png} is not a run folder or a checkpoint (expected a folder holding checkpoint.npz" in err
    assert f"usage: {usage}" in err and "pickle" not in err


def test_predict_notes_each_conversion_and_suggests_invert_for_dark_on_light(trained_run, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    pixels = np.full((60, 40, 3), 255, np.uint8)
    pixels[10:50, 8:32] = (30, 60, 90)  # a dark object on white
    Image.fromarray(pixels).save(photo)
    assert main(["predict", str(trained_run), str(photo), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        str(photo),
        "  note: converted from colour (RGB) to grey",
        "  note: its background is light, but Fashion-MNIST shows light objects on a dark background: for a dark "
        "drawing on white, add --invert",
        "  note: resized from 40x60 to 19x28 (aspect ratio kept) and centred on a black 28x28 square",
    ]
    assert len(lines) == 6
    assert main(["predict", str(trained_run), str(photo), "--invert"]) == 0
    out = capsys.readouterr().out
    assert "  note: inverted (--invert): dark on light became light on dark" in out and "add --invert" not in out


def test_eval_ten_crop_says_when_the_crops_are_not_distinct_views(trained_run, capsys):
    assert main(["eval", str(trained_run), "--ten-crop"]) == 0
    out = capsys.readouterr().out
    views = "the test images are 28x28 and the crop 28x28, so the 10 crops are only 2 distinct views"
    assert f"  note: {views} (the image and its mirror)" in out
    assert "  note: the run was trained without flips" in out


def test_a_diverging_run_prints_the_truth_and_no_numpy_warning(tmp_path, capsys):
    run = tmp_path / "hi_lr"
    args = ["train", "--data", "bundled", "--epochs", "2", "--lr", "50", "--max-train-images", "1000",
            "--out", str(run), "--no-progress"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(args) == 1
    err = capsys.readouterr().err
    assert "error: the loss became nan at epoch 1, batch" in err and "RuntimeWarning" not in err
    assert f"nothing was saved yet: it diverged before its first epoch ended ({run} holds only config.json)" in err


def test_gradcheck_prints_its_table_to_stdout_in_order(capsys):
    assert main(["gradcheck", "--width", "0.25", "--max-elements", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gradient check of alexnet-tiny") and out[1].startswith("tensor")
    assert out[2].startswith("input") and out[-1].startswith("PASS: alexnet-tiny")
