"""The data of a run: which data set a model reads (Fashion-MNIST for greyscale models, a prepared store or an
image folder for colour ones), the validation split held out of the training images, and the normalisation
statistics.

Fashion-MNIST is small and held whole in memory (`PreparedData`). Colour data is read image by image
(`StreamData`): from a store that `alexnet prepare` wrote (memory-mapped), or decoded straight from an image
folder, by the background workers of `alexnet.data.BackgroundLoader`, so memory does not grow with the data.

A `--data` value that does not fit the model is a `DataError` that says what was looked for, where, and
which `--model` or `--data` would fit (`describe_folder` tells the layouts apart).

May import: `alexnet.config`, `alexnet.data`, `alexnet.model` (for the names of the models that fit), NumPy,
the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet import data
from alexnet.config import TrainConfig
from alexnet.model import CONFIGS


@dataclass
class PreparedData:
    """The three splits as uint8 arrays (N, C, H, W) with int64 labels (N,), and how to feed them."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    mean: np.ndarray  # (C,) on the [0, 1] scale, of the training images
    std: np.ndarray  # (C,)
    crop: int  # the model's input size
    data_setting: str  # the `data` setting that loads this data again (what a run saves)
    eigvals: np.ndarray | None = None  # PCA lighting of colour data: (3,)
    eigvecs: np.ndarray | None = None  # (3, 3)

    def train_transform(self, augment: bool) -> data.Transform | None:
        """The transform of training batches: the paper's augmentation, or only the crop to the input size."""
        if not augment:
            return None if self.train_images.shape[-1] == self.crop else data.eval_transform(self.crop)
        padding = 2 if self.train_images.shape[-1] == self.crop else 0  # small images: pad-and-crop
        return data.train_transform(self.crop, self.eigvals, self.eigvecs, padding=padding)


