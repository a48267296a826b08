"""Mini-batches: `iterate_batches` (one epoch) and the `DataLoader` class around it.

May import: `alexnet.data.transforms`, NumPy, the standard library.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from alexnet.data.transforms import Transform, _uint8_to_normalized, normalize, to_unit_float


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None,
    drop_last: bool = False,
    transform: Transform | None = None,
    mean: Sequence[float] | np.ndarray | None = None,
    std: Sequence[float] | np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of mini-batches.

    For each batch: take the samples (in a random order drawn from `rng` if
    `shuffle`), apply `transform(batch, rng)` to the raw batch, convert uint8 to
    float32 in [0, 1] (`to_unit_float`), then `normalize` with `mean`/`std` if given.

    Args:
        images: (N, C, H, W), uint8 (or float32 already on the [0, 1] scale).
        labels: (N,) integer class indices.
        batch_size: samples per batch; the last batch is smaller unless `drop_last`.
        shuffle: visit the samples in a random permutation drawn from `rng`.
        rng: the only source of randomness (shuffling and the transform's draws).
        drop_last: skip the final incomplete batch (keeps every batch the same shape).
        transform: called as `transform(batch, rng)`, e.g. crops and flips on uint8;
            it may return uint8 or float32 in [0, 1] (`pca_lighting` needs float).
            It gets a fresh copy of the samples, so it may modify that in place.
        mean, std: per-channel statistics on the [0, 1] scale (`channel_mean_std`).

    Yields:
        x: (B, C', H', W') float32, contiguous.  y: (B,) int64.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle and rng is None:
        raise ValueError("shuffle=True needs an rng (numpy.random.Generator)")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        # Fancy indexing copies only this batch out of the (possibly huge) uint8 array.
        x = images[idx]
        y = np.asarray(labels[idx], dtype=np.int64)
        if transform is not None:
            x = transform(x, rng)
        if mean is None:
            x = to_unit_float(x)
        elif x.dtype == np.uint8:
            x = _uint8_to_normalized(x, mean, std)
        else:
            # `x` came from the transform; unless it is a view of the data set itself
            # (an identity transform on float32 images), this batch owns it and
            # normalizing in place saves allocating (and page-faulting) another buffer.
            x = normalize(x, mean, std, out=None if np.may_share_memory(x, images) else x)
        yield np.ascontiguousarray(x), y


class DataLoader:
    """`iterate_batches` as a re-iterable object: every `for` loop is one new epoch.

    The same `rng` is used across epochs, so epoch 2 gets a different order than
    epoch 1, and the whole sequence is reproducible from the generator's seed.
    `len(loader)` is the number of batches per epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
        transform: Transform | None = None,
        mean: Sequence[float] | np.ndarray | None = None,
        std: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.rng, self.drop_last = batch_size, shuffle, rng, drop_last
        self.transform, self.mean, self.std = transform, mean, std

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iterate_batches(
            self.images,
            self.labels,
            self.batch_size,
            self.shuffle,
            self.rng,
            drop_last=self.drop_last,
            transform=self.transform,
            mean=self.mean,
            std=self.std,
        )
