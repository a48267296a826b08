"""Tests for alexnet/data/augment.py and alexnet/data/loader.py: the per-image augmentation against its plain
definition, and the background loader's guarantees (same batches for any number of workers, exact resume,
rank slices, memory flat in the data set's size, errors and Ctrl-C that end the workers, raw folders)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from alexnet.data import make_fake_imagefolder
from alexnet.data.augment import (
    Normalization,
    center_sample,
    center_sample_plain,
    epoch_order,
    sample_rng,
    ten_crop_sample,
    ten_crop_sample_plain,
    train_sample,
    train_sample_plain,
)
from alexnet.data.loader import BackgroundLoader, BadImageWarning, RawFolderSource, Subset, eval_batches
from alexnet.data.prepare import prepare
from alexnet.data.store import PreparedStore, Statistics, write_store
from alexnet.data.workers import WorkerDied, WorkerError

# float32 results of the fused path against the plain one: the same operations in another order, on values of
# magnitude up to about 1 / std (a few units), so a few float32 ulps of that.
ATOL_F32 = 2e-5
ROOT = Path(__file__).resolve().parents[1]


def random_store(root: Path, n: int, size: int = 32, classes: int = 5, seed: int = 0, n_val: int = 7) -> Path:
    """A prepared store of random images (a colour per class plus noise), written without decoding any file."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 160, size=(classes, 3, 1, 1), dtype=np.uint8)

    def images(count: int) -> np.ndarray:
        return base[np.arange(count) % classes] + rng.integers(0, 96, (count, 3, size, size), dtype=np.uint8)

    splits = {"train": (images(n), np.arange(n) % classes), "val": (images(n_val), np.arange(n_val) % classes)}
    return write_store(root, [f"c{i}" for i in range(classes)], splits)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_store(tmp_path_factory.mktemp("store"), n=45)


def stats_for(size: int, seed: int = 0) -> Statistics:
    rng = np.random.default_rng(seed)
    eigvecs = np.linalg.qr(rng.standard_normal((3, 3)))[0].astype(np.float32)
    return Statistics(
        rng.uniform(0.3, 0.7, (3, size, size)).astype(np.float32),
        rng.uniform(0.3, 0.7, 3).astype(np.float32),
        rng.uniform(0.1, 0.3, 3).astype(np.float32),
        np.array([0.2, 0.02, 0.005], np.float32),
        eigvecs,
        10,
    )


def all_batches(loader: BackgroundLoader, epoch: int, start: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.copy(), y) for x, y in loader.epoch(epoch, start)]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM raises in the test after `seconds`."""

    def fail(*_):
        raise TimeoutError(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class ExplodingStore(PreparedStore):
    """A store whose image 13 cannot be read: an error inside a worker's task."""

    def __reduce__(self) -> tuple:
        return (ExplodingStore, (str(self.root), self.split))

    def read(self, index: int) -> np.ndarray:
        if index == 13:
            raise RuntimeError("image 13 exploded")
        return super().read(index)


# ----------------------------------------------------------------------------- one image: fused == plain


@pytest.mark.parametrize("mean", ["image", "channel"])
@pytest.mark.parametrize(("flip", "lighting"), [(True, 0.1), (False, 0.1), (True, 0.0)])
def test_train_sample_is_the_plain_definition(mean, flip, lighting):
    size, crop = 40, 33
    stats = stats_for(size)
    norm = Normalization.from_statistics(stats, mean)
    image = np.random.default_rng(1).integers(0, 256, (3, size, size), dtype=np.uint8)
    for position in range(12):
        args = (crop, norm, stats.eigvals, stats.eigvecs, lighting, flip)
        plain = train_sample_plain(image, sample_rng(7, 3, position), *args)
        out = np.full((3, crop, crop), np.nan, np.float32)
        fused = train_sample(image, sample_rng(7, 3, position), *args, out=out)
        assert fused is out and fused.dtype == np.float32 and plain.dtype == np.float32
        np.testing.assert_allclose(fused, plain, rtol=0, atol=ATOL_F32)


@pytest.mark.parametrize("mean", ["image", "channel"])
def test_eval_samples_are_the_plain_definitions(mean):
    size, crop = 36, 29
    stats = stats_for(size, seed=2)
    norm = Normalization.from_statistics(stats, mean)
    image = np.random.default_rng(3).integers(0, 256, (3, size, size), dtype=np.uint8)
    np.testing.assert_allclose(center_sample(image, crop, norm), center_sample_plain(image, crop, norm), atol=ATOL_F32)
    ten = ten_crop_sample(image, crop, norm)
    assert ten.shape == (10, 3, crop, crop)
    np.testing.assert_allclose(ten, ten_crop_sample_plain(image, crop, norm), atol=ATOL_F32)


