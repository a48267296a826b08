"""Transforms on host batches (B, C, H, W).

- uint8 -> float32: `to_unit_float`, `normalize`.
- The paper's augmentations: `random_crop`, `random_horizontal_flip`, `center_crop`, `ten_crop`, `pca_lighting`,
  and the statistics they need: `rgb_pca`, `channel_mean_std`.
- The pipelines a run uses: `train_transform`, `eval_transform`.

Every random choice takes an explicit `numpy.random.Generator`.

May import: NumPy, the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# A transform takes a batch and the generator to draw its random choices from,
# and returns a new batch (it never modifies its input in place).
Transform = Callable[[np.ndarray, np.random.Generator | None], np.ndarray]


def to_unit_float(batch: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in [0, 1]. A float32 batch is taken to be on that scale already.

    batch: (B, C, H, W) uint8 or float32. Anything else (float64, ints) raises a
    TypeError rather than being converted silently.
    """
    if batch.dtype == np.uint8:
        # One pass, one float32 buffer: the ufunc casts uint8 -> float32 as it multiplies.
        return np.multiply(batch, np.float32(1.0 / 255.0), dtype=np.float32)
    if batch.dtype == np.float32:
        return batch
    raise TypeError(f"expected a uint8 or float32 batch, got {batch.dtype}; convert it explicitly first")


