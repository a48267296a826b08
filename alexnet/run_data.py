"""The data of a run: which data set a model reads (Fashion-MNIST for greyscale models, an image folder for
colour ones), the validation split held out of the training images, and the normalisation statistics.

A `--data` value that does not fit the model is a `DataError` that says what was looked for, where, and
which `--model` or `--data` would fit (`describe_folder` tells the layouts apart).

May import: `alexnet.config`, `alexnet.data`, `alexnet.model` (for the names of the models that fit), NumPy,
the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    "image-folder" (a train/ folder), or "other"."""
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
    if kind == "image-folder":
        return DataError(
            f"{what} {directory} is an image folder (train/<class>/...), data for the colour models: add --model "
            f"{colour}; {fits}"
        )
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
    wanted = f"colour models ({colour}) read an image folder: --data DIR with {_FOLDER_LAYOUT}"
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
    if not (root / "train").is_dir() or not any((root / d).is_dir() for d in ("val", "test")):
        held = {"file": "is a file, not a folder", "empty": "is empty"}.get(kind, "lacks train/ and val/ (or test/)")
        return DataError(f"--data {root} {held}: {wanted}")
    return None


def _load_image_folder(cfg: TrainConfig, image_size: int) -> _Loaded:
    problem = _image_folder_error(cfg)
    if problem is not None:
        raise problem
    root = Path(cfg.data)  # type: ignore[arg-type]  (checked above)
    test_dir = next(root / d for d in ("val", "test") if (root / d).is_dir())
    resize = resize_for(image_size)
    train_folder = data.ImageFolder(root / "train", resize=resize)
    test_folder = data.ImageFolder(test_dir, resize=resize)
    if test_folder.classes != train_folder.classes:
        raise DataError(f"{test_dir} has other classes than {root / 'train'}")
    train_x, train_y = train_folder.load_all()
    test_x, test_y = test_folder.load_all()
    eig = data.rgb_pca(train_x, rng=np.random.default_rng(cfg.seed))
    names = tuple(train_folder.classes)
    return _Loaded(train_x, train_y, test_x, test_y, names, f"image folder {root}", str(root.absolute()), eig)


def resize_for(image_size: int) -> int:
    """The side an image is resized and centre-cropped to before the model's crop: the paper's 256 for 224/227,
    the same 256:224 ratio for smaller inputs."""
    return 256 if image_size >= 224 else round(image_size * 256 / 224)


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
    loaded = _load_fashion_mnist(cfg, image_size) if in_channels == 1 else _load_image_folder(cfg, image_size)
    n = len(loaded.train_labels)
    # At least one image: the validation error drives the learning-rate schedule and picks best.npz.
    val_size = cfg.val_size if cfg.val_size is not None else max(1, min(5000, n // 10))
    if val_size >= n:
        raise DataError(
            f"--val-size {val_size:,} leaves no images to train on: {loaded.source} has {n:,} training images "
            "(use a smaller --val-size, or more data)"
        )
    train_x, train_y, val_x, val_y = _split_validation(loaded.train_images, loaded.train_labels, val_size, cfg.seed)
    if cfg.max_train_images is not None and cfg.max_train_images < len(train_y):
        # A random subset in the data's order, not the first k: image folders list their images class by class.
        rng = np.random.default_rng([cfg.seed, 23456])
        keep = np.sort(rng.choice(len(train_y), size=cfg.max_train_images, replace=False))
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
