"""One image at a time: the paper's training augmentation and test crops, with mean subtraction.

The background loader (`alexnet.data.loader`) builds each batch from images handled one by one, each with
random numbers of its own, drawn from a generator seeded by (seed, epoch, position in the epoch): so a batch
is the same whichever worker makes which image, and a run can restart at any batch. Per image:

- crop: a random `crop` x `crop` window of the stored S x S image (the paper: 224 of 256; 227 here, which
  makes conv1's arithmetic work), mirrored left-right with probability 1/2;
- PCA lighting: the same RGB offset `sum_i alpha_i lambda_i p_i` added to every pixel, alpha_i ~ N(0, 0.1);
- mean subtraction: the training set's mean image, pixel by pixel (`mean="image"`, the paper's), or its
  per-channel mean (`mean="channel"`). Both modes then divide by the per-channel std, so the network sees
  inputs of about unit variance either way: the paper fed raw 0..255 values minus the mean, which is the
  same up to a constant factor per channel, but the project's learning rates and initialisation are set for
  unit-variance inputs (as `alexnet.data.transforms.normalize` gives for Fashion-MNIST and image folders).

`train_sample_plain` is the definition, in the paper's order, written with the batch transforms of
`alexnet.data.transforms` on a batch of one. `train_sample` computes the same numbers from the same random
draws in the order that costs least: it crops and mirrors the uint8 image first (views, no copy) and then
converts, subtracts and adds the lighting offset in two or three passes over the crop, written straight into
the batch buffer. `tests/test_loader.py` checks the two agree. The same holds for the test crops.

May import: NumPy, the standard library, alexnet.data.transforms, alexnet.data.store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alexnet.data.store import Statistics
from alexnet.data.transforms import (
    center_crop,
    pca_lighting,
    random_crop,
    random_horizontal_flip,
    ten_crop,
    to_unit_float,
)

MEAN_MODES = ("image", "channel")
# Separate random streams for the epoch's order and for each image's augmentation.
ORDER_STREAM, SAMPLE_STREAM = 1, 2


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of the image at `position` (0-based, in the epoch's order) of epoch `epoch`."""
    return np.random.default_rng([seed, SAMPLE_STREAM, epoch, position])


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """(n,) int64: which image is at each position of the epoch (a permutation drawn from (seed, epoch))."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, ORDER_STREAM, epoch]).permutation(n)


@dataclass(frozen=True)
class Normalization:
    """x -> (x / 255 - mean) / std on uint8 images, to float32.

    mode "image": mean is the training set's mean image, (3, S, S); "channel": its channel means, (3, 1, 1).
    std: (3, 1, 1), the channel stds, in both modes. All on the [0, 1] scale, float32.
    """

    mode: str
    mean: np.ndarray
    std: np.ndarray
    # Precomputed for the fused path: 1 / (255 std) and mean / std.
    scale: np.ndarray = field(init=False, repr=False)
    mean_over_std: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MEAN_MODES:
            raise ValueError(f"mean must be one of {MEAN_MODES}, got {self.mode!r}")
        f32 = np.float32
        object.__setattr__(self, "scale", (f32(1.0 / 255.0) / self.std).astype(f32))
        object.__setattr__(self, "mean_over_std", (self.mean / self.std).astype(f32))

    @classmethod
    def from_statistics(cls, stats: Statistics, mode: str = "image") -> Normalization:
        mean = stats.mean_image if mode == "image" else stats.channel_mean.reshape(3, 1, 1)
        std = stats.channel_std.reshape(3, 1, 1)
        return cls(mode, np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))

    def subtract_mean(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 on the [0, 1] scale minus the mean (image or channel), a new array."""
        return batch - self.mean

    def apply(self, batch: np.ndarray) -> np.ndarray:
        """The plain definition: (B, 3, S, S) uint8 -> (to_unit_float(batch) - mean) / std, float32."""
        return self.subtract_mean(to_unit_float(batch)) / self.std


def lighting_offset(rng: np.random.Generator, eigvals: np.ndarray, eigvecs: np.ndarray, std: float) -> np.ndarray:
    """(3,) float32: one image's PCA-lighting offset, drawn exactly as `transforms.pca_lighting` draws it."""
    alpha = rng.standard_normal((1, 3), dtype=np.float32) * np.float32(std)
    eigvals = np.asarray(eigvals, dtype=np.float32).reshape(3)
    eigvecs = np.asarray(eigvecs, dtype=np.float32).reshape(3, 3)
    return ((alpha * eigvals) @ eigvecs.T)[0]