def normalize(
    batch: np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Per-channel (x - mean) / std on a float32 batch.

    batch: (B, C, H, W) float32 on the [0, 1] scale.  mean, std: (C,), on the same scale.
    out: where to write the result; `out=batch` works in place. By default a new array.
    """
    if batch.dtype != np.float32:
        raise TypeError(f"normalize expects float32 (use to_unit_float first), got {batch.dtype}")
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != batch.shape[1] or std.shape[1] != batch.shape[1]:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} entries for {batch.shape[1]} channels")
    out = np.subtract(batch, mean, out=out)  # a new buffer unless `out` is given...
    out /= std  # ...then divided in place: no second temporary
    return out


def _uint8_to_normalized(
    batch: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray
) -> np.ndarray:
    """`normalize(to_unit_float(batch), mean, std)` for a uint8 batch, in one float32 buffer.

    (x / 255 - mean) / std  ==  x * (1 / (255 std)) - mean / std: a multiply that
    casts uint8 -> float32 into a new buffer, then an in-place subtraction. It saves
    one full pass and one temporary over the two-step version.
    """
    c = batch.shape[1]
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != c or std.shape[1] != c:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} entries for {c} channels")
    out = np.multiply(batch, np.float32(1.0 / 255.0) / std, dtype=np.float32)
    out -= mean / std
    return out


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))


def _check_crop(batch: np.ndarray, h: int, w: int) -> None:
    if batch.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {batch.shape}")
    if not (0 < h <= batch.shape[2] and 0 < w <= batch.shape[3]):
        raise ValueError(f"cannot crop {h}x{w} out of {batch.shape[2]}x{batch.shape[3]} images")


def random_crop(
    batch: np.ndarray, size: int | tuple[int, int], rng: np.random.Generator, padding: int = 0
) -> np.ndarray:
    """A random `size` crop from each image, each at its own position (the paper's 224/227 crops).

    batch: (B, C, H, W), any dtype.  size: s or (h, w).  padding: zeros added on
    every side first (the usual augmentation for 28x28 or 32x32 images).
    Returns (B, C, h, w), same dtype.
    """
    h, w = _pair(size)
    if padding:
        batch = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    _check_crop(batch, h, w)
    b, _, height, width = batch.shape
    tops = rng.integers(0, height - h + 1, size=b)
    lefts = rng.integers(0, width - w + 1, size=b)
    out = np.empty((b, batch.shape[1], h, w), dtype=batch.dtype)
    # One slice copy per image (a loop over B, not over pixels): each copy moves whole rows, where one
    # fancy index into a sliding_window_view would copy element by element.
    for i, (top, left) in enumerate(zip(tops, lefts)):
        out[i] = batch[i, :, top : top + h, left : left + w]
    return out


def random_horizontal_flip(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability `p` (the paper's horizontal reflections).

    batch: (B, C, H, W).  Returns a new array of the same shape and dtype.
    """
    flip = rng.random(len(batch)) < p
    out = batch.copy()
    out[flip] = batch[flip, ..., ::-1]  # reverse the W axis of the chosen images only
    return out


def center_crop(batch: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The central `size` crop of each image (evaluation on a single crop).

    batch: (B, C, H, W).  Returns (B, C, h, w), a contiguous copy.
    """
    h, w = _pair(size)
    _check_crop(batch, h, w)
    top, left = (batch.shape[2] - h) // 2, (batch.shape[3] - w) // 2
    return np.ascontiguousarray(batch[:, :, top : top + h, left : left + w])


def ten_crop(batch: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The paper's test-time augmentation: 5 crops and their mirror images.

    The order is: top-left, top-right, bottom-left, bottom-right, centre, then
    the same five flipped left-right. The model's softmax outputs over the 10
    crops are averaged to get the prediction.

    batch: (B, C, H, W).  Returns (10, B, C, h, w), same dtype.
    """
    h, w = _pair(size)
    _check_crop(batch, h, w)
    out = np.empty((10, *batch.shape[:2], h, w), dtype=batch.dtype)
    for i, (y, x) in enumerate(ten_crop_positions(batch.shape[2], batch.shape[3], (h, w))):
        out[i] = batch[:, :, y : y + h, x : x + w]
    out[5:] = out[:5, ..., ::-1]
    return out


def ten_crop_positions(height: int, width: int, size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """(top, left) of the five crops of `ten_crop` in an image of height x width: the corners, then the centre."""
    h, w = _pair(size)
    top, left = (height - h) // 2, (width - w) // 2
    return [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]


def distinct_ten_crop_views(height: int, width: int, size: int | tuple[int, int]) -> int:
    """How many of the 10 crops differ: 10 for images larger than the crop both ways, 2 (the image and its
    mirror) for images of exactly the crop size, such as 28x28 Fashion-MNIST with a 28 crop."""
    return 2 * len(set(ten_crop_positions(height, width, size)))


def pca_lighting(
    batch: np.ndarray,
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    rng: np.random.Generator,
    std: float = 0.1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's colour augmentation ("PCA lighting", Krizhevsky et al. 2012, section 4.1).

    To every pixel of image b add the same RGB offset  sum_i alpha_bi * lambda_i * p_i,
    where (lambda_i, p_i) are the eigenvalues/eigenvectors of the 3x3 covariance of
    the training set's RGB pixels and alpha_bi ~ N(0, std) is drawn once per image.
    It shifts the colour and brightness of the lighting along the directions in which
    natural pixel colours actually vary.

    batch: (B, 3, H, W) float32 on the same scale the eigen-pairs were computed on
        ([0, 1] for `rgb_pca`). uint8 is refused: the offsets are fractions of a level.
    eigvals: (3,).  eigvecs: (3, 3) with the eigenvectors p_i as columns.
    out: where to write the result; `out=batch` works in place. By default a new array.
    Returns the float32 batch with the offsets added (not clipped, as in the paper).
    """
    if batch.dtype != np.float32:
        raise TypeError(f"pca_lighting needs a float32 batch (see to_unit_float), got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"pca_lighting needs (B, 3, H, W) RGB batches, got {batch.shape}")
    eigvals = np.asarray(eigvals, dtype=np.float32).reshape(3)
    eigvecs = np.asarray(eigvecs, dtype=np.float32).reshape(3, 3)
    alpha = rng.standard_normal((len(batch), 3), dtype=np.float32) * np.float32(std)  # (B, 3)
    # offset[b] = sum_i alpha[b, i] * eigvals[i] * eigvecs[:, i]  ==  (alpha * eigvals) @ eigvecs.T
    offset = (alpha * eigvals) @ eigvecs.T  # (B, 3)
    # Broadcast over H and W: the same offset for every pixel of an image.
    return np.add(batch, offset[:, :, None, None], out=out)


def _unit_float_chunks(images: np.ndarray, pixels_per_chunk: int = 1 << 21) -> Iterator[np.ndarray]:
    """Yield (pixels, C) float64 arrays on the [0, 1] scale, a few images at a time.

    Statistics are accumulated in float64 (sums of millions of values) but only
    over small chunks, so a large uint8 data set is never converted whole.
    """
    n, c = images.shape[:2]
    per_image = max(1, math.prod(images.shape[2:]))
    step = max(1, pixels_per_chunk // per_image)
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    for start in range(0, n, step):
        chunk = images[start : start + step]
        yield np.moveaxis(chunk, 1, -1).reshape(-1, c).astype(np.float64) * scale


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all pixels, on the [0, 1] scale, for `normalize`.

    images: (N, C, H, W) uint8 (divided by 255) or float (taken as is).
    Returns mean (C,), std (C,) float32 (population std).
    """
    c = images.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for px in _unit_float_chunks(images):
        total += px.sum(axis=0)
        sq += np.einsum("pc,pc->c", px, px)
        count += len(px)
    mean = total / count
    var = np.maximum(sq / count - mean**2, 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def rgb_pca(
    images: np.ndarray, rng: np.random.Generator | None = None, max_pixels: int = 1_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-pairs of the 3x3 covariance of RGB pixel values, for `pca_lighting`.

    images: (N, 3, H, W) uint8 (divided by 255) or float (taken as on the [0, 1] scale).
    rng: if given and there are more than `max_pixels` pixels, estimate from
        `max_pixels` pixels sampled with it (fast, and plenty for a 3x3 matrix).
        Without an rng every pixel is used, streamed in chunks.

    Returns:
        eigvals (3,) float32, largest first; eigvecs (3, 3) float32 whose columns are
        the unit eigenvectors (each one's largest component made positive, so the
        result does not depend on the sign the solver happens to pick).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"rgb_pca needs (N, 3, H, W) RGB images, got {images.shape}")
    n, _, h, w = images.shape
    if rng is not None and n * h * w > max_pixels:
        # Draw random (image, row, column) triples; the gather gives (max_pixels, 3).
        ii, yy, xx = (rng.integers(0, k, size=max_pixels) for k in (n, h, w))
        scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
        chunks: Iterator[np.ndarray] | list[np.ndarray] = [images[ii, :, yy, xx].astype(np.float64) * scale]
    else:
        chunks = _unit_float_chunks(images)
    # Covariance from running sums: cov = (sum x x^T - count * mean mean^T) / (count - 1),
    # the same normalisation as np.cov.
    total, outer, count = np.zeros(3), np.zeros((3, 3)), 0
    for px in chunks:
        total += px.sum(axis=0)
        outer += px.T @ px
        count += len(px)
    if count < 2:
        raise ValueError("rgb_pca needs at least 2 pixels")
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending, for a symmetric matrix
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    signs = np.sign(eigvecs[np.abs(eigvecs).argmax(axis=0), np.arange(3)])
    eigvecs = eigvecs * np.where(signs == 0, 1.0, signs)
    return np.maximum(eigvals, 0.0).astype(np.float32), eigvecs.astype(np.float32)


def train_transform(
    crop_size: int,
    eigvals: np.ndarray | None = None,
    eigvecs: np.ndarray | None = None,
    pca_std: float = 0.1,
    flip: bool = True,
    padding: int = 0,
) -> Transform:
    """The paper's training augmentation as one transform for `iterate_batches`.

    Random crop and (optionally) horizontal flip on the uint8 batch, which is cheap,
    then to float32 in [0, 1] and, if eigen-pairs are given, PCA lighting.
    """

    def transform(batch: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None:
            raise ValueError("train_transform needs an rng")
        batch = random_crop(batch, crop_size, rng, padding=padding)
        if flip:
            batch = random_horizontal_flip(batch, rng)
        if eigvals is not None and eigvecs is not None:
            batch = to_unit_float(batch)  # a new float32 buffer, so lighting can be added in place
            batch = pca_lighting(batch, eigvals, eigvecs, rng, std=pca_std, out=batch)
        return batch

    return transform


def eval_transform(crop_size: int) -> Transform:
    """Single centre crop, for evaluation batches (`ten_crop` is the 10-view alternative)."""

    def transform(batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return center_crop(batch, crop_size)

    return transform
