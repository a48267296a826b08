"""The prepared store: a data set decoded once into memory-mappable uint8 arrays, and its statistics.

A store is a folder (`alexnet prepare SRC OUT` writes it, `PreparedStore(OUT, split)` reads it):

    meta.json               format, image size, counts per split, the statistics below, "complete": true
    classes.json            class names in index order
    train_images.npy        (N, 3, S, S) uint8, channel-first, one row per listed image
    train_labels.npy        (N,) int64
    train_done.npy          (N,) uint8: 1 decoded, 2 unreadable (left as zeros and skipped), 0 not yet done
    train_files.txt         the source file of each row, relative to SRC/train
    val_...                 the same for the validation split
    mean_image.npy          (3, S, S) float32: the training set's mean image, on the [0, 1] scale
    bad_files.txt           the files that could not be read, with the reason

The `.npy` files are standard NumPy arrays (`numpy.load(path, mmap_mode="r")` opens them), so reading row i
costs one page-cache lookup per page, whatever N is. Statistics are on the [0, 1] scale like the rest of
`alexnet.data`: per-channel mean and std (population), and the eigen-pairs of the 3x3 RGB covariance for PCA
lighting, over every pixel of every training image.

The statistics are sums of integers (pixel values 0..255 and their products) accumulated in float64, which
holds every integer below 2**53 exactly. So their value does not depend on how the images are split into
chunks or workers: a store prepared in one go and one interrupted and resumed have the same statistics, bit
for bit, as long as the training set has fewer than about 2**53 / 255**2 pixels (about two million 256 x 256
images; above that they are still float64 sums, rounded).

May import: NumPy, the standard library, alexnet.data.workers.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.workers import WorkerPool

FORMAT = "alexnet-prepared-store"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
# Done-mask states of a row.
PENDING, DONE, BAD = 0, 1, 2
# Images summed per step when computing statistics: bounds the float64 temporary (8 bytes per value).
_STATS_CHUNK = 8
# A page fault on a file map also maps the cached pages of the aligned block around it (Linux's fault-around,
# 64 KiB by default): what `MappedArray.release` drops around a row.
_FAULT_AROUND = 64 * 1024


class StoreError(ValueError):
    """A folder is not a (complete, readable) prepared store; the message says what to do."""


def _path(root: Path, split: str, what: str) -> Path:
    suffix = "txt" if what == "files" else "npy"
    return root / f"{split}_{what}.{suffix}"


# ----------------------------------------------------------------------------- .npy files without np.load


def npy_data_offset(path: str | os.PathLike) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of a C-ordered .npy file, read from its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise StoreError(f"{path} is stored in Fortran order; the store writes C order")
        return f.tell(), shape, dtype


class MappedArray:
    """A read-only memory map of a .npy file whose pages can be given back (`release`).

    `numpy.load(mmap_mode="r")` maps the file too; this keeps the `mmap` object, so a reader that has used rows
    can drop them from its page tables (madvise MADV_DONTNEED). The pages stay in the kernel's page cache, so a
    later read is a cheap minor fault, but the reader's resident memory stays as small as what it holds now,
    however many rows it has read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        offset, shape, dtype = npy_data_offset(path)
        self.path = Path(path)
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
        with open(path, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ) if length else None
        self.offset = offset
        buffer = self._map if self._map is not None else b""
        self.array = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset if length else 0)

    def _span(self, row: int) -> tuple[int, int]:
        """(start, length) of a row's bytes, widened to whole fault-around blocks."""
        start = self.offset + int(row) * self.row_bytes
        first = start - start % _FAULT_AROUND
        stop = min(len(self._map), -(-(start + self.row_bytes) // _FAULT_AROUND) * _FAULT_AROUND)  # type: ignore[arg-type]
        return first, stop - first

    def prefetch(self, rows: Iterable[int]) -> None:
        """Ask the kernel to start reading these rows from disk now (madvise MADV_WILLNEED), all at once."""
        if self._map is not None and hasattr(mmap, "MADV_WILLNEED"):
            for row in rows:
                self._map.madvise(mmap.MADV_WILLNEED, *self._span(row))

    def release(self, rows: Iterable[int]) -> None:
        """Drop the pages of these rows from this process's memory map (a no-op where madvise is missing).

        The span is widened to whole fault-around blocks: a page fault maps the neighbouring pages that are in
        the page cache too, which may belong to rows that other processes read, and they would stay mapped.
        """
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            for row in rows:
                self._map.madvise(mmap.MADV_DONTNEED, *self._span(row))


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Statistics:
    """The training set's statistics, on the [0, 1] scale.

    mean_image: (3, S, S) float32, the per-pixel mean (the paper's "mean activity").
    channel_mean, channel_std: (3,) float32, over all pixels (population std).
    eigvals: (3,) float32, largest first; eigvecs: (3, 3) float32, unit eigenvectors as columns (each one's
        largest component positive), of the 3x3 RGB covariance: PCA lighting's eigen-pairs.
    images: how many images they were computed from.
    """

    mean_image: np.ndarray = field(repr=False)
    channel_mean: np.ndarray
    channel_std: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    images: int

    def as_json(self) -> dict[str, Any]:
        """Everything but the mean image (which has its own .npy file), as JSON-ready lists."""
        return {
            "scale": "[0, 1]",
            "images": self.images,
            "channel_mean": [float(v) for v in self.channel_mean],
            "channel_std": [float(v) for v in self.channel_std],
            "eigvals": [float(v) for v in self.eigvals],
            "eigvecs": [[float(v) for v in row] for row in self.eigvecs],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write them to one .npz file (e.g. next to a run's checkpoint, so predicting needs no store)."""
        np.savez(path, **{f: np.asarray(getattr(self, f)) for f in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Statistics:
        """Read what `save` wrote."""
        with np.load(path) as data:
            return cls(**{f: data[f] if f != "images" else int(data[f]) for f in cls.__dataclass_fields__})

    @classmethod
    def from_json(cls, data: dict[str, Any], mean_image: np.ndarray) -> Statistics:
        f32 = np.float32
        return cls(
            np.asarray(mean_image, dtype=f32),
            np.asarray(data["channel_mean"], dtype=f32),
            np.asarray(data["channel_std"], dtype=f32),
            np.asarray(data["eigvals"], dtype=f32),
            np.asarray(data["eigvecs"], dtype=f32),
            int(data["images"]),
        )


@dataclass
class PixelSums:
    """Sums over images (N, 3, S, S) uint8 on the 0..255 scale: what the statistics are computed from.

    image_sum: (3, S, S) float64, sum over images.  pixel_sum: (3,) float64, sum over all pixels.
    outer_sum: (3, 3) float64, sum over all pixels of x x^T (x the pixel's RGB).  images: the count.
    """

    image_sum: np.ndarray
    pixel_sum: np.ndarray
    outer_sum: np.ndarray
    images: int = 0

    @classmethod
    def zeros(cls, size: int) -> PixelSums:
        return cls(np.zeros((3, size, size)), np.zeros(3), np.zeros((3, 3)))

    def add_images(self, chunk: np.ndarray) -> None:
        """Add (k, 3, S, S) uint8 images."""
        if len(chunk) == 0:
            return
        self.image_sum += chunk.sum(axis=0, dtype=np.float64)
        planes = np.moveaxis(chunk, 1, 0).reshape(3, -1).astype(np.float64)  # (3, k*S*S)
        self.pixel_sum += planes.sum(axis=1)
        self.outer_sum += planes @ planes.T  # integer-valued products and sums: exact in float64 (see above)
        self.images += len(chunk)

    def merge(self, other: PixelSums) -> None:
        self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.outer_sum += other.outer_sum
        self.images += other.images

    def statistics(self) -> Statistics:
        """Mean image, channel mean/std and RGB eigen-pairs on the [0, 1] scale (see `transforms.rgb_pca`)."""
        if self.images == 0:
            raise StoreError("no training image to compute statistics from")
        size = self.image_sum.shape[-1]
        count = self.images * size * size
        mean = self.pixel_sum / count  # 0..255 scale
        second = self.outer_sum / count
        std = np.sqrt(np.maximum(np.diag(second) - mean**2, 0.0))
        # The sample covariance, as np.cov and transforms.rgb_pca compute it, rescaled to [0, 1].
        cov = (self.outer_sum - count * np.outer(mean, mean)) / max(count - 1, 1) / 255.0**2
        eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
        eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
        signs = np.sign(eigvecs[np.abs(eigvecs).argmax(axis=0), np.arange(3)])
        eigvecs = eigvecs * np.where(signs == 0, 1.0, signs)
        f32 = np.float32
        return Statistics(
            (self.image_sum / (255.0 * self.images)).astype(f32),
            (mean / 255.0).astype(f32),
            (std / 255.0).astype(f32),
            np.maximum(eigvals, 0.0).astype(f32),
            eigvecs.astype(f32),
            self.images,
        )


def sum_rows(images: np.ndarray, rows: Sequence[int] | np.ndarray, release: Any = None) -> PixelSums:
    """PixelSums of images[rows], a few rows at a time; `release(rows)` is called after each step if given."""
    sums = PixelSums.zeros(images.shape[-1])
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), _STATS_CHUNK):
        part = rows[start : start + _STATS_CHUNK]
        sums.add_images(images[part])
        if release is not None:
            release(part)
    return sums


def _sum_store_rows(path: str, rows: np.ndarray) -> PixelSums:
    """A worker task: PixelSums of some rows of a store's images file."""
    mapped = MappedArray(path)
    return sum_rows(mapped.array, rows, mapped.release)


def compute_statistics(images_path: Path, rows: np.ndarray, pool: WorkerPool | None = None) -> Statistics:
    """Statistics of the given rows of an images .npy file, split over the pool's workers when given.

    rows: (K,) int64, the rows to include (the decoded ones). The result does not depend on the pool.
    """
    if pool is None:
        return _sum_store_rows(str(images_path), rows).statistics()
    _, shape, _ = npy_data_offset(images_path)
    total = PixelSums.zeros(shape[-1])
    parts = max(1, min(len(rows) // _STATS_CHUNK, 4 * len(pool)))
    for part in np.array_split(rows, parts):
        pool.submit(_sum_store_rows, str(images_path), part)
    while pool.in_flight:
        _, sums = pool.next_result()
        total.merge(sums)
    return total.statistics()


# ----------------------------------------------------------------------------- writing


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, flushed to disk, then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finish_store(
    root: Path,
    classes: Sequence[str],
    size: int,
    pool: WorkerPool | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the training statistics from the store and write mean_image.npy and meta.json (last).

    Every split's images, labels and done mask must be written. Returns the meta data.
    """
    counts = {}
    for split in SPLITS:
        if _path(root, split, "done").exists():
            done = np.load(_path(root, split, "done"))
            counts[split] = {"rows": len(done), "images": int((done == DONE).sum()), "bad": int((done == BAD).sum())}
    rows = np.flatnonzero(np.load(_path(root, "train", "done")) == DONE)
    stats = compute_statistics(_path(root, "train", "images"), rows, pool)
    np.save(root / "mean_image.npy", stats.mean_image)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "size": size,
        "classes": len(classes),
        "splits": counts,
        "statistics": stats.as_json(),
        **(extra or {}),
        "complete": True,
    }
    write_json(root / "meta.json", meta)
    return meta


def write_store(
    root: str | os.PathLike,
    classes: Sequence[str],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    files: dict[str, Sequence[str]] | None = None,
) -> Path:
    """Write arrays already in memory as a prepared store (tests, benchmarks, data sets that come as arrays).

    splits: {"train": (images (N, 3, S, S) uint8, labels (N,) int), "val": (...)}; train is required.
    files: optional source names per split (default: the row numbers). Returns the store's folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if "train" not in splits:
        raise ValueError("a store needs a train split")
    size = splits["train"][0].shape[-1]
    for split, (images, labels) in splits.items():
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"{split} images must be (N, 3, {size}, {size}) uint8, got {images.shape} {images.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        out = np.lib.format.open_memmap(_path(root, split, "images"), mode="w+", dtype=np.uint8, shape=images.shape)
        out[:] = images
        out.flush()
        del out
        np.save(_path(root, split, "labels"), np.asarray(labels, dtype=np.int64))
        np.save(_path(root, split, "done"), np.full(len(images), DONE, dtype=np.uint8))
        names = (files or {}).get(split) or [str(i) for i in range(len(images))]
        _path(root, split, "files").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    write_json(root / "classes.json", list(classes))
    finish_store(root, classes, size)
    return root


# ----------------------------------------------------------------------------- reading


class PreparedStore:
    """One split of a prepared store, opened as memory maps: `len`, `read(i)`, `labels`, `classes`, statistics.

    Row i of the split is the i-th readable image (rows of unreadable files are skipped). `read(i)` returns a
    (3, S, S) uint8 view of the map, `labels` the (N,) int64 labels, `statistics` the training set's.
    Pickling a store pickles its folder and split only: a worker process that unpickles it maps the files
    itself, so nothing of the data set is copied between processes.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        self.split = split
        self.meta = read_meta(self.root)
        if split not in self.meta["splits"]:
            raise StoreError(f"{self.root} has no {split!r} split (it has {', '.join(self.meta['splits'])})")
        self.size: int = int(self.meta["size"])
        self.classes: list[str] = json.loads((self.root / "classes.json").read_text(encoding="utf-8"))
        self._images = MappedArray(_path(self.root, split, "images"))
        done = np.load(_path(self.root, split, "done"))
        # Only the rows of unreadable files need an index; a clean split maps i -> row i directly.
        self.rows: np.ndarray | None = None if bool((done == DONE).all()) else np.flatnonzero(done == DONE)
        labels = np.load(_path(self.root, split, "labels"), mmap_mode="r")
        self.labels: np.ndarray = labels if self.rows is None else np.asarray(labels[self.rows])
        self.statistics = Statistics.from_json(self.meta["statistics"], np.load(self.root / "mean_image.npy"))

    def __len__(self) -> int:
        return len(self.labels)

    def __reduce__(self) -> tuple:
        return (PreparedStore, (str(self.root), self.split))

    def row(self, index: int) -> int:
        """The row of the images file that holds image `index`."""
        return int(index) if self.rows is None else int(self.rows[index])

    @property
    def images(self) -> np.ndarray:
        """(rows, 3, S, S) uint8, the whole mapped file, unreadable rows included (see `rows`)."""
        return self._images.array

    def read(self, index: int) -> np.ndarray:
        """Image `index` as a (3, S, S) uint8 view of the memory map."""
        return self._images.array[self.row(index)]

    def describe(self, index: int) -> str:
        """Where image `index` is, for messages."""
        return f"{self.root} {self.split} image {index} (row {self.row(index)})"

    def prefetch(self, indices: Iterable[int]) -> None:
        """Start reading these images from disk in the background (see MappedArray.prefetch)."""
        self._images.prefetch(self.row(i) for i in indices)

    def release(self, indices: Iterable[int]) -> None:
        """Drop these images' pages from this process's map (see MappedArray.release)."""
        self._images.release(self.row(i) for i in indices)

    def files(self) -> list[str]:
        """The source file of each image, relative to SRC/<split>."""
        names = _path(self.root, self.split, "files").read_text(encoding="utf-8").splitlines()
        return names if self.rows is None else [names[r] for r in self.rows]


def read_meta(root: Path) -> dict[str, Any]:
    """meta.json of a complete store, or a StoreError that says what to run."""
    path = root / "meta.json"
    if not path.is_file():
        if (root / "plan.json").is_file():
            raise StoreError(f"{root}: `alexnet prepare` did not finish; run the same command again to resume it")
        raise StoreError(f"{root} is not a prepared store (no meta.json): run `alexnet prepare SRC {root}` first")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION or not meta.get("complete"):
        raise StoreError(f"{path}: not a complete {FORMAT} version {FORMAT_VERSION}")
    return meta


def is_store(root: str | os.PathLike) -> bool:
    """True if `root` holds a prepared store's meta.json (complete or not checked)."""
    return (Path(root) / "meta.json").is_file()
