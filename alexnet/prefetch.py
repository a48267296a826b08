"""One batch ahead on a GPU: the next batch is copied to the device while the current one trains.

Without it every step starts by copying its batch from host memory and the GPU waits for that copy. Here
the training loop's batches pass through `prefetch_to_device`: while batch i is handed over, batch i+1 is
already copied into a pinned host buffer and on its way to the device on a side stream
(`minigrad.backend.to_device_async`). The batches, their order and their contents do not change.

Two pinned buffers are used in turn: batch i+1 is written into one while the copy of batch i may still be
reading the other. The loader's own buffer is free again as soon as its batch is staged, as its contract asks
(a streamed batch is valid until the next one is asked for).

May import: `alexnet.parallel` (Part), minigrad's public API (backend), NumPy, the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from alexnet.parallel import Part
from minigrad import backend

# (b, x, y, part): the batch number (from 1), images (B, C, S, S), labels (B,) and this rank's part.
Batch = tuple[int, Any, np.ndarray, Part]


class _Staging:
    """Two pinned host buffers, used in turn, each as large as the largest batch staged in it so far."""

    def __init__(self) -> None:
        self.buffers: list[np.ndarray | None] = [None, None]
        self.copies = [backend.CopyEvent(), backend.CopyEvent()]

    def send(self, i: int, x: np.ndarray, device: str) -> tuple[Any, backend.CopyEvent]:
        """Copy host batch `x` into buffer i % 2 and start its copy to `device`: (device array, its copy)."""
        slot = i % 2
        self.copies[slot].wait_on_host()  # the copy of batch i - 2 has finished reading this buffer
        buffer = self.buffers[slot]
        if buffer is None or buffer.shape[1:] != x.shape[1:] or buffer.dtype != x.dtype or len(buffer) < len(x):
            buffer = self.buffers[slot] = backend.pinned_empty(x.shape, x.dtype)
        staged = buffer[: len(x)]
        staged[...] = x
        on_device, copy = backend.to_device_async(staged, device)
        self.copies[slot] = copy
        return on_device, copy


def prefetch_to_device(batches: Iterable[Batch], device: str) -> Iterator[Batch]:
    """The same batches with x on `device`, each copied while the one before it trains: when batch i is
    handed over, batch i+1 (and no further one) has been taken from `batches`. y stays on the host.

    On the CPU there is nothing to copy: the batches pass through as they come, none taken ahead.
    """
    if backend.Device(device).kind == "cpu":
        yield from batches
        return
    staging = _Staging()
    ahead: tuple[Batch, backend.CopyEvent] | None = None
    for i, (b, x, y, part) in enumerate(batches):
        on_device, copy = staging.send(i, x, device)
        upcoming = ((b, on_device, np.array(y), part), copy)  # y copied too: the loader may reuse its buffer
        if ahead is not None:
            yield _arrived(*ahead)
        ahead = upcoming
    if ahead is not None:
        yield _arrived(*ahead)


def _arrived(batch: Batch, copy: backend.CopyEvent) -> Batch:
    """The batch, once the device's current stream is told to wait for its copy (the host does not wait)."""
    copy.wait_on_device()
    return batch
