"""Tests for alexnet/data/: IDX files, Fashion-MNIST, batching, transforms, image folders."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet import data
from alexnet.data import (
    CLASS_NAMES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    DataLoader,
    ImageFolder,
    center_crop,
    channel_mean_std,
    eval_transform,
    iterate_batches,
    load_fashion_mnist,
    load_image,
    make_fake_imagefolder,
    normalize,
    pca_lighting,
    random_crop,
    random_horizontal_flip,
    read_idx,
    rgb_pca,
    ten_crop,
    to_unit_float,
    train_transform,
    write_idx,
)

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- IDX reader


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand (independently of write_idx)."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((5, 4, 3)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    back = read_idx(path, expected_ndim=3)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable, not a view of the file's bytes


def test_idx_reads_hand_made_label_file(tmp_path):
    labels = bytes([3, 1, 4, 1, 5, 9, 2, 6])
    raw = idx_bytes(0x08, (8,), labels)
    assert raw[:4] == b"\x00\x00\x08\x01"  # the magic number 0x00000801 of uint8 label files
    (tmp_path / "labels").write_bytes(raw)
    (tmp_path / "labels.gz").write_bytes(gzip.compress(raw))
    for name in ("labels", "labels.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, expected_ndim=1), list(labels))
    # Big-endian int32 in the file, native in memory.
    (tmp_path / "i32").write_bytes(idx_bytes(0x0C, (2,), struct.pack(">2i", -2, 70000)))
    np.testing.assert_array_equal(read_idx(tmp_path / "i32"), [-2, 70000])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "bad magic number 0x01000801"),
        (idx_bytes(0x0A, (2,), b"ab"), "unsupported IDX dtype code 0x0A"),
        (idx_bytes(0x08, (2, 3, 4), bytes(20)), "truncated data"),
        (idx_bytes(0x08, (2,), b"abc"), "1 unexpected trailing bytes"),
        (idx_bytes(0x0B, (3,), bytes(5)), "truncated data"),  # int16: 3 values need 6 bytes
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
def test_idx_malformed_raises_value_error(tmp_path, content, message):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)  # every message names the file


def test_idx_wrong_ndim_not_gzip_corrupt_gzip_and_missing(tmp_path):
    labels = write_idx(tmp_path / "labels", np.arange(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 3 dimension"):
        read_idx(labels, expected_ndim=3)

    fake_gz = tmp_path / "images.gz"
    fake_gz.write_bytes(labels.read_bytes())
    with pytest.raises(ValueError, match="not gzip"):
        read_idx(fake_gz)

    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(idx_bytes(0x08, (1000,), bytes(range(250)) * 4))[:30])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(cut)

    with pytest.raises(FileNotFoundError, match="no-such-file"):
        read_idx(tmp_path / "no-such-file.gz")


# ----------------------------------------------------------------------------- Fashion-MNIST


def write_fake_fashion(directory: Path, n_train: int, n_test: int, gz: bool = True) -> Path:
    """Tiny IDX files with the official names; labels cycle through 0..9."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n_train)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        write_idx(
            directory / (FASHION_MNIST_FILES[f"{split}_images"] + suffix),
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(directory / (FASHION_MNIST_FILES[f"{split}_labels"] + suffix), np.arange(n, dtype=np.uint8) % 10)
    return directory


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)


