"""The figures of a run folder (`alexnet plot`, and the end of `alexnet train`): training curves, the conv1
kernels (the paper's Fig. 3), test images with their top-5 predictions and their nearest neighbours by fc7
features (Fig. 4).

May import: `alexnet.plots` (and so matplotlib: import this module only where figures are drawn),
`alexnet.config`, `alexnet.data`, `alexnet.inference`, `alexnet.run_data`, `alexnet.runs`, NumPy, the standard
library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alexnet import data, plots
from alexnet.config import TrainConfig
from alexnet.inference import class_names, features, normalization, probabilities
from alexnet.run_data import StreamData, prepare_data
from alexnet.runs import DATA_STATS, load_model, load_statistics, read_metrics


def sample_indices(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """min(size, n) distinct indices below n, drawn at random, in increasing order.

    Random rather than the first `size`: image folders list their images class by class.
    """
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def _read_images(source: Any, indices: np.ndarray) -> np.ndarray:
    """(K, 3, S, S) uint8: the readable ones of these images of a source (an unreadable file is left out)."""
    images = []
    for i in indices:
        try:
            images.append(source.read(int(i)))
        except ValueError:
            continue
    return np.stack(images)


def plot_run(run_dir: Path, device: str = "cpu", n_images: int = 8, bank_size: int = 2000) -> list[Path]:
    """Write the run's figures into RUN_DIR/plots: curves, conv1 kernels (Fig. 3), predictions (Fig. 4).

    Fig. 4 shows `n_images` test images (fewer if the test set is smaller) and their nearest neighbours
    among `bank_size` training images, both drawn at random with a fixed seed. Returns the files written.
    """
    out = run_dir / "plots"
    written = []
    metrics = read_metrics(run_dir / "metrics.jsonl")
    if metrics:
        written.append(plots.plot_training_curves(metrics, out / "curves.png", errors_as_fraction=True))
    model, meta = load_model(run_dir, device)  # the best epoch by validation error
    groups = model.config.groups if model.config.convs[1].grouped else 1
    conv1 = model.conv_layers[0].weight.numpy()
    title = f"{model.config.name}: the {conv1.shape[0]} conv1 kernels"
    written.append(plots.plot_kernel_grid(conv1, out / "conv1_kernels.png", groups=groups, title=title))

    size = model.config.image_size
    cfg = TrainConfig.from_saved(meta["train_config"])
    stats = load_statistics(run_dir / DATA_STATS) if model.config.in_channels == 3 else None
    prepared = prepare_data(cfg, model.config.in_channels, size, statistics=stats)
    mean, std = normalization(meta, run_dir)
    rng = np.random.default_rng(0)
    pick = sample_indices(len(prepared.test_labels), n_images, rng)
    bank_pick = sample_indices(len(prepared.train_labels), bank_size, rng)
    if isinstance(prepared, StreamData):  # read only the images shown, never the whole data set
        images = data.center_crop(_read_images(prepared.test, pick), size)
        bank = data.center_crop(_read_images(prepared.train, bank_pick), size)
    else:
        images = data.center_crop(prepared.test_images[pick], size)
        bank = data.center_crop(prepared.train_images[bank_pick], size)
    probs = probabilities(model, images, mean, std)
    written.append(
        plots.plot_predictions(
            images, probs, class_names(meta, model), out / "predictions.png", labels=prepared.test_labels[pick]
        )
    )
    neighbours = plots.nearest_neighbours(features(model, images, mean, std), features(model, bank, mean, std), k=6)
    written.append(plots.plot_nearest_neighbours(images, bank[neighbours], out / "nearest_neighbours.png"))
    return written
