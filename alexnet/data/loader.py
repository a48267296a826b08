"""Batches made by background worker processes, from a prepared store or straight from an image folder.

`BackgroundLoader(source, batch_size, ...)` gives the batches of an epoch in order (`loader.epoch(e)`), for
training (random crops, flips, PCA lighting, mean subtraction: `alexnet.data.augment`) or for testing (the
centre crop, or the paper's 10 crops). `W` worker processes make them while the caller computes.

How it works, and the guarantees:

- Batch b of epoch e holds the images at positions b*B .. b*B+B-1 of the epoch's order (a permutation drawn
  from (seed, e)), and every image's random numbers come from (seed, e, its position). Nothing depends on
  which worker makes which image: the batches are the same for any number of workers (0 runs everything in
  this process), and `epoch(e, start_batch=k)` gives exactly the batches k, k+1, ... of an uninterrupted epoch.
- A batch is split into W parts, one task per worker; the caller keeps `prefetch` batches in the works ahead
  of the one it is using and hands them out in order. The workers write straight into `prefetch + 1` batch
  buffers in shared memory (a file in /dev/shm the caller maps too, removed as soon as every worker has it
  open), so a batch is never pickled or copied between processes.
- A batch handed out is a view of its buffer, valid until the next batch is asked for (the buffer is then
  refilled); pass copy=True to get arrays of your own. Labels are always a copy.
- Memory does not grow with the data set: the caller holds the buffers; each worker holds the buffers, one
  epoch's order (8 bytes per image), and the rows it is reading, whose pages it gives back after each task
  (`store.MappedArray.release`), so even the memory map's resident pages stay bounded.
- A task's exception is raised in the caller when it asks for that task's batch; a worker that dies, by the
  next batch it asks for (never a hang). Ctrl-C in the caller, `close()`, the end of a `with` block or the
  garbage collector ends the workers; they ignore Ctrl-C themselves and exit if the caller disappears.
- Several processes training together (ranks) each make their own slice of every global batch: rank r of
  `world_size` takes positions [r*g/W, (r+1)*g/W) of a global batch of g images, with the same per-position
  random numbers, so the ranks' slices put together are the single-process batch.

Sources: `alexnet.data.store.PreparedStore`, `RawFolderSource` (decodes files in the workers; unreadable
files are skipped with a warning naming each, their place in the batch taken by the next readable image), and
`Subset(source, indices)` of either.

May import: NumPy, Pillow, the standard library, alexnet.data.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alexnet.data.augment import (
    Normalization,
    center_sample,
    epoch_order,
    sample_rng,
    ten_crop_sample,
    train_sample,
)
from alexnet.data.decode import decode_image
from alexnet.data.layout import list_source
from alexnet.data.store import PixelSums, Statistics
from alexnet.data.workers import WorkerDied, WorkerError, WorkerPool, usable_cores

MODES = ("train", "center", "ten_crop")
# Unreadable files in a row after which a raw source gives up on finding a replacement.
_MAX_REPLACEMENTS = 100


class BadImageWarning(UserWarning):
    """An image file could not be read and was skipped."""


class ImageSource(Protocol):
    """What the loader reads from: `len`, labels, (3, size, size) uint8 images, and the training statistics."""

    size: int
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int: ...

    def read(self, index: int) -> np.ndarray: ...

    def prefetch(self, indices: Sequence[int]) -> None: ...

    def release(self, indices: Sequence[int]) -> None: ...

    def describe(self, index: int) -> str: ...


# ----------------------------------------------------------------------------- the raw-folder source


class RawFolderSource:
    """Images decoded straight from SRC/train/<class>/... (or SRC/val/...), without preparing a store first.

    Each worker decodes its images (`alexnet.data.decode.decode_image`: shorter side to `size`, centre
    square) every epoch, so this is slower than a prepared store; it is there to try a folder without
    preparing it. `read(i)` raises ValueError for an unreadable file (the loader then skips it).
    The file list is kept as one NumPy bytes array, so pickling it to the workers is one buffer copy.
    """

    def __init__(
        self,
        src: str | os.PathLike,
        split: str = "train",
        size: int = 256,
        class_index: str | os.PathLike | None = None,
        val_labels: str | os.PathLike | None = None,
    ) -> None:
        classes, splits = list_source(src, class_index, val_labels)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}: {', '.join(splits)}")
        listing = splits[split]
        self.src, self.split, self.size, self.classes = Path(src), split, size, classes
        self.root = listing.root
        self.files = np.array([f.encode("utf-8", "surrogateescape") for f in listing.files])
        self.labels = listing.labels

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, index: int) -> str:
        """The file of image `index`."""
        return str(self.root / self.files[index].decode("utf-8", "surrogateescape"))

    def read(self, index: int) -> np.ndarray:
        return decode_image(self.describe(index), self.size)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Nothing to do: each file is read when decoded."""

    def release(self, indices: Sequence[int]) -> None:
        """Nothing to release: files are read, not mapped."""