@pytest.mark.skipif(not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent")
def test_full_fashion_mnist(no_env):
    ds = load_fashion_mnist(SYSTEM_DIR)
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.train.images.shape == (60000, 1, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (10000, 1, 28, 28)
    for split in (ds.train, ds.test):
        assert split.labels.dtype == np.int64
        assert split.labels.min() == 0 and split.labels.max() == 9
    np.testing.assert_array_equal(np.bincount(ds.train.labels), [6000] * 10)
    assert ds.source == f"full Fashion-MNIST from {SYSTEM_DIR}"
    assert ds.class_names == CLASS_NAMES and ds.num_classes == 10

    # The bundled subset is exactly the official images at the recorded positions.
    with np.load(data.BUNDLED_SUBSET) as npz:
        for split in ("train", "test"):
            idx = npz[f"{split}_indices"].astype(np.int64)
            full = getattr(ds, split)
            np.testing.assert_array_equal(npz[f"{split}_images"], full.images[idx, 0])
            np.testing.assert_array_equal(npz[f"{split}_labels"], full.labels[idx])


def test_bundled_subset():
    ds = load_fashion_mnist(subset=True)
    assert ds.source.startswith("bundled subset")
    assert ds.train.images.dtype == np.uint8 and ds.train.images.shape[1:] == (1, 28, 28)
    assert ds.test.images.dtype == np.uint8 and ds.test.images.shape[1:] == (1, 28, 28)
    assert ds.train.labels.dtype == np.int64
    train_counts, test_counts = np.bincount(ds.train.labels), np.bincount(ds.test.labels)
    assert len(train_counts) == 10 and (train_counts == train_counts[0]).all() and train_counts[0] >= 500
    assert len(test_counts) == 10 and (test_counts == test_counts[0]).all() and test_counts[0] >= 100
    assert data.BUNDLED_SUBSET.stat().st_size < 5.5e6
    assert (data.BUNDLED_SUBSET.parent / "FASHION_MNIST_LICENSE.txt").is_file()


def test_resolution_order(tmp_path, monkeypatch, no_env):
    env_dir = write_fake_fashion(tmp_path / "env", 20, 10)
    arg_dir = write_fake_fashion(tmp_path / "arg", 30, 10, gz=False)  # un-gzipped files work too
    system_dir = write_fake_fashion(tmp_path / "system", 40, 10)
    monkeypatch.setattr(data.fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", system_dir)

    # 3. the system directory, when nothing else is set
    ds = load_fashion_mnist()
    assert len(ds.train) == 40 and ds.source == f"full Fashion-MNIST from {system_dir}"
    assert ds.train.images.shape == (40, 1, 28, 28) and len(ds.test) == 10
    # 2. the environment variable beats it
    monkeypatch.setenv(FASHION_MNIST_ENV, str(env_dir))
    ds = load_fashion_mnist()
    assert len(ds.train) == 20 and str(env_dir) in ds.source
    # 1. the argument beats both
    ds = load_fashion_mnist(arg_dir)
    assert len(ds.train) == 30 and str(arg_dir) in ds.source
    # 4. with none of them, the bundled subset
    monkeypatch.delenv(FASHION_MNIST_ENV)
    monkeypatch.setattr(data.fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "nowhere")
    assert load_fashion_mnist().source.startswith("bundled subset")


def test_missing_files_are_named(tmp_path, monkeypatch, no_env):
    partial = write_fake_fashion(tmp_path / "partial", 20, 10)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        load_fashion_mnist(partial)
    assert "train-images" not in str(info.value)  # only the missing file is listed
    with pytest.raises(FileNotFoundError, match=re.escape("train-images-idx3-ubyte.gz, train-labels")):
        load_fashion_mnist(tmp_path / "empty")
    # A set environment variable that points at incomplete data is an error, not a silent fallback.
    monkeypatch.setenv(FASHION_MNIST_ENV, str(partial))
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_fashion_mnist()


def test_bad_labels_rejected(tmp_path):
    directory = write_fake_fashion(tmp_path / "d", 20, 10)
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.full(20, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        load_fashion_mnist(directory)
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(ValueError, match="20 images but labels"):
        load_fashion_mnist(directory)


# ----------------------------------------------------------------------------- batching


def indexed_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 2, 2) uint8 images whose pixels all equal the sample's index (mod 256), labels = index."""
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 1, 2, 2)).copy()
    return images, np.arange(n)


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_per_epoch(shuffle):
    images, labels = indexed_images(103)
    batches = list(iterate_batches(images, labels, 10, shuffle, np.random.default_rng(0)))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    seen = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.sort(seen), labels)
    assert (seen != labels).any() == shuffle  # shuffled order differs from 0..102, unshuffled does not
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (len(y), 1, 2, 2)
        np.testing.assert_allclose(x[:, 0, 0, 0], (y % 256) / 255, rtol=1e-6)  # images travel with labels

    dropped = list(iterate_batches(images, labels, 10, shuffle, np.random.default_rng(0), drop_last=True))
    assert [len(y) for _, y in dropped] == [10] * 10
    assert len(np.unique(np.concatenate([y for _, y in dropped]))) == 100


def test_batches_reproducible_by_seed():
    images, labels = indexed_images(50)

    def order(seed: int) -> np.ndarray:
        return np.concatenate([y for _, y in iterate_batches(images, labels, 8, True, np.random.default_rng(seed))])

    np.testing.assert_array_equal(order(1), order(1))
    assert (order(1) != order(2)).any()