def test_normalization_modes_give_unit_scale_inputs():
    stats = stats_for(8)
    image = np.full((1, 3, 8, 8), 200, np.uint8)
    by_image = Normalization.from_statistics(stats, "image").apply(image)
    by_channel = Normalization.from_statistics(stats, "channel").apply(image)
    expected_image = (200 / 255 - stats.mean_image) / stats.channel_std[:, None, None]
    expected_channel = (200 / 255 - stats.channel_mean) / stats.channel_std
    np.testing.assert_allclose(by_image[0], expected_image, rtol=1e-6)
    np.testing.assert_allclose(by_channel[0, :, 0, 0], expected_channel, rtol=1e-6)
    with pytest.raises(ValueError, match="mean must be one of"):
        Normalization.from_statistics(stats, "pixel")


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(5, 0, 50, True), epoch_order(5, 1, 50, True)
    assert sorted(a) == list(range(50)) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, epoch_order(5, 0, 50, True))
    np.testing.assert_array_equal(epoch_order(5, 0, 50, False), np.arange(50))


# ----------------------------------------------------------------------------- the loader's batches


def test_batches_have_the_promised_shapes_and_labels(store_dir):
    store = PreparedStore(store_dir)
    with BackgroundLoader(store, 8, crop=27, workers=0, seed=1) as loader:
        batches = all_batches(loader, 0)
    assert len(loader) == len(batches) == 45 // 8  # drop_last for training
    order = epoch_order(1, 0, 45, True)
    for b, (x, y) in enumerate(batches):
        assert x.shape == (8, 3, 27, 27) and x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(y, store.labels[order[b * 8 : b * 8 + 8]])
    with eval_batches(store, 16, crop=27, workers=0) as loader:
        sizes = [len(y) for _, y in loader]
    assert sizes == [16, 16, 13]  # every image once, in order, the last batch smaller


def test_a_batch_is_the_per_image_augmentation(store_dir):
    store = PreparedStore(store_dir)
    with BackgroundLoader(store, 8, crop=27, workers=0, seed=4, mean="channel") as loader:
        batches = all_batches(loader, 2)
    norm = Normalization.from_statistics(store.statistics, "channel")
    order = epoch_order(4, 2, len(store), True)
    stats = store.statistics
    for b in (0, 3):
        for j in (0, 5):
            position = b * 8 + j
            expected = train_sample_plain(
                store.read(order[position]), sample_rng(4, 2, position), 27, norm, stats.eigvals, stats.eigvecs
            )
            np.testing.assert_allclose(batches[b][0][j], expected, atol=ATOL_F32)


def test_same_batches_for_any_number_of_workers(store_dir):
    store = PreparedStore(store_dir)
    results = {}
    for workers in (0, 1, 3):
        with BackgroundLoader(store, 8, crop=27, workers=workers, seed=9) as loader:
            results[workers] = all_batches(loader, 1)
            buffer_file = loader._buffer.filename if workers else None
        if buffer_file is not None:
            assert not os.path.exists(buffer_file)  # the shared buffer's name is removed once workers have it
    assert_same_batches(results[0], results[1])
    assert_same_batches(results[0], results[3])
    with BackgroundLoader(store, 8, crop=27, workers=0, seed=10) as loader:
        other_seed = all_batches(loader, 1)
    assert not np.array_equal(other_seed[0][0], results[0][0][0])


def test_exact_resume_with_workers(store_dir):
    store = PreparedStore(store_dir)
    with BackgroundLoader(store, 6, crop=25, workers=2, seed=3) as loader:
        epoch0 = all_batches(loader, 0)
        full = all_batches(loader, 1)
        # stop in the middle of epoch 1 (the generator is dropped with tasks in flight), then resume
        it = loader.epoch(1)
        next(it), next(it)
        del it
        tail = all_batches(loader, 1, start=4)
    assert_same_batches(tail, full[4:])
    assert not np.array_equal(epoch0[0][0], full[0][0])  # each epoch has its own order and crops
    with BackgroundLoader(store, 6, crop=25, workers=2, seed=3) as fresh:  # a new run started at that batch
        assert_same_batches(all_batches(fresh, 1, start=4), full[4:])


