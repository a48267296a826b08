"""A trained model applied to images: class probabilities (the library's softmax), fc7 features, and image
files read the way the model's training data was (`alexnet predict`, and the figures of `alexnet plot`).

May import: `alexnet.data`, `alexnet.model`, `alexnet.run_data`, minigrad's public API, NumPy, Pillow, the
standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import minigrad.functional as F
from alexnet import data
from alexnet.model import AlexNet
from alexnet.run_data import resize_for
from minigrad import Tensor, backend, no_grad


def normalization(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and std a run trained with (from its checkpoint's meta): (C,), (C,) float32."""
    return np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)


def class_names(meta: dict[str, Any], model: AlexNet) -> list[str]:
    """The run's class names, or the class indices as text when it has none."""
    return list(meta.get("class_names") or []) or [str(i) for i in range(model.config.num_classes)]


def _batches(model: AlexNet, images: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int):
    """Model inputs on the model's device, `batch_size` images at a time. images: (N, C, S, S) uint8."""
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start : start + batch_size])
        x = data.normalize(data.to_unit_float(chunk), mean, std)
        yield Tensor(backend.to_device(x, model.device))


def probabilities(
    model: AlexNet, images: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Softmax of the model's outputs in eval mode. images: (N, C, S, S) uint8 at the input size -> (N, K)."""
    model.eval()
    with no_grad():
        probs = [F.softmax(model(x), axis=1).numpy() for x in _batches(model, images, mean, std, batch_size)]
    return np.concatenate(probs) if probs else np.zeros((0, model.config.num_classes), np.float32)


def features(
    model: AlexNet, images: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int = 500
) -> np.ndarray:
    """fc7 feature vectors (the paper's Fig. 4 neighbours). images: (N, C, S, S) uint8 -> (N, fc_width)."""
    model.eval()
    with no_grad():
        out = [model.extract_features(x).numpy() for x in _batches(model, images, mean, std, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.config.fc_width), np.float32)


def read_image(model: AlexNet, path: str | os.PathLike) -> np.ndarray:
    """An image file as the model's input: (C, S, S) uint8.

    Greyscale models get the file in grey, resized to S x S; colour models get it the paper's way (shorter
    side to 256, or proportionally less for small models, centre square, then the centre S x S crop).
    """
    from PIL import Image

    cfg = model.config
    if cfg.in_channels == 1:
        with Image.open(path) as img:
            grey = img.convert("L").resize((cfg.image_size, cfg.image_size), Image.Resampling.BILINEAR)
            return np.asarray(grey, dtype=np.uint8)[None]
    return data.center_crop(data.load_image(path, resize_for(cfg.image_size))[None], cfg.image_size)[0]


@dataclass
class Prediction:
    """The k most probable classes of one image, most probable first."""

    path: str
    classes: list[str]
    probabilities: list[float]


def predict_files(model: AlexNet, meta: dict[str, Any], paths: list[str], top: int = 5) -> list[Prediction]:
    """Read each file as the model's input and rank the classes. meta: the checkpoint's (`load_model`)."""
    images = np.stack([read_image(model, p) for p in paths])
    probs = probabilities(model, images, *normalization(meta))
    names = class_names(meta, model)
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    return [
        Prediction(str(path), [names[i] for i in order], [float(p[i]) for i in order])
        for path, p, order in zip(paths, probs, ranked)
    ]