def test_dataloader_len_epochs_and_normalization():
    images, labels = indexed_images(25)
    loader = DataLoader(images, labels, 10, shuffle=True, rng=np.random.default_rng(0), mean=[0.2], std=[0.5])
    assert len(loader) == 3
    assert len(DataLoader(images, labels, 10, drop_last=True)) == 2
    epoch1 = [y for _, y in loader]
    epoch2 = [y for _, y in loader]
    assert len(epoch1) == 3 and (np.concatenate(epoch1) != np.concatenate(epoch2)).any()  # new order each epoch
    x, y = next(iter(loader))
    np.testing.assert_allclose(x[:, 0, 0, 0], (y / 255 - 0.2) / 0.5, rtol=1e-5, atol=1e-6)
    assert x.dtype == np.float32

    with pytest.raises(ValueError, match="needs an rng"):
        next(iterate_batches(images, labels, 10, True, None))


def test_transform_gets_rng_and_fused_conversion_matches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    got = []

    def transform(batch, r):
        got.append(r)
        return center_crop(batch, 4)

    gen = np.random.default_rng(1)
    x, _ = next(iterate_batches(images, np.zeros(6), 6, False, gen, transform=transform, mean=mean, std=std))
    assert got == [gen] and x.shape == (6, 3, 4, 4)
    # The loader's one-pass uint8 -> normalized float32 equals the explicit two steps.
    np.testing.assert_allclose(x, normalize(to_unit_float(center_crop(images, 4)), mean, std), rtol=1e-5, atol=1e-6)
    # A float32 data set is used as is, and the loader never normalizes it in place.
    floats = to_unit_float(images)
    before = floats.copy()
    x, _ = next(iterate_batches(floats, np.zeros(6), 6, False, None, transform=lambda b, r: b, mean=mean, std=std))
    np.testing.assert_array_equal(floats, before)
    np.testing.assert_allclose(x, normalize(floats, mean, std))
    with pytest.raises(TypeError, match="float64"):
        next(iterate_batches(images.astype(np.float64), np.zeros(6), 6, False, None))


# ----------------------------------------------------------------------------- transforms


def position_batch(b: int = 4, c: int = 3, h: int = 10, w: int = 12) -> np.ndarray:
    """float32 batch whose values encode (image, channel, row, column), so every crop is identifiable."""
    return np.arange(b * c * h * w, dtype=np.float32).reshape(b, c, h, w)