class Subset:
    """Some images of a source, by index: `Subset(store, indices)[i]` is `store[indices[i]]`.

    For a validation split held out of the training images (the learning-rate schedule's), or a smaller
    training set. It keeps the source's statistics (the whole training set's) and pickles as the source plus
    the (K,) index array, 8 bytes per image.
    """

    def __init__(self, source: Any, indices: Sequence[int] | np.ndarray) -> None:
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) and not (0 <= self.indices.min() and self.indices.max() < len(source)):
            raise ValueError(f"subset indices must be in 0..{len(source) - 1}")
        self.size, self.classes = source.size, source.classes
        self.labels = np.asarray(source.labels[self.indices], dtype=np.int64)
        self.statistics = getattr(source, "statistics", None)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> np.ndarray:
        return self.source.read(int(self.indices[index]))

    def prefetch(self, indices: Sequence[int]) -> None:
        self.source.prefetch([int(self.indices[i]) for i in indices])

    def release(self, indices: Sequence[int]) -> None:
        self.source.release([int(self.indices[i]) for i in indices])

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))


def estimate_statistics(source: Any, count: int = 1000, seed: int = 0) -> Statistics:
    """Statistics (mean image, channel mean/std, RGB eigen-pairs) of `count` random images of a source.

    For a raw folder, which has no statistics until it is prepared; unreadable images are left out.
    """
    rng = np.random.default_rng([seed, 12345])
    picks = np.sort(rng.choice(len(source), size=min(count, len(source)), replace=False))
    sums = PixelSums.zeros(source.size)
    for index in picks:
        try:
            sums.add_images(source.read(int(index))[None])
        except ValueError:
            continue
    return sums.statistics()


