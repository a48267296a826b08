"""Specification of the figures in `alexnet.plots`.

Every plotting function must write a real PNG (the signature, and Pillow opens it at a plausible
size) from small random inputs, grey and colour. The two pieces with exact answers are checked
exactly: `nearest_neighbours` against a brute-force loop, and `kernel_grid_image` pixel by pixel
for kernels with known values at the places its docstring gives.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: int = 50) -> tuple[int, int]:
    """`path` exists, starts with the PNG signature and opens in Pillow at >= min_size pixels a side."""
    path = Path(path)
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    assert width >= min_size and height >= min_size
    assert width < 10_000 and height < 10_000
    return width, height


def epoch_row(epoch: int, lr: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 2.3 / epoch,
        "val_loss": 2.4 / epoch,
        "train_top1_error": 0.5 / epoch,
        "val_top1_error": 0.55 / epoch,
        "val_top5_error": 0.2 / epoch,
        "lr": lr,
        "images_per_second": 100.0 + epoch,
    }


# ----------------------------------------------------------------------------- training curves


def test_training_curves_full_run(tmp_path):
    lrs = [0.01] * 4 + [0.001] * 3 + [0.0001] * 3
    metrics = [epoch_row(e, lr) for e, lr in enumerate(lrs, start=1)]
    out = plots.plot_training_curves(metrics, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    width, height = assert_png(out)
    assert width > height  # panels side by side


def test_training_curves_single_epoch(tmp_path):
    out = plots.plot_training_curves([epoch_row(1, 0.01)], tmp_path / "one.png")
    assert_png(out)


def test_training_curves_missing_keys(tmp_path):
    metrics = [
        {"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_top1_error": 0.6, "train_top1_error": None},
        {"epoch": 2, "train_loss": 1.5, "val_top1_error": float("nan"), "val_top5_error": 0.3},
        {"train_loss": 1.2},  # no epoch: its position is used
    ]
    out = plots.plot_training_curves(metrics, tmp_path / "sub" / "missing.png")  # parent is created
    assert_png(out)


def test_training_curves_no_metrics_at_all(tmp_path):
    assert_png(plots.plot_training_curves([{}], tmp_path / "empty.png"))


# ----------------------------------------------------------------------------- kernel grid


@pytest.mark.parametrize("n_kernels", [1, 7, 12, 96, 256])
@pytest.mark.parametrize("groups", [1, 2])
def test_kernel_grid_shape_holds_every_kernel(n_kernels, groups):
    if n_kernels % groups:
        with pytest.raises(ValueError):
            plots.kernel_grid_shape(n_kernels, groups)
        return
    rows, cols = plots.kernel_grid_shape(n_kernels, groups)
    per_group = n_kernels // groups
    assert rows * cols >= per_group > (rows - 1) * cols  # no empty row
    if n_kernels >= 12:  # close to square
        assert 0.5 <= cols / (rows * groups) <= 2.0


def test_kernel_grid_places_known_kernels():
    rng = np.random.default_rng(0)
    n_out, kh, kw, scale, gap, group_gap = 12, 3, 3, 4, 2, 7
    weights = rng.standard_normal((n_out, 3, kh, kw)).astype(np.float32)
    ramp = np.arange(3 * kh * kw, dtype=np.float32).reshape(3, kh, kw)
    weights[1] = 10.0 + 2.0 * ramp  # min-max normalises to ramp / ramp.max()
    weights[6] = -5.0  # constant: mid-grey
    weights[7] = 3.0 - ramp  # reversed ramp

    grid = plots.kernel_grid_image(weights, groups=2, scale=scale, gap=gap, group_gap=group_gap)
    rows, cols = plots.kernel_grid_shape(n_out, 2)
    tile = kh * scale
    block_h = rows * (tile + gap) - gap
    assert grid.shape == (2 * block_h + group_gap, cols * (tile + gap) - gap, 3)
    assert grid.min() >= 0.0 and grid.max() <= 1.0

    def tile_at(index):
        group, within = divmod(index, n_out // 2)
        row, col = divmod(within, cols)
        y = group * (block_h + group_gap) + row * (tile + gap)
        x = col * (tile + gap)
        return grid[y : y + tile, x : x + tile]

    def upscaled(kernel):  # (3, kh, kw) in [0, 1] -> (tile, tile, 3)
        return np.kron(np.transpose(kernel, (1, 2, 0)), np.ones((scale, scale, 1)))

    expected = ramp / ramp.max()
    np.testing.assert_allclose(tile_at(1), upscaled(expected), atol=1e-6)
    np.testing.assert_allclose(tile_at(6), 0.5)  # first kernel of group 2: top-left of the second block
    np.testing.assert_allclose(tile_at(7), upscaled(1.0 - expected), atol=1e-6)
    # Every kernel spans [0, 1] on its own (except the constant one).
    for index in set(range(n_out)) - {6}:
        assert tile_at(index).min() == pytest.approx(0.0) and tile_at(index).max() == pytest.approx(1.0)
    # The gaps are white: the column of pixels right after the first tile, and the band between groups.
    np.testing.assert_array_equal(grid[:block_h, tile : tile + gap], 1.0)
    np.testing.assert_array_equal(grid[block_h : block_h + group_gap], 1.0)


def test_kernel_grid_grey_and_many_channels():
    weights = np.zeros((4, 1, 2, 2))
    weights[2, 0] = [[0.0, 1.0], [2.0, 3.0]]
    grid = plots.kernel_grid_image(weights, groups=1, scale=1, gap=1)
    rows, cols = plots.kernel_grid_shape(4, 1)
    assert (rows, cols) == (2, 2)
    np.testing.assert_allclose(grid[3:5, 0:2, 0], [[0.0, 1 / 3], [2 / 3, 1.0]])
    assert np.all(grid[..., 0] == grid[..., 1]) and np.all(grid[..., 1] == grid[..., 2])  # grey
    np.testing.assert_allclose(grid[0:2, 0:2], 0.5)  # constant (all-zero) kernel

    # C = 4: the channel mean, in grey.
    weights = np.stack([np.full((4, 2, 2), 1.0), np.broadcast_to(np.arange(4.0).reshape(1, 2, 2), (4, 2, 2))])
    grid = plots.kernel_grid_image(weights, scale=2, gap=0)
    assert grid.shape == (4, 8, 3)
    np.testing.assert_allclose(grid[:2, :2, 0], 0.5)
    np.testing.assert_allclose(grid[:, 4:, 1], np.kron(np.arange(4.0).reshape(2, 2) / 3, np.ones((2, 2))))


def test_kernel_grid_rejects_bad_groups():
    with pytest.raises(ValueError):
        plots.kernel_grid_image(np.zeros((5, 3, 3, 3)), groups=2)
    with pytest.raises(ValueError):
        plots.kernel_grid_image(np.zeros((5, 3, 3)))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_plot_kernel_grid_writes_png(tmp_path, channels, groups):
    weights = np.random.default_rng(1).standard_normal((16, channels, 5, 5)).astype(np.float32)
    out = plots.plot_kernel_grid(weights, tmp_path / f"kernels_{channels}_{groups}.png", groups=groups)
    assert_png(out, min_size=100)


# ----------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("with_labels", [True, False])
def test_plot_predictions_writes_png(tmp_path, channels, dtype, with_labels):
    rng = np.random.default_rng(2)
    n_classes = 10
    if dtype == np.uint8:
        images = rng.integers(0, 256, size=(10, channels, 16, 16), dtype=np.uint8)
    else:
        images = rng.standard_normal((10, channels, 16, 16)).astype(np.float32)
    logits = rng.standard_normal((10, n_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = [f"class {i}" for i in range(n_classes)]
    labels = rng.integers(0, n_classes, size=10) if with_labels else None
    out = plots.plot_predictions(images, probs, names, tmp_path / "pred.png", labels=labels, k=5)
    width, height = assert_png(out, min_size=100)
    assert width > height  # at most 8 images, side by side


def test_plot_predictions_fewer_classes_than_k(tmp_path):
    images = np.zeros((2, 3, 8, 8), dtype=np.float32)  # constant images must not divide by zero
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert_png(plots.plot_predictions(images, probs, ["a", "b"], tmp_path / "p.png", labels=np.array([0, 1])))


def test_plot_predictions_checks_shapes(tmp_path):
    with pytest.raises(ValueError):
        plots.plot_predictions(np.zeros((2, 3, 8, 8)), np.zeros((3, 4)), list("abcd"), tmp_path / "x.png")
    with pytest.raises(ValueError):
        plots.plot_predictions(np.zeros((2, 3, 8, 8)), np.zeros((2, 4)), list("abc"), tmp_path / "x.png")


# ----------------------------------------------------------------------------- nearest neighbours


def brute_force_neighbours(query, bank, k):
    result = []
    for q in query:
        distances = [math.dist(q, b) for b in bank]
        result.append(sorted(range(len(bank)), key=lambda i: (distances[i], i))[:k])
    return np.array(result)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_neighbours_matches_brute_force(dtype):
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((40, 6)).astype(dtype)
    query = rng.standard_normal((5, 6)).astype(dtype)
    got = plots.nearest_neighbours(query, bank, k=7)
    assert got.shape == (5, 7) and got.dtype == np.int64
    np.testing.assert_array_equal(got, brute_force_neighbours(query.astype(np.float64), bank.astype(np.float64), 7))


def test_nearest_neighbours_excludes_nothing():
    bank = np.random.default_rng(4).standard_normal((20, 3))
    got = plots.nearest_neighbours(bank[[4, 11]], bank, k=3)
    np.testing.assert_array_equal(got[:, 0], [4, 11])  # each query is its own nearest neighbour
    np.testing.assert_array_equal(plots.nearest_neighbours(bank, bank, k=20)[:, 0], np.arange(20))
    with pytest.raises(ValueError):
        plots.nearest_neighbours(bank, bank, k=21)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_nearest_neighbours_writes_png(tmp_path, channels):
    rng = np.random.default_rng(5)
    bank_images = rng.integers(0, 256, size=(30, channels, 12, 12), dtype=np.uint8)
    features = rng.standard_normal((30, 8))
    index = plots.nearest_neighbours(features[:4], features, k=5)
    out = plots.plot_nearest_neighbours(bank_images[:4], bank_images[index], tmp_path / "nn.png")
    width, height = assert_png(out, min_size=100)
    assert width > height  # 4 rows of 1 + 5 images
