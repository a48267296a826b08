"""The settings of a training run: `TrainConfig`, the defaults left to the model and the data, and the allowed
range of every number (`BOUNDS`), which the library and the command line check the same way.

May import: the standard library. Nothing else (the CLI reads the defaults and ranges from here before it
imports NumPy-heavy modules).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

# The values of `mean` (alexnet.data.augment.MEAN_MODES: repeated here, as this module imports no NumPy).
MEAN_MODES = ("image", "channel")
# The values of `precision` (minigrad.amp.PRECISIONS, repeated for the same reason).
PRECISIONS = ("fp32", "tf32", "fp16")


@dataclass
class TrainConfig:
    """Every setting of a training run (the CLI's options). Saved as config.json in the run folder.

    None means "decided by the model or the data" (see `resolve_defaults`).
    """

    model: str = "alexnet-tiny"
    data: str | None = None
    device: str = "cpu"
    epochs: int | None = None  # None: see default_epochs
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR of the model
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # 3, not 1: on a small validation split one noisy epoch would otherwise cut the rate too early.
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
    dropout: float | None = None  # None: the model's own
    # Background processes that make the batches of an image folder or prepared store (None: all cores but
    # one; 0: made in the training process). The batches do not depend on it.
    workers: int | None = None
    # What is subtracted from colour images: "image", the training set's mean image (the paper's), or "channel",
    # its per-channel means; both then divide by the channel stds. None: "image" for colour data, "channel" for
    # Fashion-MNIST (the only choice there).
    mean: str | None = None
    # The arithmetic of the training steps: "fp32"; "tf32" (fp32 whose GPU matrix products round their inputs to
    # TF32; the same as fp32 on the CPU); "fp16" (float16 compute, float32 master weights, dynamic loss scaling).
    precision: str = "fp32"
    progress: bool = True
    # One {"epochs": new target, "from": old target, "date": ...} per `--resume --epochs` that extended the run.
    extensions: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> None:
        """Refuse a setting outside its range (`BOUNDS`) with a ValueError that names it and the range.

        Done for new runs and for what a resume changes; not for settings loaded from an existing run,
        so runs saved with other limits can still be evaluated and plotted.
        """
        for name, bounds in BOUNDS.items():
            problem = bounds.problem(getattr(self, name))
            if problem:
                raise ValueError(f"{name} {problem}")
        if self.mean not in (None, *MEAN_MODES):
            raise ValueError(f"mean must be one of {', '.join(MEAN_MODES)}, got {self.mean!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainConfig:
        """The config stored in a run's checkpoint; keys this version does not know are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass(frozen=True)
class Bounds:
    """The allowed values of one numeric setting: a whole number or a finite float, between low and high."""

    whole: bool
    low: float
    high: float = math.inf
    low_open: bool = False  # low itself is not allowed
    high_open: bool = True  # high itself is not allowed (irrelevant for infinity)

    def describe(self) -> str:
        """e.g. "a whole number >= 1", "a finite number > 0", "a number in [0, 1)"."""
        kind = "a whole number" if self.whole else "a finite number"
        if math.isinf(self.high):
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed (None always is: "not set"), else "must be ..., got ...".

        Accepts any int-like or float-like value (Python or NumPy scalar).
        """
        if value is None:
            return None
        kind = numbers.Integral if self.whole else numbers.Real
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok:
            number = float(value)
            ok = math.isfinite(number)
            ok = ok and (number > self.low if self.low_open else number >= self.low)
            ok = ok and (number < self.high if self.high_open else number <= self.high)
        return None if ok else f"must be {self.describe()}, got {value!r}"


# Every numeric setting and its range. Each one has a flag of the same name on `alexnet train`.
BOUNDS: dict[str, Bounds] = {
    "epochs": Bounds(whole=True, low=1),
    "batch_size": Bounds(whole=True, low=1),
    "lr": Bounds(whole=False, low=0, low_open=True),
    "momentum": Bounds(whole=False, low=0, high=1),
    "weight_decay": Bounds(whole=False, low=0),
    "patience": Bounds(whole=True, low=0),
    "min_lr": Bounds(whole=False, low=0),
    "seed": Bounds(whole=True, low=0),  # NumPy's generators take no negative seeds
    "val_size": Bounds(whole=True, low=1),
    "max_train_images": Bounds(whole=True, low=1),
    "groups": Bounds(whole=True, low=1),
    "width": Bounds(whole=False, low=0, low_open=True),
    "dropout": Bounds(whole=False, low=0, high=1),
    "workers": Bounds(whole=True, low=0),
}


# The paper's 0.01 for the paper's network. The tiny model's demo runs only a few epochs, too few for the
# plateau schedule to act, and learns faster at 0.05.
DEFAULT_LR = {"alexnet": 0.01, "alexnet-small": 0.01, "alexnet-tiny": 0.05}

# The tiny demo sees about this many training images: 3 epochs of the full Fashion-MNIST, 20 of the bundled
# subset, a few minutes on a laptop's CPU. Other models default to the paper's 90 epochs.
TINY_IMAGES_SEEN = 165_000


def default_epochs(model: str, n_train: int) -> int:
    """The epoch count of a run that does not set one: the paper's 90, or the tiny demo's image budget."""
    if model == "alexnet-tiny":
        return max(3, min(20, round(TINY_IMAGES_SEEN / max(n_train, 1))))
    return 90


def resolve_defaults(cfg: TrainConfig, in_channels: int, n_train: int) -> TrainConfig:
    """Fill the settings left to the model and data (None) with their values, before they are saved."""
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.model, 0.01)
    epochs = cfg.epochs if cfg.epochs is not None else default_epochs(cfg.model, n_train)
    # Crops, flips and PCA lighting fight over-fitting of ImageNet-sized colour images over ~90 epochs. On 28x28
    # Fashion-MNIST pad-and-crop slows learning more than it helps in a few epochs. So: colour data only.
    augment = cfg.augment if cfg.augment is not None else in_channels == 3
    mean = cfg.mean if cfg.mean is not None else "image" if in_channels == 3 else "channel"
    return dataclasses.replace(cfg, lr=lr, epochs=epochs, augment=augment, mean=mean)