# ----------------------------------------------------------------------------- what each batch holds


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything a worker needs to make any part of any batch (small: pickled once to each worker)."""

    n: int  # images in the source
    batch_size: int  # the global batch size
    mode: str
    crop: int
    norm: Normalization
    eigvals: np.ndarray | None
    eigvecs: np.ndarray | None
    lighting: float
    flip: bool
    shuffle: bool
    drop_last: bool
    seed: int
    rank: int
    world_size: int

    def batches(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def positions(self, batch: int) -> tuple[int, int]:
        """[lo, hi): the positions in the epoch's order of this rank's slice of global batch `batch`."""
        start = batch * self.batch_size
        g = min(self.batch_size, self.n - start)
        return start + g * self.rank // self.world_size, start + g * (self.rank + 1) // self.world_size

    def local_capacity(self) -> int:
        """The most images this rank's slice of a batch can hold."""
        return -(-self.batch_size // self.world_size)

    def x_shape(self, count: int) -> tuple[int, ...]:
        return (10, count, 3, self.crop, self.crop) if self.mode == "ten_crop" else (count, 3, self.crop, self.crop)


@dataclass(frozen=True)
class _SlotLayout:
    """Where slot s's x (float32) and y (int64) live in the shared batch buffer."""

    count: int
    x_shape: tuple[int, ...]
    y_len: int

    @property
    def y_bytes(self) -> int:
        return -(-self.y_len * 8 // 64) * 64  # 64-byte aligned, so x starts aligned too

    @property
    def slot_bytes(self) -> int:
        return self.y_bytes + -(-math.prod(self.x_shape) * 4 // 64) * 64

    def views(self, buffer: np.ndarray, slot: int) -> tuple[np.ndarray, np.ndarray]:
        start = slot * self.slot_bytes
        y = buffer[start : start + self.y_len * 8].view(np.int64)
        x_start = start + self.y_bytes
        x = buffer[x_start : x_start + math.prod(self.x_shape) * 4].view(np.float32).reshape(self.x_shape)
        return x, y


def _shared_buffer(nbytes: int) -> tuple[np.ndarray, str]:
    """A file of `nbytes` in shared memory (/dev/shm) or, if that is missing or full, in the temp folder.

    The space is allocated up front (posix_fallocate), so a full /dev/shm is noticed here, not as a bus
    error in a worker later. Returns the caller's map of it and its path (for the workers to open).
    """
    folders = [d for d in ("/dev/shm",) if os.path.isdir(d) and os.access(d, os.W_OK)] + [None]
    for folder in folders:
        fd, path = tempfile.mkstemp(prefix="alexnet-batches-", dir=folder)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:
                os.ftruncate(fd, nbytes)
        except OSError:
            os.close(fd)
            os.unlink(path)
            if folder is None:
                raise
            continue
        os.close(fd)
        return np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,)), path
    raise OSError("no folder for the batch buffers")  # not reached: the temp folder raises above


# ----------------------------------------------------------------------------- making a part of a batch


class _Maker:
    """Makes parts of batches into the slots: the workers' state (and the caller's when workers=0)."""

    def __init__(self, source: Any, plan: _Plan, layout: _SlotLayout, buffer: np.ndarray) -> None:
        self.source, self.plan, self.layout, self.buffer = source, plan, layout, buffer
        self.order_epoch, self.order = -1, np.zeros(0, dtype=np.int64)
        self.bad: dict[int, str] = {}  # unreadable images seen by this process

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self.order_epoch:
            self.order_epoch, self.order = epoch, epoch_order(self.plan.seed, epoch, self.plan.n, self.plan.shuffle)
        return self.order

    def _read(self, index: int, found: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
        """(image, label) of `index`, or of the next readable image after it when it cannot be read."""
        for step in range(_MAX_REPLACEMENTS):
            i = (index + step) % self.plan.n
            if i not in self.bad:
                try:
                    return self.source.read(i), int(self.source.labels[i])
                except ValueError as exc:
                    self.bad[i] = str(exc.__cause__ or exc)
                    found.append((self.source.describe(i), self.bad[i]))
        raise ValueError(f"{_MAX_REPLACEMENTS} unreadable images in a row from {self.source.describe(index)} on")

    def fill(self, epoch: int, batch: int, slot: int, lo: int, hi: int) -> list[tuple[str, str]]:
        """Write images lo..hi-1 of this rank's slice of `batch` into `slot`; returns the unreadable files met."""
        plan = self.plan
        x, y = self.layout.views(self.buffer, slot)
        first, _ = plan.positions(batch)
        order = self._order(epoch)
        found: list[tuple[str, str]] = []
        indices = [int(i) for i in order[first + lo : first + hi]]
        self.source.prefetch(indices)
        for j, index in zip(range(lo, hi), indices):
            position = first + j
            image, y[j] = self._read(index, found)
            if plan.mode == "train":
                rng = sample_rng(plan.seed, epoch, position)
                train_sample(
                    image, rng, plan.crop, plan.norm, plan.eigvals, plan.eigvecs, plan.lighting, plan.flip, x[j]
                )
            elif plan.mode == "center":
                center_sample(image, plan.crop, plan.norm, x[j])
            else:
                ten_crop_sample(image, plan.crop, plan.norm, x[:, j])
        self.source.release(indices)
        return found


_MAKER: list[_Maker] = []  # this worker process's maker (set by _init_worker)


def _init_worker(source: Any, plan: _Plan, layout: _SlotLayout, path: str) -> None:
    buffer = np.memmap(path, dtype=np.uint8, mode="r+", shape=(layout.count * layout.slot_bytes,))
    _MAKER[:] = [_Maker(source, plan, layout, buffer)]


def _fill_task(epoch: int, batch: int, slot: int, lo: int, hi: int) -> list[tuple[str, str]]:
    return _MAKER[0].fill(epoch, batch, slot, lo, hi)


# ----------------------------------------------------------------------------- the loader


class BackgroundLoader:
    """Batches of a source made by background workers, in order, reproducible and resumable (module docstring).

    source: a PreparedStore or RawFolderSource (anything with the ImageSource methods).
    batch_size: the global batch size (with world_size > 1, this rank gets its slice of each batch).
    mode: "train" (random crop, mirror, PCA lighting), "center" (centre crop) or "ten_crop" (the paper's 10
        views: batches of shape (10, B, 3, crop, crop), in `transforms.ten_crop`'s order).
    crop: the side of the crops.  mean: "image" (the paper's mean image) or "channel" (see augment.py).
    lighting: the std of PCA lighting's alphas (0 turns it off).  flip: mirror half the training crops.
    shuffle, drop_last: default True for "train", False otherwise.
    seed: with the epoch and the position, the only source of randomness.
    workers: processes (default: all usable cores but one, which the training itself uses); 0: no process.
    prefetch: batches made ahead of the one in use.  copy: hand out batches the caller owns (see above).
    statistics: the training statistics (default: the store's; a raw folder estimates them from 1,000 images).
    start_method: how worker processes start (`alexnet.data.workers.get_context`).

    Yields (x, y): x (B, 3, crop, crop) float32 (or (10, B, ...) for ten_crop), y (B,) int64.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int = 128,
        *,
        mode: str = "train",
        crop: int = 227,
        mean: str = "image",
        lighting: float = 0.1,
        flip: bool = True,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        seed: int = 0,
        workers: int | None = None,
        prefetch: int = 2,
        rank: int = 0,
        world_size: int = 1,
        statistics: Statistics | None = None,
        copy: bool = False,
        start_method: str | None = None,
    ) -> None:
        _check_settings(source, batch_size, mode, crop, rank, world_size, prefetch)
        if statistics is None:
            statistics = getattr(source, "statistics", None) or estimate_statistics(source, seed=seed)
        if mode == "train" and lighting > 0:
            eigvals, eigvecs = statistics.eigvals, statistics.eigvecs
        else:
            eigvals = eigvecs = None
        train = mode == "train"
        self.plan = _Plan(
            len(source), batch_size, mode, crop, Normalization.from_statistics(statistics, mean),
            eigvals, eigvecs, lighting, flip,
            train if shuffle is None else shuffle, train if drop_last is None else drop_last,
            seed, rank, world_size,
        )  # fmt: skip
        self.source, self.statistics, self.copy, self.start_method = source, statistics, copy, start_method
        self.workers = max(1, usable_cores() - 1) if workers is None else workers
        self.prefetch = prefetch
        self.bad_files: dict[str, str] = {}  # unreadable files met so far: path -> reason
        self._layout = _SlotLayout(
            prefetch + 1, self.plan.x_shape(self.plan.local_capacity()), self.plan.local_capacity()
        )
        self._pool: WorkerPool | None = None
        self._buffer: np.ndarray | None = None
        self._inline: _Maker | None = None
        self._active: Iterator[Any] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.plan.batches()

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes' ids (empty before the first batch, with workers=0, or after close)."""
        return self._pool.pids if self._pool is not None else []

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`epoch(0)`: for test batches; training asks for `epoch(e)` by number."""
        return self.epoch(0)

    def __enter__(self) -> BackgroundLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the workers and free the batch buffers (the loader starts them again if used later)."""
        if self._active is not None:
            self._active.close()
        if self._pool is not None:
            self._pool.close()
        self._pool = self._buffer = self._inline = None

    def _stop_now(self) -> None:
        """End the workers without waiting for their tasks (after Ctrl-C), then close."""
        if self._pool is not None:
            self._pool.close(now=True)
        self._pool = None
        self.close()

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of epoch `epoch`, from batch `start_batch` on (to resume exactly where a run stopped)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is outside 0..{len(self)}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if self._active is not None:
            self._active.close()  # a previous epoch left unfinished: stop its tasks before reusing the buffers
        self._active = self._batches(epoch, start_batch)
        return self._active

    def _start(self) -> None:
        """Create the batch buffers and start the workers (the first time a batch is asked for)."""
        if self.workers == 0:
            if self._inline is None:
                buffer = np.zeros(self._layout.count * self._layout.slot_bytes, dtype=np.uint8)
                self._inline, self._buffer = _Maker(self.source, self.plan, self._layout, buffer), buffer
            return
        if self._pool is not None:
            return
        self._buffer, path = _shared_buffer(self._layout.count * self._layout.slot_bytes)
        try:
            initargs = (self.source, self.plan, self._layout, path)
            self._pool = WorkerPool(self.workers, _init_worker, initargs, self.start_method)
        finally:
            os.unlink(path)  # every worker has it mapped (or none will): the name is no longer needed

    def _parts(self, count: int) -> list[tuple[int, int]]:
        """This rank's slice of a batch, `count` images, cut into one part per worker."""
        parts = max(1, min(count, self.workers))
        bounds = [count * k // parts for k in range(parts + 1)]
        return [(bounds[k], bounds[k + 1]) for k in range(parts) if bounds[k] < bounds[k + 1]]

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self._start()
        free = deque(range(self._layout.count))  # slots not in use
        slots: dict[int, int] = {}  # batch -> its slot
        remaining: dict[int, set[int]] = {}  # batch -> its tasks not done yet
        owner: dict[int, int] = {}  # task ticket -> batch
        errors: dict[int, WorkerError] = {}  # batch -> the exception of one of its tasks
        ahead, held = start_batch, None
        try:
            for batch in range(start_batch, len(self)):
                if held is not None:
                    free.append(held)  # the caller asked for the next batch: the last one's slot is free
                while ahead < len(self) and free and ahead <= batch + self.prefetch:
                    slots[ahead] = free.popleft()
                    remaining[ahead] = self._submit(epoch, ahead, slots[ahead], owner)
                    ahead += 1
                while remaining[batch]:
                    try:
                        ticket, found = self._pool.next_result()  # type: ignore[union-attr]
                    except WorkerError as exc:  # kept for its own batch: the batches before it are fine
                        ticket, found = exc.ticket, []
                        errors.setdefault(owner[ticket], exc)  # type: ignore[index]
                    remaining[owner.pop(ticket)].discard(ticket)  # type: ignore[arg-type]
                    self._note_bad(found)
                del remaining[batch]
                if batch in errors:
                    raise errors[batch]
                held = slots.pop(batch)
                yield self._hand_out(batch, held)
        except KeyboardInterrupt:  # Ctrl-C while waiting for a batch: end the workers now
            self._active = None  # this generator is running: close() must not try to close it
            self._stop_now()
            raise
        finally:
            self._settle(owner)

    def _submit(self, epoch: int, batch: int, slot: int, owner: dict[int, int]) -> set[int]:
        """Send the parts of a batch to the workers (or make them here); returns their tickets."""
        lo, hi = self.plan.positions(batch)
        tickets = set()
        for worker, (part_lo, part_hi) in enumerate(self._parts(hi - lo)):
            if self._inline is not None:
                self._note_bad(self._inline.fill(epoch, batch, slot, part_lo, part_hi))
                continue
            # Part k always goes to worker k: each worker writes the same part of every slot, so the shared
            # pages it touches (and keeps resident) are its share of the buffers, not all of them.
            args = (epoch, batch, slot, part_lo, part_hi)
            ticket = self._pool.submit(_fill_task, *args, worker=worker)  # type: ignore[union-attr]
            owner[ticket] = batch
            tickets.add(ticket)
        return tickets

    def _hand_out(self, batch: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.plan.positions(batch)
        x, y = self._layout.views(self._buffer, slot)  # type: ignore[arg-type]
        x = x[:, : hi - lo] if self.plan.mode == "ten_crop" else x[: hi - lo]
        return (x.copy() if self.copy else x), y[: hi - lo].copy()

    def _settle(self, owner: dict[int, int]) -> None:
        """Wait for the tasks still running (they write into slots the next epoch reuses); close on failure."""
        self._active = None
        if self._pool is None or not owner:
            return
        try:
            while self._pool.in_flight:
                self._pool.next_result()
        except KeyboardInterrupt:
            self._stop_now()
            raise
        except BaseException:  # a broken pool: end the workers
            self.close()
            raise

    def _note_bad(self, found: list[tuple[str, str]]) -> None:
        for path, reason in found:
            if path not in self.bad_files:
                self.bad_files[path] = reason
                warnings.warn(f"skipped unreadable image {path}: {reason}", BadImageWarning, stacklevel=3)


def _check_settings(
    source: Any, batch_size: int, mode: str, crop: int, rank: int, world_size: int, prefetch: int
) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or prefetch < 1:
        raise ValueError(f"batch_size and prefetch must be at least 1, got {batch_size} and {prefetch}")
    if not 0 < crop <= source.size:
        raise ValueError(f"cannot crop {crop}x{crop} out of the source's {source.size}x{source.size} images")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if len(source) == 0:
        raise ValueError("the source has no images")


def eval_batches(
    source: Any,
    batch_size: int = 128,
    *,
    crop: int = 227,
    ten_crop: bool = False,
    mean: str = "image",
    workers: int | None = None,
    statistics: Statistics | None = None,
    rank: int = 0,
    world_size: int = 1,
    start_method: str | None = None,
) -> BackgroundLoader:
    """Test batches over a whole split, in order: the centre crop, or with `ten_crop` the paper's 10 views.

    For a prepared store: `eval_batches(PreparedStore(OUT, "val"), crop=227, ten_crop=True)`; its statistics
    are the training set's, which the store keeps with every split. Iterate it once: `for x, y in loader`.
    With ten_crop, x is (10, B, 3, crop, crop): average the softmax over the first axis.
    """
    return BackgroundLoader(
        source,
        batch_size,
        mode="ten_crop" if ten_crop else "center",
        crop=crop,
        mean=mean,
        workers=workers,
        statistics=statistics,
        rank=rank,
        world_size=world_size,
        start_method=start_method,
    )


__all__ = [
    "BackgroundLoader",
    "BadImageWarning",
    "ImageSource",
    "RawFolderSource",
    "Subset",
    "WorkerDied",
    "WorkerError",
    "estimate_statistics",
    "eval_batches",
]