@pytest.mark.parametrize("mode", ["train", "center", "ten_crop"])
def test_rank_slices_put_together_are_the_global_batch(store_dir, mode):
    store = PreparedStore(store_dir)
    kwargs = {"crop": 25, "seed": 2, "mode": mode, "drop_last": False}
    with BackgroundLoader(store, 8, workers=0, **kwargs) as single:
        whole = all_batches(single, 3)
    ranks = []
    for rank in range(3):
        with BackgroundLoader(store, 8, workers=0, rank=rank, world_size=3, **kwargs) as loader:
            ranks.append(all_batches(loader, 3))
    axis = 1 if mode == "ten_crop" else 0
    for b, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([r[b][0] for r in ranks], axis=axis), x)
        np.testing.assert_array_equal(np.concatenate([r[b][1] for r in ranks]), y)


def test_a_subset_of_a_store(store_dir):
    store = PreparedStore(store_dir)
    indices = np.random.default_rng(0).permutation(len(store))[:20]
    subset = Subset(store, indices)
    assert len(subset) == 20 and subset.statistics is store.statistics
    np.testing.assert_array_equal(subset.labels, store.labels[indices])
    with BackgroundLoader(subset, 8, crop=25, workers=2, mode="center") as loader:
        batches = all_batches(loader, 0)
    norm = Normalization.from_statistics(store.statistics, "image")
    assert [len(y) for _, y in batches] == [8, 8, 4]
    expected = center_sample_plain(store.read(indices[11]), 25, norm)
    np.testing.assert_allclose(batches[1][0][3], expected, atol=ATOL_F32)
    with pytest.raises(ValueError, match=r"subset indices must be in 0\.\.44"):
        Subset(store, [3, 45])


def test_ten_crop_batches(store_dir):
    store = PreparedStore(store_dir, "val")
    norm = Normalization.from_statistics(store.statistics, "image")
    with eval_batches(store, 4, crop=25, ten_crop=True, workers=2) as loader:
        batches = [(x.copy(), y) for x, y in loader]
    assert [x.shape for x, _ in batches] == [(10, 4, 3, 25, 25), (10, 3, 3, 25, 25)]
    np.testing.assert_allclose(batches[1][0][:, 2], ten_crop_sample_plain(store.read(6), 25, norm), atol=ATOL_F32)


def test_batches_are_views_until_the_next_one_unless_copied(store_dir):
    store = PreparedStore(store_dir)
    with BackgroundLoader(store, 5, crop=25, workers=0, prefetch=1) as loader:
        seen = [x for x, _ in loader.epoch(0)]
        assert seen[0].base is not None and np.shares_memory(seen[0], seen[2])  # two slots, reused
    with BackgroundLoader(store, 5, crop=25, workers=0, prefetch=1, copy=True) as loader:
        owned = [x for x, _ in loader.epoch(0)]
    assert not np.shares_memory(owned[0], owned[2])
    with BackgroundLoader(store, 5, crop=25, workers=0, prefetch=1) as loader:
        np.testing.assert_array_equal(owned[2], all_batches(loader, 0)[2][0])