def train_sample_plain(
    image: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    norm: Normalization,
    eigvals: np.ndarray | None = None,
    eigvecs: np.ndarray | None = None,
    lighting: float = 0.1,
    flip: bool = True,
) -> np.ndarray:
    """The paper's training view of one image, in the paper's order: (3, S, S) uint8 -> (3, crop, crop) float32.

    Subtract the mean from the whole image, take a random crop, mirror it with probability 1/2, add PCA
    lighting (when eigen-pairs are given and `lighting` > 0), divide by the channel std.
    """
    x = norm.subtract_mean(to_unit_float(image[None]))  # (1, 3, S, S)
    x = random_crop(x, crop, rng)
    if flip:
        x = random_horizontal_flip(x, rng)
    if eigvals is not None and eigvecs is not None and lighting > 0:
        x = pca_lighting(x, eigvals, eigvecs, rng, std=lighting)
    return (x / norm.std)[0]


def _normalized_window(
    image: np.ndarray,
    norm: Normalization,
    top: int,
    left: int,
    crop: int,
    mirror: bool,
    offset: np.ndarray | None,
    out: np.ndarray | None,
) -> np.ndarray:
    """(image[:, window] / 255 - mean[:, window] + offset) / std, mirrored if asked, into `out` (3, crop, crop)."""
    window = (slice(None), slice(top, top + crop), slice(left, left + crop))
    pixels = image[window]
    if mirror:
        pixels = pixels[:, :, ::-1]
    out = np.multiply(pixels, norm.scale, out=out)  # uint8 -> float32 as it multiplies: x / (255 std)
    shift = np.zeros((3, 1, 1), np.float32) if offset is None else (offset / norm.std[:, 0, 0]).reshape(3, 1, 1)
    if norm.mode == "image":
        mean = norm.mean_over_std[window]
        out -= mean[:, :, ::-1] if mirror else mean
        if offset is not None:
            out += shift
    else:
        out += shift - norm.mean_over_std  # one pass: the channel mean and the lighting are both per channel
    return out


def train_sample(
    image: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    norm: Normalization,
    eigvals: np.ndarray | None = None,
    eigvecs: np.ndarray | None = None,
    lighting: float = 0.1,
    flip: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`train_sample_plain`, fused: the same random draws, crop first, written into `out` (3, crop, crop) float32."""
    size_h, size_w = image.shape[1:]
    if not 0 < crop <= min(size_h, size_w):
        raise ValueError(f"cannot crop {crop}x{crop} out of {size_h}x{size_w} images")
    # The draws of random_crop, random_horizontal_flip and pca_lighting on a batch of one, in their order.
    top = int(rng.integers(0, size_h - crop + 1, size=1)[0])
    left = int(rng.integers(0, size_w - crop + 1, size=1)[0])
    mirror = bool(rng.random(1)[0] < 0.5) if flip else False
    offset = None
    if eigvals is not None and eigvecs is not None and lighting > 0:
        offset = lighting_offset(rng, eigvals, eigvecs, lighting)
    return _normalized_window(image, norm, top, left, crop, mirror, offset, out)


def center_sample_plain(image: np.ndarray, crop: int, norm: Normalization) -> np.ndarray:
    """The test view: the centre crop of the normalized image. (3, S, S) uint8 -> (3, crop, crop) float32."""
    return center_crop(norm.apply(image[None]), crop)[0]


def center_sample(image: np.ndarray, crop: int, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    """`center_sample_plain`, cropping first, into `out` (3, crop, crop) float32."""
    top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
    return _normalized_window(image, norm, top, left, crop, False, None, out)


def ten_crop_sample_plain(image: np.ndarray, crop: int, norm: Normalization) -> np.ndarray:
    """The paper's 10 test views (`transforms.ten_crop`'s order) of the normalized image: (10, 3, crop, crop)."""
    return ten_crop(norm.apply(image[None]), crop)[:, 0]


def ten_crop_sample(image: np.ndarray, crop: int, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    """`ten_crop_sample_plain`, cropping first, into `out` (10, 3, crop, crop) float32."""
    if out is None:
        out = np.empty((10, 3, crop, crop), dtype=np.float32)
    height, width = image.shape[1:]
    corners = [(0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop)]
    corners.append(((height - crop) // 2, (width - crop) // 2))
    for i, (top, left) in enumerate(corners):
        _normalized_window(image, norm, top, left, crop, False, None, out[i])
        out[5 + i] = out[i][:, :, ::-1]
    return out
