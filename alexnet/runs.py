"""A run folder and its files: `config.json`, `metrics.jsonl`, `checkpoint.npz`, `best.npz`, `test.json`.

`RunState` says where a run is; `save_run_checkpoint` writes everything needed to continue it exactly;
`load_model` rebuilds a trained model from a run folder or checkpoint file (eval, predict, plot).

May import: `alexnet.checkpoint`, `alexnet.config`, `alexnet.data.store`, `alexnet.model`, minigrad's public API
(backend, optim), NumPy, the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.checkpoint import (
    CheckpointError,
    atomic_open,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
    write_text_atomically,
)
from alexnet.config import TrainConfig
from alexnet.data.store import Statistics
from alexnet.model import AlexNet, model_from_config
from minigrad import backend
from minigrad.optim import Optimizer, ReduceLROnPlateau

# The normalisation statistics of a run on colour data (mean image, channel mean/std, RGB eigen-pairs).
DATA_STATS = "data_stats.npz"
# What a run folder holds; a save killed halfway leaves `<name>.<random>.tmp` next to one of them.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "config.json", "test.json", DATA_STATS)


def _new_epoch_stats() -> dict[str, float]:
    return {"loss_sum": 0.0, "errors": 0.0, "seen": 0.0}


@dataclass
class RunState:
    """Where a run is: `batch` batches of epoch `epoch` are trained (both count from 1; the next batch is
    batch + 1, and batch 0 means the epoch has not started)."""

    epoch: int = 1
    batch: int = 0
    best_val_top1_error: float | None = None
    epoch_stats: dict[str, float] = field(default_factory=_new_epoch_stats)

    def next_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch, self.batch, self.epoch_stats = self.epoch + 1, 0, _new_epoch_stats()


def default_run_dir(model_name: str) -> Path:
    """runs/MODEL-DATE-TIME."""
    return Path("runs") / f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, cfg: TrainConfig) -> Path:
    """config.json: the run's settings, readable without loading a checkpoint."""
    return write_text_atomically(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def save_statistics(path: Path, stats: Statistics) -> None:
    """The statistics a run normalises its colour data with, written atomically (`Statistics.save`'s format)."""
    with atomic_open(path) as f:
        np.savez(f, **{name: np.asarray(getattr(stats, name)) for name in stats.__dataclass_fields__})


def load_statistics(path: Path) -> Statistics:
    """A run's statistics (DATA_STATS), or a CheckpointError that names the missing file."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a run on colour data keeps its normalisation statistics there")
    return Statistics.load(path)


def remove_stale_temporaries(run_dir: Path, log: Callable[[str], None]) -> None:
    """A process killed while writing leaves its temporary file behind (the file it replaces is intact)."""
    for stale in (p for name in RUN_FILES for p in run_dir.glob(f"{name}.*.tmp")):
        stale.unlink()
        log(f"removed {stale.name}, left by an interrupted save")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (one JSON object per epoch); an error names the file and line."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}, line {number}: not a JSON record ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise CheckpointError(f"{path}, line {number}: not an epoch record (no integer 'epoch')")
        records.append(record)
    return records


def write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl whole, so a resumed run never keeps lines of epochs it trained again."""
    write_text_atomically(path, "".join(json.dumps(m) + "\n" for m in metrics))


def save_run_checkpoint(
    path: Path,
    model: AlexNet,
    optimizer: Optimizer,
    scheduler: ReduceLROnPlateau,
    state: RunState,
    cfg: TrainConfig,
    class_names: tuple[str, ...],
    norm: tuple[np.ndarray, np.ndarray],
) -> Path:
    """Everything needed to continue the run exactly: weights, optimizer buffers, scheduler, RNG, position."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    buffers = {k: v for k, v in opt_state.items() if isinstance(v, list)}
    for name, values in buffers.items():
        for i, v in enumerate(values):
            if v is not None:
                arrays[f"optim/{name}/{i}"] = v
    meta = {
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(cfg),
        "class_names": list(class_names),
        "mean": [float(v) for v in norm[0]],
        "std": [float(v) for v in norm[1]],
        "optimizer": {
            "type": type(optimizer).__name__,
            "lr": opt_state["lr"],
            "steps": opt_state["steps"],
            "buffers": {k: len(v) for k, v in buffers.items()},
        },
        "scheduler": scheduler.state_dict(),
        "rng": backend.get_rng_state(),
        "state": dataclasses.asdict(state),
    }
    return save_checkpoint(path, arrays, meta)


def restore_optimizer(
    optimizer: Optimizer, scheduler: ReduceLROnPlateau, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> None:
    """Put the optimizer's buffers and the scheduler back as `save_run_checkpoint` stored them."""
    opt_meta = meta["optimizer"]
    opt_state: dict[str, Any] = {"lr": opt_meta["lr"], "steps": opt_meta["steps"]}
    for name, count in opt_meta["buffers"].items():
        opt_state[name] = [arrays.get(f"optim/{name}/{i}") for i in range(count)]
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(meta["scheduler"])


def load_model(path: str | os.PathLike, device: str = "cpu", expect_model: str | None = None) -> tuple[AlexNet, dict]:
    """Rebuild the model stored in a checkpoint (on `device`) and return it with the checkpoint's meta.

    For a run folder this is the best epoch by validation error (best.npz), else the last (checkpoint.npz).
    """
    path = Path(path)
    if path.is_dir() and (path / "best.npz").exists():
        path = path / "best.npz"
    arrays, meta = load_checkpoint(path)
    cfg = meta["model_config"]
    if expect_model is not None and cfg["name"] != expect_model:
        raise CheckpointError(f"{path} holds a '{cfg['name']}' model, not '{expect_model}'")
    model = model_from_config(cfg)
    restore_model(model, split_prefix(arrays, "model"), path)
    return model.to(device), meta


def restore_model(model: AlexNet, state: dict[str, np.ndarray], path: Any = "checkpoint") -> None:
    """load_state_dict with an error that says the checkpoint belongs to another model."""
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} was made for a different model than {model.config.name}: {exc}") from exc
