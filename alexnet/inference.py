"""A trained model applied to images: class probabilities (the library's softmax), fc7 features, and image
files read the way the model's training data was (`alexnet predict`, and the figures of `alexnet plot`).

May import: `alexnet.data`, `alexnet.model`, `alexnet.run_data`, `alexnet.runs`, minigrad's public API, NumPy,
Pillow, the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import minigrad.functional as F
from alexnet import data
from alexnet.model import AlexNet
from alexnet.run_data import resize_for
from alexnet.runs import DATA_STATS, load_statistics
from minigrad import Tensor, backend, no_grad


def normalization(meta: dict[str, Any], path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std a run trained with (from its checkpoint's meta), float32: mean (C,) per channel, or
    (C, S, S), the centre S x S of the training set's mean image, for a run with `--mean image` (read from
    DATA_STATS in the run folder `path`, or the folder of the checkpoint file `path`); std (C,).
    """
    std = np.asarray(meta["std"], np.float32)
    if meta["train_config"].get("mean") != "image":
        return np.asarray(meta["mean"], np.float32), std
    if path is None:
        raise ValueError("a run trained with --mean image needs its folder, which holds its mean image")
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    mean_image = load_statistics(folder / DATA_STATS).mean_image
    size = meta["model_config"]["image_size"]
    return data.center_crop(np.asarray(mean_image, np.float32)[None], size)[0], std


def _normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(B, C, S, S) uint8 -> (x / 255 - mean) / std, float32; mean (C,) or (C, S, S), std (C,)."""
    mean = np.asarray(mean, np.float32)
    mean = mean.reshape(-1, 1, 1) if mean.ndim == 1 else mean
    return (data.to_unit_float(x) - mean) / np.asarray(std, np.float32).reshape(-1, 1, 1)


def class_names(meta: dict[str, Any], model: AlexNet) -> list[str]:
    """The run's class names, or the class indices as text when it has none."""
    return list(meta.get("class_names") or []) or [str(i) for i in range(model.config.num_classes)]


def _batches(model: AlexNet, images: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int):
    """Model inputs on the model's device, `batch_size` images at a time. images: (N, C, S, S) uint8."""
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start : start + batch_size])
        x = _normalize(chunk, mean, std)
        yield Tensor(backend.to_device(x, model.device))


def probabilities(
    model: AlexNet, images: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Softmax of the model's outputs in eval mode. images: (N, C, S, S) uint8 at the input size -> (N, K);
    mean: (C,) or (C, S, S), std: (C,) (`normalization`)."""
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


@dataclass
class ModelImage:
    """An image file as a model's input, and what was done to it to get there."""

    pixels: np.ndarray  # (C, S, S) uint8
    notes: list[str]


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _light_background(grey: np.ndarray) -> bool:
    """Whether the border of a grey (H, W) uint8 image is mostly light (Fashion-MNIST's is black)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(border.mean()) > 127.5


def _fit_in_square(grey: np.ndarray, size: int) -> tuple[np.ndarray, str | None]:
    """Scale a grey (H, W) image so its longer side is `size`, keeping its aspect ratio, and centre it on a
    black size x size square (Fashion-MNIST's objects are centred on black). Returns it and a note."""
    from PIL import Image

    h, w = grey.shape
    if (h, w) == (size, size):
        return grey, None
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(grey).resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.uint8)
    if new_h == new_w:
        return resized, f"resized from {w}x{h} to {size}x{size}"
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    kept = f"resized from {w}x{h} to {new_w}x{new_h} (aspect ratio kept)"
    return out, f"{kept} and centred on a black {size}x{size} square"


def _read_grey(path: str | os.PathLike, size: int, invert: bool) -> ModelImage:
    from PIL import Image

    notes = []
    with Image.open(path) as img:
        if img.mode not in _GREY_MODES:
            notes.append(f"converted from colour ({img.mode}) to grey")
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
    if invert:
        grey = 255 - grey
        notes.append("inverted (--invert): dark on light became light on dark")
    elif _light_background(grey):
        notes.append(
            "its background is light, but Fashion-MNIST shows light objects on a dark background: for a dark "
            "drawing on white, add --invert"
        )
    grey, resized = _fit_in_square(grey, size)
    return ModelImage(grey[None], notes + ([resized] if resized else []))


def _read_colour(path: str | os.PathLike, size: int, invert: bool) -> ModelImage:
    from PIL import Image

    notes = []
    with Image.open(path) as img:
        (w, h), mode = img.size, img.mode
    if mode in _GREY_MODES:
        notes.append("a grey image: given three equal colour channels")
    resize = resize_for(size)
    pixels = data.center_crop(data.load_image(path, resize)[None], size)[0]
    if w != h:
        notes.append(
            f"{w}x{h}: shorter side scaled to {resize} and the centre {resize}x{resize} kept (the paper's way: the "
            f"ends of the longer side are cut), then the centre {size}x{size} crop"
        )
    if invert:
        pixels = 255 - pixels
        notes.append("inverted (--invert)")
    return ModelImage(pixels, notes)


def read_image(model: AlexNet, path: str | os.PathLike, invert: bool = False) -> ModelImage:
    """An image file as the model's input: (C, S, S) uint8, with notes on every conversion made.

    Greyscale models (Fashion-MNIST: light objects on a black background) get the file in grey, scaled to fit
    S x S with its aspect ratio kept and centred on black; `invert` turns a dark drawing on white into that
    convention. Colour models get it the paper's way: shorter side to 256 (or proportionally less for small
    models), the centre square, then the centre S x S crop.
    """
    cfg = model.config
    read = _read_grey if cfg.in_channels == 1 else _read_colour
    return read(path, cfg.image_size, invert)


@dataclass
class Prediction:
    """The k most probable classes of one image, most probable first."""

    path: str
    classes: list[str]
    probabilities: list[float]
    notes: list[str]  # how the file was converted to the model's input


def predict_files(
    model: AlexNet,
    meta: dict[str, Any],
    paths: list[str],
    top: int = 5,
    invert: bool = False,
    run: str | os.PathLike | None = None,
) -> list[Prediction]:
    """Read each file as the model's input and rank the classes. meta: the checkpoint's (`load_model`); run:
    its run folder or checkpoint file (where a run with --mean image keeps its mean image)."""
    read = [read_image(model, p, invert) for p in paths]
    probs = probabilities(model, np.stack([r.pixels for r in read]), *normalization(meta, run))
    names = class_names(meta, model)
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    return [
        Prediction(str(path), [names[i] for i in order], [float(p[i]) for i in order], r.notes)
        for path, p, order, r in zip(paths, probs, ranked, read)
    ]
