"""Training: the loop in named steps, read top-down.

    train()             start_run() or resume_run()    -> a Run: settings, folder, model, optimizer, data
                        run_epochs()                   -> train_epoch() then end_epoch(), until done or stopped
                        final_test()                   -> the test set, scored once with the best epoch's weights

Reproducibility is designed in:
- the order and augmentation of epoch e come from `numpy.random.default_rng([seed, e])` (Fashion-MNIST) or
  from (seed, e, position) for each image (colour data, made by `alexnet.data.BackgroundLoader`'s workers:
  the same batches for any number of workers), so a run stopped in the middle of an epoch continues with
  exactly the batches it would have had;
- dropout masks come from minigrad's seeded generator, whose state is in the checkpoint;
- checkpoints hold the model, optimizer and scheduler states and the epoch and batch reached.
On the CPU a run that is stopped and resumed ends with exactly the weights of a run that never stopped.

May import: the other `alexnet` modules except `cli`, `plots` and `inference`; minigrad's public API; NumPy;
tqdm; the standard library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minigrad.functional as F
from alexnet import data
from alexnet.checkpoint import CheckpointError, load_checkpoint, split_prefix, write_text_atomically
from alexnet.config import BOUNDS, TrainConfig, resolve_defaults
from alexnet.evaluate import EvalResult, evaluate, evaluate_batches, ten_crop_notes, top_k_error
from alexnet.model import AlexNet, build_model, model_from_config
from alexnet.run_data import PreparedData, StreamData, prepare_data
from alexnet.runs import (
    DATA_STATS,
    RunState,
    default_run_dir,
    load_model,
    load_statistics,
    read_metrics,
    remove_stale_temporaries,
    restore_model,
    restore_optimizer,
    save_run_checkpoint,
    save_statistics,
    write_config,
    write_metrics,
)
from minigrad import Tensor, backend, no_grad
from minigrad.optim import SGD, Adam, Optimizer, ReduceLROnPlateau

# TrainConfig, load_model and prepare_data live in config, runs and run_data; lessons import them from here too.
__all__ = ["Run", "TrainConfig", "TrainResult", "TrainingDiverged", "load_model", "prepare_data", "train"]

Log = Callable[[str], None]
# after_batch(epoch, batch) is called after every optimizer step; True stops the run there as Ctrl-C would.
AfterBatch = Callable[[int, int], bool]


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


class ResumeError(ValueError):
    """A resume that cannot do what was asked (e.g. an epoch count the run has already passed)."""


@dataclass
class Run:
    """A run in progress: its settings, folder, model, optimizer, data, position and metrics so far."""

    cfg: TrainConfig
    run_dir: Path
    model: AlexNet
    optimizer: Optimizer
    scheduler: ReduceLROnPlateau
    data: PreparedData | StreamData
    state: RunState
    metrics: list[dict[str, Any]]
    saved_at: tuple[int, int] | None = None  # the (epoch, batch) that checkpoint.npz holds; None: no file yet
    # The background loaders of streamed data, started when first needed and kept for the whole run.
    loaders: dict[Any, data.BackgroundLoader] = dataclasses.field(default_factory=dict)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.npz"

    @property
    def n_batches(self) -> int:
        return -(-len(self.data.train_labels) // self.cfg.batch_size)

    def loader(self, split: str, ten_crop: bool = False) -> data.BackgroundLoader:
        """The loader of streamed data's "train", "val" or "test" batches (its workers start once per run)."""
        key = (split, ten_crop)
        if key not in self.loaders:
            assert isinstance(self.data, StreamData)
            if split == "train":
                self.loaders[key] = self.data.train_loader(self.cfg)
            else:
                self.loaders[key] = self.data.eval_loader(split, self.cfg, ten_crop)
        return self.loaders[key]

    def close(self) -> None:
        """End the loaders' worker processes."""
        for loader in self.loaders.values():
            loader.close()
        self.loaders.clear()

    def save(self, path: Path) -> None:
        """Write the run's checkpoint (everything needed to continue exactly) to `path`."""
        norm = (self.data.mean, self.data.std)
        save_run_checkpoint(
            path, self.model, self.optimizer, self.scheduler, self.state, self.cfg, self.data.class_names, norm
        )
        if path == self.checkpoint_path:
            self.saved_at = (self.state.epoch, self.state.batch)


