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

`--precision` (fp32, tf32, fp16) runs every step through `minigrad.amp.MixedPrecision` (`Run.mp`): the
optimizer updates its float32 master weights, checkpoints and validation use them (`alexnet.precision`), and
in fp16 a step whose gradients overflow is skipped and counted, as dynamic loss scaling does. On a GPU the
next batch is copied to the device while the current one trains (`alexnet.prefetch`).

Under `mpiexec -n N` every rank runs this same loop on its share of each global batch (`alexnet.parallel`):
the gradients are summed over the ranks before each step, the per-step statistics and the stop decision too
(a NaN or Ctrl-C on any rank stops every rank after the same batch), and rank 0 alone prints and writes files.

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
from alexnet.parallel import Part, World, join, root_only, set_dropout_rows, sum_over_ranks, whole
from alexnet.precision import PrecisionState, master_weights, precision_notes, skip_verdict
from alexnet.prefetch import prefetch_to_device
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
from minigrad import Tensor, backend, distributed, no_grad
from minigrad.amp import MixedPrecision
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
    state: PrecisionState
    metrics: list[dict[str, Any]]
    # The precision of the steps (`--precision`): the optimizer updates mp.parameters(), float32 master weights.
    mp: MixedPrecision
    saved_at: tuple[int, int] | None = None  # the (epoch, batch) that checkpoint.npz holds; None: no file yet
    # The background loaders of streamed data, started when first needed and kept for the whole run.
    loaders: dict[Any, data.BackgroundLoader] = dataclasses.field(default_factory=dict)
    world: World = dataclasses.field(default_factory=World)  # the processes training together
    skips_in_a_row: int = 0  # fp16 steps skipped in a row for inf/NaN gradients (loss scaling)

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
            rank, size = self.world.rank, self.world.size
            if split == "train":
                self.loaders[key] = self.data.train_loader(self.cfg, rank, size)
            else:
                self.loaders[key] = self.data.eval_loader(split, self.cfg, ten_crop, rank, size)
        return self.loaders[key]

    def close(self) -> None:
        """End the loaders' worker processes; give the model back its float32 weights (and CuPy its fp32
        products after tf32)."""
        for loader in self.loaders.values():
            loader.close()
        self.loaders.clear()
        self.mp.restore()

    def save(self, path: Path) -> None:
        """Write the run's checkpoint (everything needed to continue exactly) to `path` (rank 0; the other
        ranks, whose state is the same, wait until it is written)."""
        if self.world.is_root:
            norm = (self.data.mean, self.data.std)
            self.state.record(self.mp, self.skips_in_a_row)
            with master_weights(self.mp):  # the checkpoint holds float32 weights whatever the precision
                save_run_checkpoint(
                    path, self.model, self.optimizer, self.scheduler, self.state, self.cfg, self.data.class_names, norm
                )
        distributed.barrier(self.world)
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
    world, cfg = join(cfg, log)
    log = root_only(log, world)
    run = start_run(cfg, log, world) if resume is None else resume_run(resume, cfg, log, given, world)
    try:
        stopped = run_epochs(run, after_batch, log)
        test = None if stopped else final_test(run, log)
    finally:
        run.close()
    return TrainResult(run.run_dir, run.model, run.metrics, test, stopped, run.data)


# ----------------------------------------------------------------------------- set-up and resume


def make_optimizer(cfg: TrainConfig, model: AlexNet | MixedPrecision) -> Optimizer:
    """The run's optimizer: SGD with the paper's momentum and weight decay, or Adam, on the parameters of
    `model` (for a MixedPrecision: its float32 master weights)."""
    if cfg.optimizer == "sgd":
        return SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'sgd' or 'adam'")


def _build_model(cfg: TrainConfig, num_classes: int | None = None) -> AlexNet:
    switches = dict(lrn=cfg.lrn, groups=cfg.groups, overlap=cfg.overlap, width=cfg.width, init=cfg.init)
    return build_model(cfg.model, **switches, activation=cfg.activation, dropout=cfg.dropout, num_classes=num_classes)


def _assemble(
    cfg: TrainConfig,
    run_dir: Path,
    model: AlexNet,
    prepared: PreparedData | StreamData,
    state: PrecisionState,
    metrics: list,
    world: World,
) -> Run:
    model.to(cfg.device)
    distributed.broadcast_parameters(model, world=world)  # identical already (same seed or checkpoint): made sure
    # From the float32 weights (new or from the checkpoint): in fp16 they become the master weights.
    mp = MixedPrecision(model, cfg.precision)
    optimizer = make_optimizer(cfg, mp)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.patience, min_lr=cfg.min_lr)
    run = Run(cfg, run_dir, model, optimizer, scheduler, prepared, state, metrics, mp, world=world)
    run.skips_in_a_row = state.restore(mp)
    return run


