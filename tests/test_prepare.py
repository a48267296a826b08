"""Tests for `alexnet prepare` (alexnet/data/prepare.py) and what it builds on: the folder layouts
(layout.py), the fast decoder (decode.py) and the prepared store (store.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data import channel_mean_std, load_image, make_fake_imagefolder, rgb_pca
from alexnet.data.decode import decode_image
from alexnet.data.layout import LayoutError, list_source, read_class_index
from alexnet.data.prepare import PrepareError, build_prepare_parser, prepare, prepare_main, run_prepare
from alexnet.data.store import BAD, DONE, PreparedStore, Statistics, StoreError, write_store

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # stored image side in these tests: small, so a test prepares a tree in well under a second
STORE_ARRAYS = ["train_images.npy", "train_labels.npy", "train_done.npy", "val_images.npy", "val_labels.npy"]


def quiet(_message: str) -> None:
    """A `log` for prepare() that drops its messages."""


def smooth_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8 gradients: resampling paths agree on them up to rounding."""
    rng = np.random.default_rng(seed)
    gy, gx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    a, b = rng.uniform(40, 200, (2, 3))
    return (a + (b - a) * (0.6 * gx + 0.4 * gy)[..., None]).astype(np.uint8)


def write_special_images(folder: Path) -> dict[str, Path]:
    """A greyscale JPEG, a CMYK JPEG, a palette PNG with transparency, an RGBA PNG; and two unreadable files."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(smooth_rgb(70, 50, seed=1))
    paths = {name: folder / name for name in ("grey.JPEG", "cmyk.JPEG", "palette.png", "rgba.png")}
    rgb.convert("L").save(paths["grey.JPEG"], quality=95)
    rgb.convert("CMYK").save(paths["cmyk.JPEG"], quality=95)
    rgb.quantize(64, dither=Image.Dither.NONE).save(paths["palette.png"], transparency=0)
    rgb.convert("RGBA").save(paths["rgba.png"])
    good = folder / "good.JPEG"
    rgb.save(good, quality=90)
    paths["truncated.JPEG"] = folder / "truncated.JPEG"
    paths["truncated.JPEG"].write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    good.unlink()
    paths["text.JPEG"] = folder / "text.JPEG"
    paths["text.JPEG"].write_text("this is not a JPEG\n")
    return paths


def make_tree(root: Path, per_class: int = 6, classes: int = 3, flat_val: bool = False) -> Path:
    """SRC/train/<class>/* and SRC/val (class folders, or flat with val_labels.csv)."""
    make_fake_imagefolder(root / "train", classes=classes, per_class=per_class, size=[(48, 36), (36, 48)], seed=0)
    make_fake_imagefolder(root / "val", classes=classes, per_class=2, size=(40, 40), seed=1)
    if flat_val:
        rows = ["filename,class"]
        for image in sorted((root / "val").rglob("*.JPEG")):
            rows.append(f"{image.name},{image.parent.name}")
            image.rename(root / "val" / image.name)
        for folder in [p for p in (root / "val").iterdir() if p.is_dir()]:
            folder.rmdir()
        (root / "val_labels.csv").write_text("\n".join(rows) + "\n")
    return root


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["grey.JPEG", "cmyk.JPEG", "palette.png", "rgba.png"])
def test_decode_converts_every_mode_to_rgb_like_load_image(tmp_path, name):
    path = write_special_images(tmp_path)[name]
    fast, plain = decode_image(path, SIZE), load_image(path, SIZE)
    assert fast.shape == (3, SIZE, SIZE) and fast.dtype == np.uint8
    # Two resampling paths (box resize vs resize-then-crop) on a smooth image: they agree up to rounding.
    assert np.abs(fast.astype(int) - plain.astype(int)).mean() < 1.5
    if name == "grey.JPEG":
        assert (fast[0] == fast[1]).all() and (fast[1] == fast[2]).all()


@pytest.mark.parametrize(("width", "height"), [(1200, 900), (900, 1300), (300, 200)])
def test_draft_decoding_of_large_jpegs_matches_the_full_decode(tmp_path, width, height):
    path = tmp_path / "photo.JPEG"
    Image.fromarray(smooth_rgb(width, height, seed=2)).save(path, quality=92)
    with Image.open(path) as img:
        img.draft("RGB", (SIZE * width // min(width, height), SIZE * height // min(width, height)))
        reduced = img.size != (width, height)
    assert reduced == (min(width, height) >= 2 * SIZE)  # draft mode does act on the large ones
    fast, plain = decode_image(path, SIZE), load_image(path, SIZE)
    assert np.abs(fast.astype(int) - plain.astype(int)).mean() < 1.5


@pytest.mark.parametrize("name", ["truncated.JPEG", "text.JPEG"])
def test_decode_names_an_unreadable_file(tmp_path, name):
    path = write_special_images(tmp_path)[name]
    with pytest.raises(ValueError, match="cannot read image") as info:
        decode_image(path, SIZE)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.JPEG", SIZE)


# ----------------------------------------------------------------------------- layouts


def test_flat_validation_folder_with_a_csv_gives_the_class_folder_labels(tmp_path):
    _, folders = list_source(make_tree(tmp_path / "folders"))
    _, flat = list_source(make_tree(tmp_path / "flat", flat_val=True))
    by_name = dict(zip([Path(f).name for f in folders["val"].files], folders["val"].labels))
    assert flat["val"].files == sorted(by_name)
    np.testing.assert_array_equal(flat["val"].labels, [by_name[f] for f in flat["val"].files])


def test_labels_csv_variants(tmp_path):
    src = make_tree(tmp_path, flat_val=True)
    names = sorted(p.name for p in (src / "val").iterdir())
    # ImageNet's LOC_val_solution.csv: no extension, the class as the first word of the second column;
    # and rows that give the class as an index.
    rows = ["ImageId,PredictionString"]
    rows += [f"{Path(n).stem},n0000000{i % 3} 1 2 3 4" for i, n in enumerate(names[:3])]
    rows += [f"{n},{i % 3}" for i, n in enumerate(names[3:], start=3)]
    custom = tmp_path / "labels.csv"
    custom.write_text("\n".join(rows) + "\n")
    _, splits = list_source(src, val_labels=custom)
    np.testing.assert_array_equal(splits["val"].labels, np.arange(len(names)) % 3)
    custom.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(LayoutError, match=f"has no row for .*{names[-1]}"):
        list_source(src, val_labels=custom)
    custom.write_text("\n".join([*rows, "ghost.JPEG,n00000001"]) + "\n")
    with pytest.raises(LayoutError, match=r"not in .*ghost\.JPEG"):
        list_source(src, val_labels=custom)
    custom.write_text("\n".join([*rows[:-1], f"{names[-1]},n99999999"]) + "\n")
    with pytest.raises(LayoutError, match="'n99999999' is not one of the 3 classes"):
        list_source(src, val_labels=custom)
    (src / "val_labels.csv").unlink()
    with pytest.raises(LayoutError, match="give a labels file"):
        list_source(src)


@pytest.mark.parametrize("fmt", ["lines", "json-list", "json-keras", "json-map"])
def test_class_index_file_sets_the_class_order(tmp_path, fmt):
    src = make_tree(tmp_path / "src")
    order = ["n00000002", "n00000000", "n00000001"]
    path = tmp_path / ("classes.txt" if fmt == "lines" else "classes.json")
    if fmt == "lines":
        path.write_text("".join(f"{c} some words, names\n" for c in order))
    elif fmt == "json-list":
        path.write_text(json.dumps(order))
    elif fmt == "json-keras":
        path.write_text(json.dumps({str(i): [c, f"name {i}"] for i, c in enumerate(order)}))
    else:
        path.write_text(json.dumps({c: i for i, c in enumerate(order)}))
    assert read_class_index(path) == order
    (tmp_path / "twice.txt").write_text("n00000002\nn00000000\nn00000002\n")
    with pytest.raises(LayoutError, match="more than once: n00000002"):
        read_class_index(tmp_path / "twice.txt")
    classes, splits = list_source(src, class_index=path)
    assert classes == order
    first = splits["train"].files[0]
    assert first.startswith("n00000002/") and splits["train"].labels[0] == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty class", "class folder .*n00000001 has no images"),
        ("no classes", "has no class folders"),
        ("no train", "has no train/ folder"),
        ("no val", "has no val/"),
        ("unknown val class", "not training classes: n0000009"),
    ],
)
def test_layout_errors_name_the_problem(tmp_path, damage, message):
    src = make_tree(tmp_path)
    if damage == "empty class":
        for p in (src / "train" / "n00000001").iterdir():
            p.unlink()
    elif damage == "no classes":
        for folder in (src / "train").iterdir():
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
    elif damage == "no train":
        (src / "train").rename(src / "training")
    elif damage == "no val":
        (src / "val").rename(src / "validation")
    else:
        (src / "val" / "n00000001").rename(src / "val" / "n00000099")
    with pytest.raises(LayoutError, match=message):
        prepare(src, tmp_path / "out", size=SIZE, workers=0, progress=False, log=quiet)


# ----------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def special_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A tree whose first class also holds the special images: 4 convertible, 2 unreadable."""
    src = make_tree(tmp_path_factory.mktemp("special"), per_class=8)
    return src, write_special_images(src / "train" / "n00000000")


def test_prepare_converts_modes_and_skips_unreadable_files(special_tree, tmp_path):
    src, special = special_tree
    messages: list[str] = []
    report = prepare(src, tmp_path / "out", size=SIZE, workers=2, max_bad=0.1, progress=False, log=messages.append)
    assert report.complete and report.images == {"train": 3 * 8 + 4, "val": 6} and report.decoded == 30 + 6
    unreadable = {str(special["truncated.JPEG"]), str(special["text.JPEG"])}
    assert {path for path, _ in report.bad} == unreadable
    warned = [m for m in messages if m.startswith("warning: skipped unreadable image")]
    assert len(warned) == 2 and all(any(p in m for m in warned) for p in unreadable)
    assert any("images/s" in m for m in messages) and any("bad_files.txt" in m for m in messages)
    listed = (tmp_path / "out" / "bad_files.txt").read_text().splitlines()
    assert {line.split("\t")[0] for line in listed} == unreadable
    store = PreparedStore(tmp_path / "out")
    files = store.files()
    assert len(store) == len(files) == 28 and not any("truncated" in f or "text." in f for f in files)
    for name in ("grey.JPEG", "cmyk.JPEG", "palette.png", "rgba.png"):
        i = files.index(f"n00000000/{name}")
        np.testing.assert_array_equal(store.read(i), decode_image(special[name], SIZE))
        assert store.labels[i] == 0
    done = np.load(tmp_path / "out" / "train_done.npy")
    assert (done == BAD).sum() == 2 and (done == DONE).sum() == 28


def test_store_statistics_are_the_plain_definitions(special_tree, tmp_path):
    src, _ = special_tree
    prepare(src, tmp_path / "out", size=SIZE, workers=0, max_bad=0.1, progress=False, log=quiet)
    store = PreparedStore(tmp_path / "out")
    images = np.stack([store.read(i) for i in range(len(store))])
    stats = store.statistics
    np.testing.assert_allclose(stats.mean_image, images.mean(axis=0) / 255, rtol=1e-6)
    mean, std = channel_mean_std(images)
    np.testing.assert_allclose(stats.channel_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(stats.channel_std, std, rtol=1e-5)
    eigvals, eigvecs = rgb_pca(images)  # every pixel, streamed in float64
    np.testing.assert_allclose(stats.eigvals, eigvals, rtol=1e-5)
    np.testing.assert_allclose(stats.eigvecs, eigvecs, atol=1e-5)
    assert PreparedStore(tmp_path / "out", "val").statistics.images == len(store)  # the training set's, in every split
    stats.save(tmp_path / "stats.npz")
    back = Statistics.load(tmp_path / "stats.npz")
    for name in ("mean_image", "channel_mean", "channel_std", "eigvals", "eigvecs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
        assert getattr(back, name).dtype == np.float32
    assert back.images == stats.images


def test_too_many_unreadable_files_is_an_error_that_says_so(special_tree, tmp_path):
    src, _ = special_tree
    with pytest.raises(PrepareError, match=r"2 of the 30 train images \(6.67%\) could not be read: more than max_bad"):
        prepare(src, tmp_path / "out", size=SIZE, workers=0, progress=False, log=quiet)  # default max_bad: 1%
    assert len((tmp_path / "out" / "bad_files.txt").read_text().splitlines()) == 2
    # the images decoded so far are kept: a second run with a higher limit only decodes the rest and the bad ones
    report = prepare(src, tmp_path / "out", size=SIZE, workers=0, max_bad=0.1, progress=False, log=quiet)
    assert report.complete and report.decoded < 36


def store_bytes(out: Path) -> dict[str, bytes]:
    files = {name: (out / name).read_bytes() for name in [*STORE_ARRAYS, "mean_image.npy", "classes.json"]}
    meta = json.loads((out / "meta.json").read_text())
    files["statistics"] = json.dumps(meta["statistics"]).encode()
    return files


@pytest.mark.parametrize(("stop_after", "workers"), [(5, 2), (20, 0)])
def test_an_interrupted_prepare_resumed_gives_the_same_store(special_tree, tmp_path, stop_after, workers):
    src, _ = special_tree
    kwargs = {"size": SIZE, "max_bad": 0.1, "progress": False, "log": quiet}
    whole = prepare(src, tmp_path / "whole", workers=2, **kwargs)
    first = prepare(src, tmp_path / "resumed", workers=workers, stop_after=stop_after, **kwargs)
    assert not first.complete and first.decoded >= stop_after
    with pytest.raises(StoreError, match="did not finish"):
        PreparedStore(tmp_path / "resumed")
    done = np.load(tmp_path / "resumed" / "train_done.npy")
    finished = int((done == DONE).sum()) + int((np.load(tmp_path / "resumed" / "val_done.npy") == DONE).sum())
    assert finished == first.decoded - sum(1 for p, _ in first.bad)  # every decoded row is recorded
    second = prepare(src, tmp_path / "resumed", workers=1, **kwargs)
    assert second.complete
    assert second.decoded == whole.decoded - finished  # finished work is not redone (bad files are retried)
    assert store_bytes(tmp_path / "resumed") == store_bytes(tmp_path / "whole")
    again = prepare(src, tmp_path / "resumed", workers=1, **kwargs)
    assert again.complete and again.decoded == 0


def test_out_holding_something_else_is_an_error(tmp_path):
    src = make_tree(tmp_path / "src")
    prepare(src, tmp_path / "out", size=SIZE, workers=0, progress=False, log=quiet)
    with pytest.raises(PrepareError, match="another size"):
        prepare(src, tmp_path / "out", size=SIZE + 8, workers=0, progress=False, log=quiet)
    report = prepare(src, tmp_path / "out", size=SIZE + 8, workers=0, overwrite=True, progress=False, log=quiet)
    assert report.complete and PreparedStore(tmp_path / "out").size == SIZE + 8
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(PrepareError, match="not empty"):
        prepare(src, tmp_path / "mine", size=SIZE, workers=0, overwrite=True, progress=False, log=quiet)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_flat_validation_store_matches_the_class_folder_store(tmp_path):
    for name, flat in (("folders", False), ("flat", True)):
        prepare(make_tree(tmp_path / name, flat_val=flat), tmp_path / f"{name}-out", size=SIZE, workers=0,
                progress=False, log=quiet)  # fmt: skip
    a, b = PreparedStore(tmp_path / "folders-out", "val"), PreparedStore(tmp_path / "flat-out", "val")
    order_a = np.argsort([Path(f).name for f in a.files()])
    order_b = np.argsort(b.files())
    np.testing.assert_array_equal(a.labels[order_a], b.labels[order_b])
    for i, j in zip(order_a, order_b):
        np.testing.assert_array_equal(a.read(i), b.read(j))


def test_the_command_line(tmp_path, capsys):
    src = make_tree(tmp_path / "src")
    common = ["--size", str(SIZE), "--workers", "0", "--no-progress"]
    assert prepare_main([str(src), str(tmp_path / "out"), *common]) == 0
    assert "images/s with 0 worker(s)" in capsys.readouterr().out
    (src / "train" / "n00000001" / "broken.JPEG").write_text("junk")
    status = prepare_main([str(src), str(tmp_path / "out2"), *common])
    captured = capsys.readouterr()
    assert status == 2 and "error:" in captured.err and "more than max_bad = 1%" in captured.err
    assert "broken.JPEG" in captured.err
    assert prepare_main([str(src), str(tmp_path / "out2"), *common, "--max-bad", "10%"]) == 0
    # as a sub-command of a larger parser, the way `alexnet prepare` is wired
    parser = argparse.ArgumentParser(prog="alexnet")
    build_prepare_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["prepare", str(src), str(tmp_path / "out2"), *common, "--max-bad", "0.1"])
    assert parsed.func == "prepare" and parsed.max_bad == 0.1
    capsys.readouterr()
    assert run_prepare(parsed) == 0 and "already prepared" in capsys.readouterr().out


def test_write_store_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 8, 8), dtype=np.uint8)
    write_store(tmp_path, ["a", "b"], {"train": (images, np.arange(7) % 2)})
    store = PreparedStore(tmp_path)
    assert len(store) == 7 and store.classes == ["a", "b"] and store.size == 8
    np.testing.assert_array_equal(np.stack([store.read(i) for i in range(7)]), images)
    np.testing.assert_array_equal(store.labels, np.arange(7) % 2)
    with pytest.raises(StoreError, match="no 'val' split"):
        PreparedStore(tmp_path, "val")
    with pytest.raises(StoreError, match="run `alexnet prepare SRC"):
        PreparedStore(tmp_path / "nothing")


def group_members(pgid: int) -> list[int]:
    """The processes (zombies included) of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # the fields after the name: state, ppid, pgrp, ...
            members.append(int(entry.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or not hasattr(os, "mkfifo"), reason="/proc, FIFOs (Linux)")
def test_ctrl_c_stops_prepare_and_running_it_again_resumes(tmp_path):
    src = make_tree(tmp_path / "src", per_class=10)
    # A FIFO named like an image: the worker that opens it waits for a writer that never comes, so the
    # Ctrl-C surely lands while the preparation runs.
    stuck = src / "train" / "n00000001" / "n00000001_0003.JPEG"
    stuck.unlink()
    os.mkfifo(stuck)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "alexnet.data.prepare", str(src), str(out), "--size", str(SIZE)]
    command += ["--workers", "2", "--no-progress", "--max-bad", "10%"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)  # fmt: skip
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None and time.monotonic() < deadline:
            try:  # succeeds once a worker has opened the FIFO to read it; it then waits for data
                writer = os.open(stuck, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        assert writer is not None, "no worker opened the file"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the whole process group
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if writer is not None:
            os.close(writer)
    assert proc.returncode == 130 and "interrupted after" in err and "run the same command again" in err
    # No worker left, nor the fork server and resource tracker (they exit once the caller has gone).
    deadline = time.monotonic() + 15
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(proc.pid) == []
    stuck.unlink()
    stuck.write_text("no longer a FIFO, not an image either")
    kwargs = {"size": SIZE, "max_bad": 0.1, "progress": False, "log": quiet}
    resumed = prepare(src, out, workers=1, **kwargs)
    whole = prepare(src, tmp_path / "whole", workers=0, **kwargs)
    assert resumed.complete and resumed.decoded < whole.decoded
    assert store_bytes(out) == store_bytes(tmp_path / "whole")
