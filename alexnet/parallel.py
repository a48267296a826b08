"""Training across processes (`mpiexec -n N alexnet train ...`): data parallelism on `minigrad.distributed`.

Every rank holds the whole model and computes its share of each global batch (`--batch-size` stays the global
batch); the ranks sum their gradients with one all-reduce before the optimizer step, so every rank takes the
same step. Determinism: the data order, the augmentation and the dropout masks are drawn per GLOBAL sample
(every rank draws the numbers of the whole batch and keeps its rows), so N processes train the weights one
process would, up to the order of floating-point sums. Rank 0 alone prints and writes the run's files.

Without a launcher, or with one process, `join` gives rank 0 of 1 and nothing here changes a run.

May import: `alexnet.config`, minigrad's public API (`distributed`, `nn`), NumPy, threadpoolctl, the standard
library.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from alexnet.config import TrainConfig
from minigrad import distributed, nn
from minigrad.distributed import World


class Part(NamedTuple):
    """This rank's rows of a global batch of `n_global` images."""

    rows: slice
    n_global: int

    @property
    def count(self) -> int:
        return self.rows.stop - self.rows.start

    @property
    def weight(self) -> float:
        """The share of the global batch: a rank's mean loss times this sums over the ranks to the global mean."""
        return self.count / self.n_global


def whole(n: int) -> Part:
    """All the rows of a batch of n: a single process's part."""
    return Part(slice(0, n), n)


def join(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[World, TrainConfig]:
    """This process's world, and the settings it trains with: under a launcher with several ranks, the device
    of this rank (`--device gpu`: cuda:<local rank>) and its share of the cores for the BLAS and the loader's
    workers. The first call of `distributed.world()` is made here, on every rank."""
    world = distributed.world()
    if world.size == 1:
        return world, cfg
    world = distributed.setup(cfg.device)
    threads = max(1, _cores() // world.local_size)
    _limit_threads(threads)
    workers = cfg.workers if cfg.workers is not None else max(0, threads - 1)
    if world.is_root:
        log(
            f"{world.size} processes ({world.backend}, {world.local_size} on this machine): each uses {threads} "
            f"BLAS thread(s) and {workers} loader worker(s); --batch-size is the global batch, shared by the ranks"
        )
    return world, dataclasses.replace(cfg, device=str(world.device), workers=workers)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _limit_threads(threads: int) -> None:
    """The BLAS, and so minigrad's CPU threads (which follow its thread count), to `threads` threads: several
    ranks on one machine would otherwise each start a thread per core and fight over them."""
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(limits=threads, user_api="blas")  # stays in force: not used as a context
    except ImportError:
        pass


def set_dropout_rows(model: nn.Module, part: Part | None) -> None:
    """Tell every Dropout layer which rows of the global batch its input holds (None: the whole batch), so its
    mask is this rank's rows of the global batch's mask."""
    for _, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            module.rows, module.n_global = (None, None) if part is None else (part.rows, part.n_global)


def sum_over_ranks(values: list[float], world: World) -> np.ndarray:
    """(len(values),) float64: the sums over the ranks (one small all-reduce); the values in one process."""
    array = np.asarray(values, dtype=np.float64)
    return array if world.size == 1 else np.asarray(distributed.all_reduce_sum(array, world))


def silent(message: str) -> None:
    """The log of ranks other than 0: only rank 0 prints."""


def root_only(log: Callable[[str], None], world: World) -> Callable[[str], None]:
    return log if world.is_root else silent


__all__ = ["Part", "World", "join", "root_only", "set_dropout_rows", "silent", "sum_over_ranks", "whole"]