def start_run(cfg: TrainConfig, log: Log, world: World | None = None) -> Run:
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
    world = world or World()
    run = _assemble(cfg, run_dir, model, prepared, PrecisionState(), [], world)
    if world.is_root:
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a run that fails to load its data leaves nothing
        write_config(run_dir, cfg)
        if isinstance(prepared, StreamData):  # eval, predict and a resume normalise with these, not the data's
            save_statistics(run_dir / DATA_STATS, prepared.statistics)
    log(f"{mc.name}: {model.num_parameters():,} parameters on {model.device}, {cfg.precision}; data: {prepared.source}")
    for note in precision_notes(run.mp, model.device.kind):
        log(f"note: {note}")
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


def resume_run(
    resume: str | os.PathLike,
    cfg: TrainConfig,
    log: Log,
    given: Collection[str] | None = None,
    world: World | None = None,
) -> Run:
    """A stopped run, exactly as it was saved: weights, optimizer, scheduler, random generators, position."""
    ckpt_path = Path(resume)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    arrays, meta = load_checkpoint(ckpt_path)
    cfg = _resumed_config(meta["train_config"], cfg, given, log)
    state = PrecisionState(**meta["state"])
    _check_target(run_dir, state, cfg.epochs, log)
    world = world or World()
    if world.is_root:
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
    run = _assemble(cfg, run_dir, model, prepared, state, _metrics_before(run_dir, state.epoch, log), world)
    if ckpt_path.is_dir() or ckpt_path == run.checkpoint_path:
        run.saved_at = (state.epoch, state.batch)
    restore_optimizer(run.optimizer, run.scheduler, arrays, meta)
    backend.set_rng_state(meta["rng"])
    if cfg.extensions != meta["train_config"].get("extensions", []):
        if world.is_root:
            write_config(run_dir, cfg)
        log(f"the run now trains {cfg.epochs} epochs (was {cfg.extensions[-1]['from']}; recorded in config.json)")
    log(f"resuming {run_dir} at {_position(state.epoch, state.batch, run.n_batches)}")
    for note in precision_notes(run.mp, model.device.kind):
        log(f"note: {note}")
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
        alone = run.world.size == 1

        def should_stop(epoch: int, batch: int) -> bool:
            # Several ranks: Ctrl-C reaches each at its own moment, so it counts only through the flag that
            # every step sums over the ranks (train_step); after_batch gives the same answer on every rank.
            return (alone and stop.requested) or (after_batch is not None and after_batch(epoch, batch))

        while run.state.epoch <= run.cfg.epochs:
            epoch = run.state.epoch
            timing = train_epoch(run, should_stop, lambda: stop.requested)
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