def test_random_crop_takes_real_windows():
    batch = position_batch()
    crops = random_crop(batch, (6, 5), np.random.default_rng(0))
    assert crops.shape == (4, 3, 6, 5) and crops.dtype == np.float32
    for i in range(4):
        top, left = np.argwhere(batch[i, 0] == crops[i, 0, 0, 0])[0]
        np.testing.assert_array_equal(crops[i], batch[i, :, top : top + 6, left : left + 5])
    # Over many draws every offset 0..H-h occurs, and the same seed gives the same crops.
    many = random_crop(np.repeat(batch[:1], 400, axis=0), 6, np.random.default_rng(1))
    tops = (many[:, 0, 0, 0] // 12).astype(int)
    assert set(tops) == set(range(5))
    np.testing.assert_array_equal(many, random_crop(np.repeat(batch[:1], 400, axis=0), 6, np.random.default_rng(1)))
    # Uint8 keeps its dtype; padding adds zeros around the image first.
    padded = random_crop(np.full((200, 1, 4, 4), 7, np.uint8), 4, np.random.default_rng(2), padding=2)
    assert padded.shape == (200, 1, 4, 4) and padded.dtype == np.uint8
    assert (padded == 0).any() and (padded == 7).any() and set(np.unique(padded)) == {0, 7}
    with pytest.raises(ValueError, match="cannot crop"):
        random_crop(batch, 11, np.random.default_rng(0))


def test_random_horizontal_flip():
    batch = position_batch(b=64)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(random_horizontal_flip(batch, rng, p=1.0), batch[:, :, :, ::-1])
    np.testing.assert_array_equal(random_horizontal_flip(batch, rng, p=0.0), batch)
    before = batch.copy()
    out = random_horizontal_flip(batch, rng)
    np.testing.assert_array_equal(batch, before)  # the input is not modified
    flipped = np.array([np.array_equal(out[i], batch[i, :, :, ::-1]) for i in range(64)])
    kept = np.array([np.array_equal(out[i], batch[i]) for i in range(64)])
    assert (flipped ^ kept).all() and 10 < flipped.sum() < 54
    # Reference slice: column 0 of a flipped image is the original's last column.
    i = int(np.argmax(flipped))
    np.testing.assert_array_equal(out[i, :, :, 0], batch[i, :, :, -1])


def test_center_crop_and_ten_crop_against_slices():
    batch = position_batch(h=10, w=13)
    np.testing.assert_array_equal(center_crop(batch, 6), batch[:, :, 2:8, 3:9])
    np.testing.assert_array_equal(center_crop(batch, (4, 13)), batch[:, :, 3:7, :])

    crops = ten_crop(batch, 6)
    assert crops.shape == (10, 4, 3, 6, 6) and crops.dtype == batch.dtype
    expected = [
        batch[:, :, 0:6, 0:6],  # top-left
        batch[:, :, 0:6, 7:13],  # top-right
        batch[:, :, 4:10, 0:6],  # bottom-left
        batch[:, :, 4:10, 7:13],  # bottom-right
        batch[:, :, 2:8, 3:9],  # centre
    ]
    for k, ref in enumerate(expected):
        np.testing.assert_array_equal(crops[k], ref)
        np.testing.assert_array_equal(crops[k + 5], ref[..., ::-1])  # the mirror images
    # The paper's shapes: 256x256 -> ten 227x227 views.
    assert ten_crop(np.zeros((2, 3, 256, 256), np.uint8), 227).shape == (10, 2, 3, 227, 227)


def test_pca_lighting_offsets():
    rng = np.random.default_rng(0)
    eigvals = np.array([0.2, 0.02, 0.005], np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    eigvecs = q.astype(np.float32)
    batch = rng.random((4000, 3, 5, 6), dtype=np.float32)
    out = pca_lighting(batch, eigvals, eigvecs, np.random.default_rng(1), std=0.1)
    assert out.dtype == np.float32 and out.shape == batch.shape
    delta = out - batch
    # One RGB offset per image: the same at every pixel.
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :, :1, :1], delta.shape), atol=1e-6)
    offsets = delta[:, :, 0, 0].astype(np.float64)  # (B, 3)
    # In the eigenbasis an offset is alpha_i * lambda_i with alpha_i ~ N(0, 0.1).
    alpha = (offsets @ eigvecs) / eigvals
    np.testing.assert_allclose(alpha.mean(axis=0), 0, atol=0.01)
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.06)
    assert abs(np.corrcoef(alpha.T)[0, 1]) < 0.1  # drawn independently
    # Same seed, same offsets; in place with out=.
    again = batch.copy()
    pca_lighting(again, eigvals, eigvecs, np.random.default_rng(1), std=0.1, out=again)
    np.testing.assert_array_equal(again, out)
    with pytest.raises(TypeError, match="float32"):
        pca_lighting(np.zeros((1, 3, 2, 2), np.uint8), eigvals, eigvecs, rng)


def test_rgb_pca_matches_np_cov():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 0.3]])
    pixels = rng.standard_normal((6 * 7 * 8, 3)) @ mix * 0.1 + 0.5  # correlated RGB, (P, 3)
    images = pixels.reshape(6, 7, 8, 3).transpose(0, 3, 1, 2).astype(np.float32)  # (N, 3, H, W)
    eigvals, eigvecs = rgb_pca(images)
    assert eigvals.dtype == np.float32 and eigvecs.dtype == np.float32
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(images.transpose(0, 2, 3, 1).reshape(-1, 3), rowvar=False))
    np.testing.assert_allclose(eigvals, ref_vals[::-1], rtol=1e-4)
    assert (np.diff(eigvals) <= 0).all()
    # Eigenvectors agree up to sign: |V^T V_ref| is the (anti-diagonal, for reversed order) identity.
    np.testing.assert_allclose(np.abs(eigvecs.T @ ref_vecs[:, ::-1]), np.eye(3), atol=1e-4)

    # uint8 is put on the [0, 1] scale; sampling pixels with an rng gives nearly the same answer.
    u8 = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    u8[:, 1] = u8[:, 0] // 2 + u8[:, 1] // 2  # correlate G with R
    exact_vals, exact_vecs = rgb_pca(u8)
    ref = np.linalg.eigvalsh(np.cov(u8.transpose(0, 2, 3, 1).reshape(-1, 3) / 255.0, rowvar=False))
    np.testing.assert_allclose(exact_vals, ref[::-1], rtol=1e-4)
    sampled_vals, sampled_vecs = rgb_pca(u8, rng=np.random.default_rng(3), max_pixels=15000)
    np.testing.assert_allclose(sampled_vals, exact_vals, rtol=0.05)
    assert np.abs(np.diag(sampled_vecs.T @ exact_vecs)).min() > 0.99