def test_settings_are_checked(store_dir):
    store = PreparedStore(store_dir)
    for kwargs, message in [
        ({"crop": 33}, "cannot crop 33x33"),
        ({"mode": "random"}, "mode must be one of"),
        ({"rank": 2, "world_size": 2}, "rank 2 is outside"),
        ({"mean": "median"}, "mean must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            BackgroundLoader(store, 4, **{"crop": 25, **kwargs})
    loader = BackgroundLoader(store, 4, crop=25, workers=0)
    with pytest.raises(ValueError, match="start_batch 12 is outside"):
        loader.epoch(0, start_batch=12)


# ----------------------------------------------------------------------------- memory, errors, shutdown


def peak_rss_kb(pid: int) -> int:
    """The peak resident memory of a process (VmHWM), in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_memory_is_flat_in_the_number_of_images(tmp_path):
    peaks = {}
    small, large = 160, 2048  # the small store has enough batches to use every batch buffer too
    for n in (small, large):
        store = PreparedStore(random_store(tmp_path / str(n), n=n, size=64, n_val=2))
        with BackgroundLoader(store, 32, crop=56, workers=2, seed=0) as loader:
            for _ in loader.epoch(0):
                pass
            peaks[n] = max(peak_rss_kb(pid) for pid in loader.worker_pids)
    store_growth_kb = (large - small) * 3 * 64 * 64 // 1024
    # A worker that kept the pages it reads mapped (and the neighbours each page fault maps with them) would
    # grow by about store_growth_kb (22 MB). What may grow: the epoch's order (8 bytes per image), noise.
    assert peaks[large] - peaks[small] < 2048 + 8 * large // 1024, (peaks, store_growth_kb)


def test_a_task_exception_reaches_the_caller(store_dir):
    store = ExplodingStore(store_dir)
    with deadline(60), BackgroundLoader(store, 8, crop=25, workers=2, mode="center") as loader:
        batches = loader.epoch(0)
        next(batches)  # images 0..7
        with pytest.raises(WorkerError, match="image 13 exploded"):
            next(batches)
        assert loader.worker_pids  # the workers survive a task's exception
        assert len(all_batches(loader, 0, start=2)) == 4  # and go on with the next epoch


def test_a_dead_worker_is_an_exception_not_a_hang(store_dir):
    store = PreparedStore(store_dir)
    with deadline(60), BackgroundLoader(store, 4, crop=25, workers=2, prefetch=1) as loader:
        it = loader.epoch(0)
        next(it)
        pids = loader.worker_pids
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(WorkerDied, match="killed by signal SIGKILL"):
            for _ in it:
                pass
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)  # every worker reaped, none a zombie


def test_close_ends_the_workers(store_dir):
    loader = BackgroundLoader(PreparedStore(store_dir), 8, crop=25, workers=2)
    next(iter(loader.epoch(0)))
    pids = loader.worker_pids
    assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    loader.close()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert len(all_batches(loader, 0)) == 5  # a closed loader starts new workers when used again
    loader.close()


CTRL_C_SCRIPT = """
import sys, time
from alexnet.data.loader import BackgroundLoader
from alexnet.data.store import PreparedStore

if __name__ == "__main__":
    loader = BackgroundLoader(PreparedStore(sys.argv[1]), 4, crop=25, workers=2)
    batches = loader.epoch(0)
    next(batches)
    print(*loader.worker_pids, flush=True)
    for epoch in range(1000):
        for x, y in loader.epoch(epoch):
            time.sleep(0.05)  # the "training step"
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups (POSIX)")
def test_ctrl_c_in_the_consumer_ends_the_workers(store_dir, tmp_path):
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, proc.stderr.read()
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the whole group
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    deadline_at = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline_at:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


# ----------------------------------------------------------------------------- raw folders


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("raw")
    make_fake_imagefolder(src / "train", classes=3, per_class=6, size=[(60, 45), (45, 60)], seed=0)
    make_fake_imagefolder(src / "val", classes=3, per_class=2, size=(50, 50), seed=1)
    return src


def test_raw_folder_gives_the_batches_of_its_prepared_store(raw_tree, tmp_path):
    prepare(raw_tree, tmp_path / "out", size=40, workers=0, progress=False, log=lambda _: None)
    store = PreparedStore(tmp_path / "out")
    raw = RawFolderSource(raw_tree, "train", size=40)
    assert len(raw) == len(store) == 18 and raw.classes == store.classes
    np.testing.assert_array_equal(raw.labels, store.labels)
    with BackgroundLoader(store, 6, crop=32, workers=0, seed=5) as prepared_loader:
        expected = all_batches(prepared_loader, 0)
    with BackgroundLoader(raw, 6, crop=32, workers=2, seed=5, statistics=store.statistics) as raw_loader:
        assert_same_batches(all_batches(raw_loader, 0), expected)


def test_raw_folder_skips_and_names_bad_files(raw_tree, tmp_path):
    src = tmp_path / "src"
    make_fake_imagefolder(src / "train", classes=2, per_class=5, size=(48, 40), seed=3)
    make_fake_imagefolder(src / "val", classes=2, per_class=1, size=(48, 40), seed=4)
    good = src / "train" / "n00000001" / "n00000001_0000.JPEG"
    broken = src / "train" / "n00000000" / "n00000000_0002.JPEG"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated
    (src / "train" / "n00000001" / "notes.JPEG").write_text("not an image")
    raw = RawFolderSource(src, "train", size=32)
    assert len(raw) == 11
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BackgroundLoader(raw, 4, crop=28, workers=2, mode="center") as loader:
            batches = all_batches(loader, 0)
            bad = dict(loader.bad_files)
    assert sorted(bad) == sorted([str(broken), str(src / "train" / "n00000001" / "notes.JPEG")])
    named = [str(w.message) for w in caught if issubclass(w.category, BadImageWarning)]
    assert len(named) == 2 and all("skipped unreadable image" in m for m in named)
    labels = np.concatenate([y for _, y in batches])
    assert len(labels) == 11  # every place filled: a bad file's goes to the next readable image
    files = [raw.describe(i) for i in range(len(raw))]
    expected = raw.labels.copy()
    for path in bad:
        i = files.index(path)
        expected[i] = raw.labels[(i + 1) % len(raw)]
    np.testing.assert_array_equal(labels, expected)
    assert str(good) in files