@dataclass
class _Loaded:
    """A data set as read from disk, before the validation split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    data_setting: str
    eig: tuple[np.ndarray | None, np.ndarray | None] = (None, None)


class DataError(ValueError):
    """Data that cannot be used for this model: the message says what was looked for, where, and what fits."""


def _models(in_channels: int) -> str:
    """The --model values for greyscale (1) or colour (3) data: "alexnet-tiny", "alexnet-small or alexnet"."""
    names = sorted((c for c in CONFIGS.values() if c.in_channels == in_channels), key=lambda c: c.image_size)
    return " or ".join(c.name for c in names)


_FASHION_FILES = ", ".join(f"{name}.gz" for name in data.FASHION_MNIST_FILES.values())
_FOLDER_LAYOUT = "DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg"


def describe_folder(path: Path) -> str:
    """What a `--data` path holds: "missing", "file", "empty", "fashion-mnist" (any of its four IDX files),
    "prepared-store" (`alexnet prepare`'s output), "image-folder" (a train/ folder), or "other"."""
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        return "empty"
    names = {p.name.removesuffix(".gz") for p in entries}
    if names & set(data.FASHION_MNIST_FILES.values()):
        return "fashion-mnist"
    if data.is_store(path):
        return "prepared-store"
    if (path / "train").is_dir():
        return "image-folder"
    return "other"


def _fashion_directory_error(directory: Path, what: str) -> DataError | FileNotFoundError | None:
    """The error for a Fashion-MNIST folder that does not hold the data set (None when it looks right)."""
    kind = describe_folder(directory)
    greyscale, colour = _models(1), _models(3)
    fits = f"{greyscale} reads Fashion-MNIST: a folder of its IDX files ({_FASHION_FILES}), or --data bundled"
    if kind == "missing":
        return FileNotFoundError(f"{what} {directory} does not exist ({fits})")
    if kind in ("image-folder", "prepared-store"):
        held = "an image folder (train/<class>/...)" if kind == "image-folder" else "a prepared store (alexnet prepare)"
        return DataError(f"{what} {directory} is {held}, data for the colour models: add --model {colour}; {fits}")
    if kind in ("file", "empty", "other"):
        held = {"file": "is a file, not a folder", "empty": "is empty", "other": "holds no Fashion-MNIST files"}
        return DataError(
            f"{what} {directory} {held[kind]}: {fits}; colour models (--model {colour}) read {_FOLDER_LAYOUT}"
        )
    return None


def _load_fashion_mnist(cfg: TrainConfig, image_size: int) -> _Loaded:
    bundled = cfg.data == "bundled"
    directory = data.find_fashion_mnist(None if bundled else cfg.data, subset=bundled)
    if directory is not None:
        what = "--data" if cfg.data is not None else f"${data.FASHION_MNIST_ENV} ="
        problem = _fashion_directory_error(directory, what)
        if problem is not None:
            raise problem
    try:
        ds = data.load_fashion_mnist(directory, subset=directory is None)
    except FileNotFoundError as exc:  # some of the four files are missing
        raise DataError(f"{exc}; or use --data bundled for the subset inside the package") from exc
    # Absolute: a resume or eval may run from another folder.
    setting = "bundled" if directory is None else str(directory.absolute())
    if ds.train.images.shape[-1] != image_size:
        raise DataError(f"Fashion-MNIST images are 28x28 but the model expects {image_size}x{image_size}")
    return _Loaded(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, ds.class_names, ds.source, setting)


def _image_folder_error(cfg: TrainConfig) -> Exception | None:
    """The error for a `--data` value that is not an image folder (None when it looks like one)."""
    greyscale, colour = _models(1), _models(3)
    wanted = (
        f"colour models ({colour}) read an image folder: --data DIR with {_FOLDER_LAYOUT} (or a store that "
        "`alexnet prepare DIR OUT` wrote: --data OUT)"
    )
    if cfg.data is None:
        return DataError(f"{cfg.model} needs --data DIR: {wanted}")
    if cfg.data == "bundled":
        return DataError(f"the bundled data is greyscale Fashion-MNIST, for --model {greyscale}; {wanted}")
    root = Path(cfg.data)
    kind = describe_folder(root)
    if kind == "missing":
        return FileNotFoundError(f"--data {root} does not exist ({wanted})")
    if kind == "fashion-mnist":
        return DataError(f"--data {root} holds Fashion-MNIST (greyscale 28x28): add --model {greyscale}; {wanted}")
    if kind == "prepared-store":
        return None
    if not (root / "train").is_dir() or not any((root / d).is_dir() for d in ("val", "test")):
        held = {"file": "is a file, not a folder", "empty": "is empty"}.get(kind, "lacks train/ and val/ (or test/)")
        return DataError(f"--data {root} {held}: {wanted}")
    return None


def resize_for(image_size: int) -> int:
    """The side an image is resized and centre-cropped to before the model's crop: the paper's 256 for 224/227,
    the same 256:224 ratio for smaller inputs."""
    return 256 if image_size >= 224 else round(image_size * 256 / 224)


def _split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the training set's indices left for training (in the data's order) and those held out."""
    order = np.random.default_rng([seed, 12345]).permutation(n)
    return np.sort(order[val_size:]), order[:val_size]


def _split_validation(images: np.ndarray, labels: np.ndarray, val_size: int, seed: int) -> tuple:
    train, val = _split_indices(len(labels), val_size, seed)
    return images[train], labels[train], images[val], labels[val]


def _validation_size(cfg: TrainConfig, n: int, source: str) -> int:
    """The number of training images held out for validation (default: 5,000, or a tenth, at least one)."""
    # At least one image: the validation error drives the learning-rate schedule and picks best.npz.
    val_size = cfg.val_size if cfg.val_size is not None else max(1, min(5000, n // 10))
    if val_size >= n:
        raise DataError(
            f"--val-size {val_size:,} leaves no images to train on: {source} has {n:,} training images "
            "(use a smaller --val-size, or more data)"
        )
    return val_size


def _keep_some(cfg: TrainConfig, n: int) -> np.ndarray | None:
    """--max-train-images: a random subset of positions 0..n-1 in the data's order, not the first k (image
    folders list their images class by class); None keeps all."""
    if cfg.max_train_images is None or cfg.max_train_images >= n:
        return None
    rng = np.random.default_rng([cfg.seed, 23456])
    return np.sort(rng.choice(n, size=cfg.max_train_images, replace=False))


def prepare_data(
    cfg: TrainConfig, in_channels: int, image_size: int, statistics: data.Statistics | None = None
) -> PreparedData | StreamData:
    """The data set of a model: Fashion-MNIST for greyscale models (`PreparedData`, in memory), a prepared
    store or an image folder for colour ones (`StreamData`, read image by image).

    A validation split (default: 5,000 images, or a tenth of a small training set, at least one) is held
    out of the training images; its error drives the learning-rate schedule, as in the paper. The test split is
    only used at the end. `statistics`: a run's own normalisation statistics (a resume, eval), instead of the
    data's (a raw folder estimates them from 1,000 images).
    """
    if in_channels == 3:
        return _open_stream(cfg, image_size, statistics)
    if cfg.mean == "image":
        raise DataError("--mean image needs colour data (a prepared store or an image folder); Fashion-MNIST "
                        "uses --mean channel")  # fmt: skip
    loaded = _load_fashion_mnist(cfg, image_size)
    n = len(loaded.train_labels)
    val_size = _validation_size(cfg, n, loaded.source)
    train_x, train_y, val_x, val_y = _split_validation(loaded.train_images, loaded.train_labels, val_size, cfg.seed)
    keep = _keep_some(cfg, len(train_y))
    if keep is not None:
        train_x, train_y = train_x[keep], train_y[keep]
    mean, std = data.channel_mean_std(train_x)
    return PreparedData(
        train_x,
        train_y,
        val_x,
        val_y,
        loaded.test_images,
        loaded.test_labels,
        loaded.class_names,
        loaded.source,
        mean,
        std,
        image_size,
        loaded.data_setting,
        *loaded.eig,
    )


# ----------------------------------------------------------------------------- colour data, streamed


# The std of PCA lighting's random factors (the paper's 0.1).
LIGHTING_STD = 0.1


@dataclass
class StreamData:
    """Colour data read image by image by background workers: a prepared store or a raw image folder.

    train, val: the training images and the validation images held out of them (`alexnet.data.Subset`);
    test: the data's val/ split. Images are (3, size, size) uint8; batches come from `train_loader` and
    `eval_loader` as (B, 3, crop, crop) float32, normalised with `statistics` the way `mean` says.
    """

    train: Any
    val: Any
    test: Any
    class_names: tuple[str, ...]
    source: str
    statistics: data.Statistics
    crop: int  # the model's input size
    data_setting: str

    @property
    def train_labels(self) -> np.ndarray:
        return self.train.labels

    @property
    def val_labels(self) -> np.ndarray:
        return self.val.labels

    @property
    def test_labels(self) -> np.ndarray:
        return self.test.labels

    @property
    def mean(self) -> np.ndarray:
        """(3,) the training set's channel means (what a checkpoint records beside `config.mean`)."""
        return np.asarray(self.statistics.channel_mean, np.float32)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.statistics.channel_std, np.float32)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the stored (or decoded) images, before the crop."""
        return (self.test.size, self.test.size)

    def train_loader(self, cfg: TrainConfig, rank: int = 0, world_size: int = 1) -> data.BackgroundLoader:
        """The training batches: the paper's random crops, flips and PCA lighting (centre crops in a random
        order with augmentation off), this rank's slice of each global batch of cfg.batch_size."""
        augment = bool(cfg.augment)
        return data.BackgroundLoader(
            self.train, cfg.batch_size, mode="train" if augment else "center", crop=self.crop,
            mean=cfg.mean or "image", lighting=LIGHTING_STD if augment else 0.0, flip=augment, shuffle=True,
            drop_last=False, seed=cfg.seed, workers=cfg.workers, statistics=self.statistics, rank=rank,
            world_size=world_size,
        )  # fmt: skip

    def eval_loader(
        self,
        split: str,
        cfg: TrainConfig,
        ten_crop: bool = False,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 256,
    ) -> data.BackgroundLoader:
        """The batches of the "val" (held out) or "test" split, in order: centre crops or the paper's 10."""
        source = self.val if split == "val" else self.test
        return data.eval_batches(
            source, batch_size, crop=self.crop, ten_crop=ten_crop, mean=cfg.mean or "image", workers=cfg.workers,
            statistics=self.statistics, rank=rank, world_size=world_size,
        )  # fmt: skip


