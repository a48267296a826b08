"""The batch prefetcher: on a device, the next batch is on its way while the current one trains; the batches,
their order and contents never change, and nothing is taken more than one batch ahead."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import to_host, use_backend

from alexnet.config import TrainConfig
from alexnet.parallel import Part, whole
from alexnet.prefetch import prefetch_to_device
from alexnet.train import train
from minigrad import backend


class Source:
    """Batches as a streaming loader gives them: x is ONE buffer overwritten for every batch (valid only until
    the next is asked for); counts how many were taken."""

    def __init__(self, sizes: list[int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.xs = [rng.standard_normal((n, 3, 4, 4)).astype(np.float32) for n in sizes]
        self.ys = [rng.integers(0, 10, n) for n in sizes]
        self.taken = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, Part]]:
        buffer_x = np.empty((max(len(x) for x in self.xs), 3, 4, 4), np.float32)
        buffer_y = np.empty(len(buffer_x), np.int64)
        for b, (x, y) in enumerate(zip(self.xs, self.ys), 1):
            self.taken = b
            buffer_x[: len(x)], buffer_y[: len(y)] = x, y
            yield b, buffer_x[: len(x)], buffer_y[: len(y)], whole(len(y))


# a full epoch, its smaller last batch, then a full-size batch again (the staging buffers must follow)
SIZES = [[5], [5, 5, 5], [5, 5, 3], [3, 5, 5, 2, 5]]


@pytest.mark.parametrize("sizes", SIZES)
def test_the_same_batches_in_the_same_order_with_x_on_the_device(xp, device, sizes):
    source = Source(sizes)
    numbers = []
    for b, x, y, part in prefetch_to_device(source, device):  # each batch checked as it is handed over
        numbers.append(b)
        assert isinstance(x, xp.ndarray) and x.dtype == np.float32
        np.testing.assert_array_equal(to_host(x), source.xs[b - 1])  # though the source reuses its buffer
        np.testing.assert_array_equal(y, source.ys[b - 1])
        assert part == whole(len(y))
    assert numbers == list(range(1, len(sizes) + 1))


@pytest.mark.parametrize("backend_id", ["strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_on_a_device_exactly_one_batch_is_taken_ahead(backend_id):
    with use_backend(backend_id) as (_, device):
        source = Source([4, 4, 4, 4])
        batches = prefetch_to_device(source, device)
        for b, *_ in batches:
            assert source.taken == min(b + 1, 4)  # batch b handed over: b + 1 taken, never more


def test_on_the_cpu_batches_pass_through_as_they_come():
    source = Source([4, 4, 4])
    for b, x, *_ in prefetch_to_device(source, "cpu"):
        assert source.taken == b  # nothing taken ahead: there is no copy to overlap
        np.testing.assert_array_equal(x, source.xs[b - 1])


def test_pinned_empty_and_to_device_async_fall_back_to_plain_arrays_and_copies(xp, device):
    host = backend.pinned_empty((2, 3), np.float32)
    assert isinstance(host, np.ndarray) and host.shape == (2, 3) and host.dtype == np.float32
    host[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    on_device, copy = backend.to_device_async(host, device)
    copy.wait_on_device()
    copy.wait_on_host()
    assert isinstance(on_device, xp.ndarray)
    np.testing.assert_array_equal(to_host(on_device), host)


def test_a_run_on_the_strict_stand_in_trains_through_the_prefetcher(tmp_path):
    cfg = TrainConfig(
        model="alexnet-tiny", data="bundled", epochs=1, batch_size=32, max_train_images=96, val_size=32,
        width=0.5, out=str(tmp_path / "r"), progress=False, device="gpu",
    )  # fmt: skip
    with use_backend("strict"):
        result = train(cfg, log=lambda _: None)
    assert np.isfinite(result.metrics[0]["train_loss"])