@dataclass
class TrainResult:
    run_dir: Path
    model: AlexNet
    metrics: list[dict[str, Any]]
    test: EvalResult | None
    stopped_early: bool
    data: PreparedData | StreamData


def train(
    cfg: TrainConfig,
    resume: str | os.PathLike | None = None,
    after_batch: AfterBatch | None = None,
    log: Log = print,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train (or resume) a run. Returns the final model, the per-epoch metrics and the test result.

    Args:
        cfg: the run's settings. When resuming, the saved settings are used, except `epochs`,
            `device` and `progress`, which may be changed (`epochs` to train longer: config.json records
            each change under "extensions"), and `data`, which may point at the same data in a new place.
        resume: a run folder (or its checkpoint file) to continue.
        after_batch: called as after_batch(epoch, batch) after every optimizer step (both count from 1);
            returning True stops the run there as Ctrl-C would (a notebook's way to stop early).
        log: where progress lines go.
        given: the settings the user gave explicitly (the CLI's flags), to name those a resume ignores;
            None takes the settings that differ from TrainConfig's defaults.
    """
    run = start_run(cfg, log) if resume is None else resume_run(resume, cfg, log, given)
    try:
        stopped = run_epochs(run, after_batch, log)
        test = None if stopped else final_test(run, log)
    finally:
        run.close()
    return TrainResult(run.run_dir, run.model, run.metrics, test, stopped, run.data)


# ----------------------------------------------------------------------------- set-up and resume


def make_optimizer(cfg: TrainConfig, model: AlexNet) -> Optimizer:
    """The run's optimizer: SGD with the paper's momentum and weight decay, or Adam."""
    if cfg.optimizer == "sgd":
        return SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'sgd' or 'adam'")


def _build_model(cfg: TrainConfig, num_classes: int | None = None) -> AlexNet:
    switches = dict(lrn=cfg.lrn, groups=cfg.groups, overlap=cfg.overlap, width=cfg.width, init=cfg.init)
    return build_model(cfg.model, **switches, activation=cfg.activation, dropout=cfg.dropout, num_classes=num_classes)


def _assemble(
    cfg: TrainConfig, run_dir: Path, model: AlexNet, prepared: PreparedData | StreamData, state: RunState, metrics: list
) -> Run:
    model.to(cfg.device)
    optimizer = make_optimizer(cfg, model)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.patience, min_lr=cfg.min_lr)
    return Run(cfg, run_dir, model, optimizer, scheduler, prepared, state, metrics)


def start_run(cfg: TrainConfig, log: Log) -> Run:
    """A new run: check the settings, build the model, load the data, then (only then) make the folder."""
    cfg.check()
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.model)
    if (run_dir / "checkpoint.npz").exists():
        raise FileExistsError(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")
    backend.manual_seed(cfg.seed)
    model = _build_model(cfg)
    mc = model.config
    prepared = prepare_data(cfg, mc.in_channels, mc.image_size)
    if prepared.class_names and len(prepared.class_names) != mc.num_classes:
        model = _build_model(cfg, num_classes=len(prepared.class_names))
        mc = model.config
    # The data found now, not None: a later resume or `alexnet eval` must not pick up other data (the full
    # Fashion-MNIST installed since, or $ALEXNET_FASHION_MNIST set or unset).
    cfg = dataclasses.replace(cfg, data=prepared.data_setting)
    cfg = resolve_defaults(cfg, mc.in_channels, len(prepared.train_labels))
    run = _assemble(cfg, run_dir, model, prepared, RunState(), [])
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a run that fails to load its data leaves nothing
    write_config(run_dir, cfg)
    if isinstance(prepared, StreamData):  # eval, predict and a resume normalise with these, not the data's
        save_statistics(run_dir / DATA_STATS, prepared.statistics)
    log(f"{mc.name}: {model.num_parameters():,} parameters on {model.device}; data: {prepared.source}")
    log(
        f"train {len(prepared.train_labels):,} / validation {len(prepared.val_labels):,} / "
        f"test {len(prepared.test_labels):,} images; run folder {run_dir}"
    )
    return run


# What a resume takes from the command line; every other setting is the run's own.
RESUME_HONOURS = ("epochs", "device", "progress", "data", "workers")


def _flag(name: str, value: Any) -> str:
    """A setting as the flag that gives it: --lr 0.1, --no-lrn, --ten-crop."""
    option = "--" + name.replace("_", "-")
    if name in ("lrn", "overlap") and value is False:
        return f"--no-{name}"
    if name == "augment":
        return "--augment" if value else "--no-augment"
    return option if value is True else f"{option} {value}"


def _ignored_on_resume(saved: dict[str, Any], cfg: TrainConfig, given: Collection[str] | None) -> list[str]:
    """The flags given with --resume that differ from the run's settings and that a resume does not take."""
    defaults = TrainConfig()
    if given is None:
        given = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)]
    ignored = []
    for name in sorted(set(given) - set(RESUME_HONOURS) - {"extensions"}):
        value, kept = getattr(cfg, name), saved.get(name)
        if value != kept:
            shown = "not set" if kept is None else ("on" if kept else "off") if isinstance(kept, bool) else kept
            ignored.append(f"{_flag(name, value)} (the run's: {shown})")
    return ignored


def _resumed_config(saved: dict[str, Any], cfg: TrainConfig, given: Collection[str] | None, log: Log) -> TrainConfig:
    """The saved settings, with what a resume may change: device, progress, epochs, and moved data."""
    ignored = _ignored_on_resume(saved, cfg, given)
    if ignored:
        log(f"note: --resume keeps the run's own settings; ignored: {', '.join(ignored)}")
    saved = {**saved, "device": cfg.device, "progress": cfg.progress}
    if cfg.workers is not None:  # the batches do not depend on it
        saved["workers"] = cfg.workers
    problem = BOUNDS["epochs"].problem(cfg.epochs)
    if problem:
        raise ValueError(f"epochs {problem}")
    if cfg.epochs is not None and cfg.epochs != saved.get("epochs"):  # resuming may extend a run
        change = {"epochs": cfg.epochs, "from": saved.get("epochs"), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        saved.update(epochs=cfg.epochs, extensions=[*saved.get("extensions", []), change])
    if cfg.data is not None and cfg.data != saved.get("data"):  # the same data, moved
        log(f"reading the data from {cfg.data} (the run used {saved.get('data')})")
        saved.update(data=cfg.data)
    return TrainConfig.from_saved(saved)


def _check_target(run_dir: Path, state: RunState, epochs: int, log: Log) -> None:
    """Refuse a target the run has passed, or a finished run with nothing left to do; say when only the
    test remains."""
    done = state.epoch - 1  # whole epochs trained
    if state.batch > 0 and epochs < state.epoch:
        raise ResumeError(
            f"{run_dir} is already into epoch {state.epoch} ({state.batch} batches of it trained): --epochs {epochs} "
            f"ends before that; give --epochs {state.epoch} or more"
        )
    if epochs < done:
        raise ResumeError(
            f"{run_dir} has already trained {done} epochs, more than --epochs {epochs}; to train longer give "
            f"--epochs {done + 1} or more"
        )
    if epochs == done and (run_dir / "test.json").exists():
        raise ResumeError(
            f"{run_dir} has already trained its {done} epochs and scored the test set (test.json): nothing to "
            f"resume. To train longer: alexnet train --resume {run_dir} --epochs N (N > {done}); to score it "
            f"again: alexnet eval {run_dir}"
        )
    if epochs == done:
        log(f"all {done} epochs of {run_dir} are trained; scoring the test set")


def _position(epoch: int, batch: int, n_batches: int) -> str:
    """Where a run is, counting epochs and batches from 1."""
    if batch == 0:
        return f"the start of epoch {epoch}" if epoch == 1 else f"the end of epoch {epoch - 1}"
    return f"epoch {epoch}, after batch {batch} of {n_batches}"


def _metrics_before(run_dir: Path, epoch: int, log: Log) -> list[dict[str, Any]]:
    """The records of the epochs a checkpoint covers (those before `epoch`), with a warning for any missing."""
    path = run_dir / "metrics.jsonl"
    metrics = [m for m in read_metrics(path) if m["epoch"] < epoch]
    lost = sorted(set(range(1, epoch)) - {m["epoch"] for m in metrics})
    if lost:  # e.g. a checkpoint copied without its metrics.jsonl: training can go on, the curves will have gaps
        log(f"warning: {path} has no record of epochs {', '.join(map(str, lost))}")
    return metrics


def resume_run(resume: str | os.PathLike, cfg: TrainConfig, log: Log, given: Collection[str] | None = None) -> Run:
    """A stopped run, exactly as it was saved: weights, optimizer, scheduler, random generators, position."""
    ckpt_path = Path(resume)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    arrays, meta = load_checkpoint(ckpt_path)
    cfg = _resumed_config(meta["train_config"], cfg, given, log)
    state = RunState(**meta["state"])
    _check_target(run_dir, state, cfg.epochs, log)
    remove_stale_temporaries(run_dir, log)
    backend.manual_seed(cfg.seed)
    model = model_from_config(meta["model_config"])
    restore_model(model, split_prefix(arrays, "model"), run_dir)
    mc = model.config
    # Normalise as the weights were trained, whatever the data gives today.
    stats = load_statistics(run_dir / DATA_STATS) if mc.in_channels == 3 else None
    prepared = prepare_data(cfg, mc.in_channels, mc.image_size, statistics=stats)
    if isinstance(prepared, PreparedData):
        mean, std = (np.asarray(meta[k], np.float32) for k in ("mean", "std"))
        prepared = dataclasses.replace(prepared, mean=mean, std=std)
    if prepared.class_names and len(prepared.class_names) != mc.num_classes:
        raise CheckpointError(f"the run has {mc.num_classes} classes but the data has {len(prepared.class_names)}")
    if cfg.data is None:  # a run saved without its data setting
        log(f"warning: the run does not say which data it used; continuing on {prepared.source}")
    run = _assemble(cfg, run_dir, model, prepared, state, _metrics_before(run_dir, state.epoch, log))
    if ckpt_path.is_dir() or ckpt_path == run.checkpoint_path:
        run.saved_at = (state.epoch, state.batch)
    restore_optimizer(run.optimizer, run.scheduler, arrays, meta)
    backend.set_rng_state(meta["rng"])
    if cfg.extensions != meta["train_config"].get("extensions", []):
        write_config(run_dir, cfg)
        log(f"the run now trains {cfg.epochs} epochs (was {cfg.extensions[-1]['from']}; recorded in config.json)")
    log(f"resuming {run_dir} at {_position(state.epoch, state.batch, run.n_batches)}")
    return run


# ----------------------------------------------------------------------------- the epochs


class _StopFlag:
    """Ctrl-C asks the loop to stop after the current batch (never halfway through an update)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no signal handling, Ctrl-C works as usual
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl-C again to stop at once)...", flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_epochs(run: Run, after_batch: AfterBatch | None, log: Log) -> bool:
    """Train epoch after epoch up to `cfg.epochs`. Returns True when stopped early (Ctrl-C or after_batch)."""
    with _StopFlag() as stop:

        def should_stop(epoch: int, batch: int) -> bool:
            return stop.requested or (after_batch is not None and after_batch(epoch, batch))

        while run.state.epoch <= run.cfg.epochs:
            epoch = run.state.epoch
            timing = train_epoch(run, should_stop)
            if timing.stopped and run.state.batch < run.n_batches:
                run.save(run.checkpoint_path)
                where = _position(epoch, run.state.batch, run.n_batches)
                log(f"stopped at {where}; saved {run.checkpoint_path}")
                log(f"continue with: alexnet train --resume {run.run_dir}")
                return True
            # A stop asked for during the epoch's last batch still lets the epoch end (validation, metrics,
            # checkpoints): a few seconds, and the run then stops exactly where an epoch ends.
            end_epoch(run, timing, log)
            if timing.stopped:
                log(f"stopped after epoch {epoch}; saved {run.checkpoint_path}")
                log(f"continue with: alexnet train --resume {run.run_dir}")
                return True
    return False


def epoch_batches(run: Run, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The training batches of `epoch` after the first `start_batch`, in the order and with the augmentation
    its seed gives: (b, x, y), b counting from 1, host arrays x (B, C, S, S) float32, normalised, y (B,) int64.

    Streamed data's x is a view of the loader's buffer, valid until the next batch is asked for.
    """
    prepared = run.data
    if isinstance(prepared, StreamData):
        for b, (x, y) in enumerate(run.loader("train").epoch(epoch, start_batch), start_batch + 1):
            yield b, x, y
        return
    batches = data.iterate_batches(
        prepared.train_images,
        prepared.train_labels,
        run.cfg.batch_size,
        shuffle=True,
        rng=np.random.default_rng([run.cfg.seed, epoch]),
        transform=prepared.train_transform(run.cfg.augment),
        mean=prepared.mean,
        std=prepared.std,
    )
    for b, (x, y) in enumerate(batches, 1):
        if b > start_batch:  # the earlier ones are made anyway: they advance the epoch's random generator
            yield b, x, y


@contextlib.contextmanager
def _quiet_float_warnings() -> Iterator[None]:
    """NumPy's overflow / invalid-value warnings off: a NaN or infinity is reported by TrainingDiverged instead.

    np.errstate covers this thread only; ops that split their work over threads warn from those, so a
    warnings filter (which every thread consults) silences the same messages there.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*encountered in", category=RuntimeWarning)
        yield


def _diverged(run: Run, what: str, where: str) -> TrainingDiverged:
    """The error for a non-finite loss or gradient: where it happened, and where the last good weights are."""
    if run.saved_at is not None:
        kept = f"the last good weights are in {run.checkpoint_path} ({_position(*run.saved_at, run.n_batches)})"
    elif run.checkpoint_path.exists():
        kept = f"the last good weights are in {run.checkpoint_path}"
    else:
        kept = f"nothing was saved yet: it diverged before its first epoch ended ({run.run_dir} holds only config.json)"
    best = run.run_dir / "best.npz"
    if best.exists():
        kept += f", and the best epoch's in {best}"
    return TrainingDiverged(
        f"{what} {where} (lr {run.optimizer.lr:g}). Training stopped; {kept}. "
        f"Start again with a smaller --lr (a resume keeps the run's lr)."
    )


def _gradients_finite(params: list[Tensor]) -> bool:
    """Whether every gradient is finite: one sum per tensor (a NaN or infinity anywhere makes the total one)."""
    total = 0.0
    with no_grad():
        for p in params:
            if p.grad is not None:
                total += float(p.grad.sum().item())
    return math.isfinite(total)


def train_step(run: Run, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """One update on one batch: forward, loss, backward, optimizer step. Returns the loss and the logits.

    A NaN or infinite loss or gradient stops the run (TrainingDiverged) before the update can spoil the
    weights; NumPy's own warnings about the same overflow are silenced, since the error says it better.
    """
    where = f"at epoch {run.state.epoch}, batch {run.state.batch + 1} of {run.n_batches}"
    with _quiet_float_warnings():
        logits = run.model(Tensor(backend.to_device(x, run.cfg.device)))
        loss = F.cross_entropy(logits, y)
        loss_value = float(loss.item())
        if not math.isfinite(loss_value):
            raise _diverged(run, f"the loss became {loss_value}", where)
        run.optimizer.zero_grad()
        loss.backward()
        if not _gradients_finite(run.model.parameters()):
            raise _diverged(run, "a gradient became NaN or infinite", where)
        run.optimizer.step()
    return loss_value, logits.numpy()


@dataclass
class EpochTiming:
    stopped: bool  # a stop was asked for after the last batch trained
    seconds: float
    images: int


def _progress_bar(run: Run) -> tqdm:
    return tqdm(
        total=run.n_batches,
        initial=run.state.batch,
        desc=f"epoch {run.state.epoch}/{run.cfg.epochs}",
        unit="batch",
        disable=not run.cfg.progress,
        dynamic_ncols=True,
        mininterval=0.2 if sys.stderr.isatty() else 15.0,  # keep logs of piped runs short
    )


def train_epoch(run: Run, should_stop: AfterBatch) -> EpochTiming:
    """Train the rest of the current epoch (all of it, unless a stopped run left it halfway)."""
    run.model.train()
    state, stats = run.state, run.state.epoch_stats
    t0, images = time.perf_counter(), 0
    with _progress_bar(run) as bar:
        # A stopped epoch continues after the batches it already trained on.
        for b, x, y in epoch_batches(run, state.epoch, state.batch):
            loss_value, logits = train_step(run, x, y)
            state.batch = b
            stats["loss_sum"] += loss_value * len(y)
            stats["errors"] += top_k_error(logits, y, 1) * len(y)
            stats["seen"] += len(y)
            images += len(y)
            speed = images / (time.perf_counter() - t0)
            bar.update(1)
            lr = run.optimizer.lr
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2g}", img_s=f"{speed:.0f}", refresh=False)
            if should_stop(state.epoch, b):
                return EpochTiming(True, time.perf_counter() - t0, images)
    return EpochTiming(False, time.perf_counter() - t0, images)


def end_epoch(run: Run, timing: EpochTiming, log: Log) -> None:
    """Validate, step the schedule, record the metrics, save best.npz (if better) and checkpoint.npz."""
    state, stats = run.state, run.state.epoch_stats
    epoch = state.epoch
    val = score(run, run.model, "val")
    if not math.isfinite(val.loss):
        raise _diverged(run, f"the validation loss became {val.loss}", f"at the end of epoch {epoch}")
    seen = max(stats["seen"], 1.0)
    record = {
        "epoch": epoch,
        "train_loss": stats["loss_sum"] / seen,
        "train_top1_error": stats["errors"] / seen,
        **val.as_dict("val_"),
        "lr": run.optimizer.lr,
        "images_per_second": timing.images / max(timing.seconds, 1e-9),
        "epoch_seconds": timing.seconds,
    }
    run.scheduler.step(val.top1_error)
    improved = state.best_val_top1_error is None or val.top1_error < state.best_val_top1_error
    if improved:
        state.best_val_top1_error = val.top1_error
    state.next_epoch()
    run.metrics.append(record)
    # Written before the checkpoint, so a checkpoint never covers an epoch missing from the file (a
    # resume drops the lines of epochs beyond its checkpoint).
    write_metrics(run.run_dir / "metrics.jsonl", run.metrics)
    # best.npz before checkpoint.npz: killed in between, the checkpoint still points at the start of
    # this epoch, and resuming trains it again and writes the same best.npz. The other order would
    # leave a checkpoint past this epoch next to an older best.npz that nothing ever rewrites.
    if improved:
        run.save(run.run_dir / "best.npz")
    run.save(run.checkpoint_path)
    log(
        f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {val.loss:.4f}, "
        f"val top-1 error {100 * val.top1_error:.2f}%, top-5 {100 * val.top5_error:.2f}%, "
        f"{record['images_per_second']:.0f} img/s, lr {run.optimizer.lr:g}"
    )


def score(run: Run, model: AlexNet, split: str, ten_crop: bool = False) -> EvalResult:
    """Loss, top-1 and top-5 error of `model` on the run's "val" (held out) or "test" split."""
    prepared = run.data
    with _quiet_float_warnings():
        if isinstance(prepared, StreamData):
            loader = run.loader(split, ten_crop)
            return evaluate_batches(model, loader, total=len(loader))
        images, labels = (
            (prepared.val_images, prepared.val_labels)
            if split == "val"
            else (prepared.test_images, prepared.test_labels)
        )
        return evaluate(model, images, labels, 256, prepared.mean, prepared.std, ten_crop=ten_crop)


# ----------------------------------------------------------------------------- the final test


def final_test(run: Run, log: Log) -> EvalResult:
    """Score the test set once, with the weights of the epoch that had the lowest validation error
    (model selection on validation data only: the test set never influences training). Writes test.json."""
    prepared = run.data
    best_model, best_meta = load_model(run.run_dir, run.cfg.device)
    best_epoch = best_meta["state"]["epoch"] - 1
    test = score(run, best_model, "test", ten_crop=run.cfg.ten_crop)
    if run.cfg.ten_crop:
        stored = prepared.image_size if isinstance(prepared, StreamData) else prepared.test_images.shape[-2:]
        for note in ten_crop_notes(stored, prepared.crop, run.cfg.augment):
            log(f"note: 10-crop test: {note}")
    log(
        f"test ({len(prepared.test_labels):,} images, best epoch {best_epoch} by validation error): "
        f"top-1 accuracy {100 * (1 - test.top1_error):.2f}%, "
        f"top-1 error {100 * test.top1_error:.2f}%, top-5 error {100 * test.top5_error:.2f}%"
    )
    record = {**test.as_dict("test_"), "count": test.count, "checkpoint": "best.npz", "epoch": best_epoch}
    write_text_atomically(run.run_dir / "test.json", json.dumps(record) + "\n")
    return test