def epoch_batches(run: Run, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray, Part]]:
    """The training batches of `epoch` after the first `start_batch`, in the order and with the augmentation
    its seed gives: (b, x, y, part), b counting from 1, host arrays x (B, C, S, S) float32, normalised, y (B,)
    int64: this rank's `part` of the global batch (all of it in one process).

    Streamed data's x is a view of the loader's buffer, valid until the next batch is asked for.
    """
    prepared, cfg, world = run.data, run.cfg, run.world
    if isinstance(prepared, StreamData):
        n = len(prepared.train_labels)
        for b, (x, y) in enumerate(run.loader("train").epoch(epoch, start_batch), start_batch + 1):
            g = min(cfg.batch_size, n - (b - 1) * cfg.batch_size)  # the loader's slices: BackgroundLoader's doc
            yield b, x, y, Part(slice(g * world.rank // world.size, g * (world.rank + 1) // world.size), g)
        return
    batches = data.iterate_batches(
        prepared.train_images,
        prepared.train_labels,
        cfg.batch_size,
        shuffle=True,
        rng=np.random.default_rng([cfg.seed, epoch]),
        transform=prepared.train_transform(cfg.augment),
        mean=prepared.mean,
        std=prepared.std,
    )
    for b, (x, y) in enumerate(batches, 1):
        if b <= start_batch:  # made anyway: they advance the epoch's random generator
            continue
        if world.size == 1:
            yield b, x, y, whole(len(y))
        else:  # every rank makes the whole batch with the same generator and keeps its rows
            rows = distributed.shard(len(y), world.rank, world.size)
            yield b, x[rows], y[rows], Part(rows, len(y))


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


@dataclass
class StepResult:
    """One update's numbers over the whole global batch (summed over the ranks)."""

    loss: float  # the mean loss
    errors: float  # top-1 errors
    count: int  # images
    stop: bool  # some rank was asked to stop (Ctrl-C)


def _local_inputs(x: np.ndarray, y: np.ndarray, part: Part) -> tuple[np.ndarray, np.ndarray, Part]:
    """The rank's rows; an empty share (a global batch smaller than the ranks) becomes one blank row of weight
    0, because every rank must still draw the global batch's dropout masks from its generator."""
    if part.count > 0:
        return x, y, part
    return np.zeros((1, *x.shape[1:]), np.float32), np.zeros(1, np.int64), Part(slice(0, 1), part.n_global)


def train_step(run: Run, x: np.ndarray, y: np.ndarray, part: Part | None = None, stop: bool = False) -> StepResult:
    """One update on this rank's `part` of a batch: forward, loss, backward, the gradients summed over the
    ranks, optimizer step. `stop`: this rank was asked to stop (summed with the others' into the result).

    A NaN or infinite loss or gradient on any rank stops every rank (TrainingDiverged) before the update can
    spoil the weights; NumPy's own warnings about the same overflow are silenced, since the error says it better.
    In fp16 they skip the step instead (dynamic loss scaling, `_update`), until skipping stops helping.
    """
    part = whole(len(y)) if part is None else part
    alone, where = run.world.size == 1, f"at epoch {run.state.epoch}, batch {run.state.batch + 1} of {run.n_batches}"
    scaling = run.mp.precision == "fp16"  # a non-finite loss is then a skipped step
    xs, ys, rows = _local_inputs(x, y, part)
    if not alone:
        set_dropout_rows(run.model, rows)
    with _quiet_float_warnings():
        logits = run.mp(Tensor(backend.to_device(xs, run.cfg.device)))
        loss = F.cross_entropy(logits, ys)
        if not alone:  # each rank's mean times its share: the ranks' sum is the global batch's mean
            loss = loss * part.weight
        local = float(loss.item())
        if alone and not scaling and not math.isfinite(local):
            raise _diverged(run, f"the loss became {local}", where)
        run.mp.zero_grad()
        run.mp.backward(loss)
        distributed.all_reduce_gradients(run.model, average=False, world=run.world)
        errors = top_k_error(logits.numpy(), ys, 1) * part.count if part.count else 0.0
        total = sum_over_ranks([local, errors, part.count, float(stop)], run.world)
        if not scaling and not math.isfinite(total[0]):  # the same sum on every rank: all stop here
            raise _diverged(run, f"the loss became {total[0]}", where)
        _update(run, where)
    return StepResult(float(total[0]), float(total[1]), round(float(total[2])), bool(total[3] > 0))


def _update(run: Run, where: str) -> None:
    """The optimizer step after the backward pass. fp32/tf32: a NaN or infinite gradient stops the run.
    fp16: `mp.step` skips the step when one is (the gradients are the same on every rank after the all-reduce,
    so every rank skips alike); the run stops only when `skip_verdict` says skipping no longer helps."""
    if run.mp.precision != "fp16":
        if not _gradients_finite(run.model.parameters()):
            raise _diverged(run, "a gradient became NaN or infinite", where)
        run.optimizer.step()
        return
    if run.mp.step(run.optimizer):
        run.skips_in_a_row = 0
        return
    run.skips_in_a_row += 1
    verdict = skip_verdict(run.mp, run.skips_in_a_row)
    if verdict is not None:
        raise _diverged(run, verdict, where)


@dataclass
class EpochTiming:
    stopped: bool  # a stop was asked for after the last batch trained
    seconds: float
    images: int
    peak_memory: int | None = None  # bytes of device memory held at most during the epoch; None on the CPU


def bar_postfix(loss: float, lr: float, images_per_second: float, peak_memory: int | None) -> dict[str, str]:
    """What the progress bar shows after each step: loss, learning rate, images/s and, on a GPU, the most
    device memory held so far this epoch (CuPy's pool, in GiB)."""
    shown = {"loss": f"{loss:.3f}", "lr": f"{lr:.2g}", "img_s": f"{images_per_second:.0f}"}
    if peak_memory is not None:
        shown["mem"] = f"{peak_memory / 2**30:.2f}GiB"
    return shown


def _progress_bar(run: Run) -> tqdm:
    return tqdm(
        total=run.n_batches,
        initial=run.state.batch,
        desc=f"epoch {run.state.epoch}/{run.cfg.epochs}",
        unit="batch",
        disable=not run.cfg.progress or not run.world.is_root,
        dynamic_ncols=True,
        mininterval=0.2 if sys.stderr.isatty() else 15.0,  # keep logs of piped runs short
    )


def train_epoch(run: Run, should_stop: AfterBatch, requested: Callable[[], bool] = lambda: False) -> EpochTiming:
    """Train the rest of the current epoch (all of it, unless a stopped run left it halfway).

    should_stop(epoch, batch): asked after each step; requested(): whether Ctrl-C was pressed here (several
    ranks: summed over the ranks with the step's numbers, so that all stop after the same batch)."""
    run.model.train()
    state, stats = run.state, run.state.epoch_stats
    backend.reset_peak_gpu_memory(run.cfg.device)
    t0, images, peak = time.perf_counter(), 0, None
    with _progress_bar(run) as bar:
        # A stopped epoch continues after the batches it already trained on. On a GPU the next batch is copied
        # to the device while this one trains.
        batches = prefetch_to_device(epoch_batches(run, state.epoch, state.batch), run.cfg.device)
        for b, x, y, part in batches:
            step = train_step(run, x, y, part, requested())
            state.batch = b
            if math.isfinite(step.loss):  # not so only for an fp16 step that was skipped
                stats["loss_sum"] += step.loss * step.count
                stats["errors"] += step.errors
                stats["seen"] += step.count
            images += step.count
            speed, peak = images / (time.perf_counter() - t0), backend.peak_gpu_memory(run.cfg.device)
            bar.update(1)
            bar.set_postfix(bar_postfix(step.loss, run.optimizer.lr, speed, peak), refresh=False)
            if step.stop or should_stop(state.epoch, b):
                return EpochTiming(True, time.perf_counter() - t0, images, peak)
    return EpochTiming(False, time.perf_counter() - t0, images, peak)


def end_epoch(run: Run, timing: EpochTiming, log: Log) -> None:
    """Validate, step the schedule, record the metrics, save best.npz (if better) and checkpoint.npz."""
    state, stats = run.state, run.state.epoch_stats
    epoch = state.epoch
    with master_weights(run.mp):  # validation in float32, as `alexnet eval` scores the saved weights
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
        **_precision_record(run),
    }
    if timing.peak_memory is not None:
        record["peak_gpu_memory_bytes"] = timing.peak_memory
    run.scheduler.step(val.top1_error)
    improved = state.best_val_top1_error is None or val.top1_error < state.best_val_top1_error
    if improved:
        state.best_val_top1_error = val.top1_error
    state.next_epoch()
    run.metrics.append(record)
    # Written before the checkpoint, so a checkpoint never covers an epoch missing from the file (a
    # resume drops the lines of epochs beyond its checkpoint).
    if run.world.is_root:
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


def _precision_record(run: Run) -> dict[str, Any]:
    """The metrics of a precision other than fp32: the precision; for tf32 whether CuPy really uses it; for
    fp16 the steps skipped so far in the run (inf/NaN gradients) and the loss scale now."""
    mp = run.mp
    if mp.precision == "fp32":
        return {}
    if mp.precision == "tf32":
        return {"precision": "tf32", "tf32": bool(mp.tf32)}
    return {"precision": "fp16", "skipped_steps": mp.skipped_steps, "loss_scale": mp.loss_scale}


def score(run: Run, model: AlexNet, split: str, ten_crop: bool = False) -> EvalResult:
    """Loss, top-1 and top-5 error of `model` on the run's "val" (held out) or "test" split; with several ranks
    each scores its share of the images and the counts are summed."""
    prepared, world = run.data, run.world
    with _quiet_float_warnings():
        if isinstance(prepared, StreamData):
            loader = run.loader(split, ten_crop)
            result = evaluate_batches(model, loader, total=len(loader))
        else:
            if split == "val":
                images, labels = prepared.val_images, prepared.val_labels
            else:
                images, labels = prepared.test_images, prepared.test_labels
            if world.size > 1:
                rows = distributed.shard(len(labels), world.rank, world.size)
                images, labels = images[rows], labels[rows]
            result = (
                evaluate(model, images, labels, 256, prepared.mean, prepared.std, ten_crop=ten_crop)
                if len(labels)
                else EvalResult(0.0, 0.0, 0.0, 0)  # a rank with no share of a tiny split
            )
    if world.size == 1:
        return result
    return EvalResult.from_sums(sum_over_ranks(list(result.sums()), world))


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
    if run.world.is_root:
        write_text_atomically(run.run_dir / "test.json", json.dumps(record) + "\n")
    return test