def _open_sources(cfg: TrainConfig, image_size: int) -> tuple[Any, Any, str]:
    """The training and test sources of --data (a prepared store, or an image folder decoded as it is read),
    and a description."""
    problem = _image_folder_error(cfg)
    if problem is not None:
        raise problem
    root = Path(cfg.data)  # type: ignore[arg-type]  (checked above)
    try:
        if data.is_store(root):
            train, test = data.PreparedStore(root, "train"), data.PreparedStore(root, "val")
            description = f"prepared store {root}"
        else:
            train = data.RawFolderSource(root, "train", size=resize_for(image_size))
            test = data.RawFolderSource(root, "val", size=resize_for(image_size))
            description = f"image folder {root}"
    except data.LayoutError as exc:
        raise DataError(str(exc)) from exc
    if train.size < image_size:
        raise DataError(
            f"{root} holds {train.size}x{train.size} images, smaller than the model's {image_size}x{image_size} "
            f"input: prepare it again with --size {resize_for(image_size)}"
        )
    return train, test, description


def _open_stream(cfg: TrainConfig, image_size: int, statistics: data.Statistics | None) -> StreamData:
    if cfg.mean not in (None, "image", "channel"):
        raise DataError(f"--mean must be image or channel, got {cfg.mean!r}")
    train, test, description = _open_sources(cfg, image_size)
    n = len(train)
    val_size = _validation_size(cfg, n, description)
    train_idx, val_idx = _split_indices(n, val_size, cfg.seed)
    keep = _keep_some(cfg, len(train_idx))
    if keep is not None:
        train_idx = train_idx[keep]
    if statistics is None:
        statistics = getattr(train, "statistics", None) or data.estimate_statistics(train, seed=cfg.seed)
    return StreamData(
        data.Subset(train, train_idx),
        data.Subset(train, val_idx),
        test,
        tuple(train.classes),
        description,
        statistics,
        image_size,
        str(Path(cfg.data).absolute()),  # type: ignore[arg-type]
    )