def test_channel_mean_std_and_to_unit_float():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 9, 11), dtype=np.uint8)
    mean, std = channel_mean_std(images)
    scaled = images / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-5)
    assert mean.dtype == np.float32 and std.shape == (3,)
    x = to_unit_float(images)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x, scaled, rtol=1e-6)
    z = normalize(x, mean, std)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_paper_train_and_eval_transforms():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    eigvals, eigvecs = rgb_pca(batch)
    x = train_transform(27, eigvals, eigvecs)(batch, rng)
    assert x.shape == (4, 3, 27, 27) and x.dtype == np.float32
    x = train_transform(27)(batch, rng)
    assert x.shape == (4, 3, 27, 27) and x.dtype == np.uint8  # no lighting: stays uint8 for the loader
    np.testing.assert_array_equal(eval_transform(27)(batch, None), center_crop(batch, 27))


# ----------------------------------------------------------------------------- image folders


def test_image_folder_on_generated_jpegs(tmp_path):
    sizes = [(320, 240), (200, 300), (256, 256), (500, 120), (64, 48)]  # wide, tall, square, very wide, small
    root = make_fake_imagefolder(tmp_path / "train", classes=["n02", "n01", "n03"], per_class=5, size=sizes, seed=0)
    assert sorted(p.suffix for p in root.glob("*/*")) == [".JPEG"] * 15
    (root / "n01" / "notes.txt").write_text("not an image")  # ignored
    folder = ImageFolder(root)
    assert folder.classes == ["n01", "n02", "n03"] and folder.class_to_idx["n03"] == 2
    assert len(folder) == 15
    np.testing.assert_array_equal(folder.labels, [0] * 5 + [1] * 5 + [2] * 5)
    for i in range(len(folder)):
        image, label = folder[i]
        assert image.shape == (3, 256, 256) and image.dtype == np.uint8
        assert folder.classes[label] == folder.samples[i][0].parent.name
    images, labels = folder.load_all()
    assert images.shape == (15, 3, 256, 256) and images.dtype == np.uint8 and labels.dtype == np.int64
    # Classes have different colours, so a learner has something to learn.
    class_means = np.array([images[labels == c].mean(axis=(0, 2, 3)) for c in range(3)])
    assert np.abs(class_means[:, None] - class_means[None]).max() > 10
    # Smaller sizes work too (e.g. for quick CPU tests).
    assert ImageFolder(root, resize=64)[0][0].shape == (3, 64, 64)


def test_load_image_resizes_short_side_and_crops_centre(tmp_path):
    # 512x256 (W x H): red | green | green | blue quarters. Short side is already 256, so the
    # centre 256x256 crop is exactly the green middle half. PNG is lossless.
    hwc = np.zeros((256, 512, 3), np.uint8)
    hwc[:, :128, 0] = 255
    hwc[:, 128:384, 1] = 255
    hwc[:, 384:, 2] = 255
    Image.fromarray(hwc).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png")
    assert image.shape == (3, 256, 256)
    np.testing.assert_array_equal(image[1], 255)
    np.testing.assert_array_equal(image[[0, 2]], 0)
    # A tall greyscale JPEG becomes 3 equal channels.
    Image.fromarray(np.full((400, 100), 77, np.uint8), "L").save(tmp_path / "tall.jpg")
    grey = load_image(tmp_path / "tall.jpg", resize=32)
    assert grey.shape == (3, 32, 32)
    assert np.abs(grey.astype(int) - 77).max() <= 2 and (grey[0] == grey[1]).all()


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-directories"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(ValueError, match=re.escape("no .jpeg/.jpg/.png images")):
        ImageFolder(tmp_path / "empty")


def test_an_unreadable_image_is_named_in_the_error(tmp_path):
    (tmp_path / "cls").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cls" / "fine.png")
    (tmp_path / "cls" / "not_a_photo.jpg").write_bytes(b"x\n")
    cut = tmp_path / "cls" / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])  # truncated, as an interrupted copy leaves it
    for name in ["not_a_photo.jpg", "cut.jpg"]:
        with pytest.raises(ValueError, match=f"cannot read image .*{re.escape(name)}"):
            load_image(tmp_path / "cls" / name)
    with pytest.raises(ValueError, match=r"cannot read image .*cut\.jpg"):
        ImageFolder(tmp_path, resize=8).load_all()  # sorted: cut.jpg comes first
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "cls" / "missing.png")
