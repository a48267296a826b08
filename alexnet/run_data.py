"""The data of a run: which data set a model reads (Fashion-MNIST for greyscale models, an image folder for
colour ones), the validation split held out of the training images, and the normalisation statistics.

May import: `alexnet.config`, `alexnet.data`, NumPy, the standard library. Never minigrad or the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet import data
from alexnet.config import TrainConfig


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


def _load_fashion_mnist(cfg: TrainConfig, image_size: int) -> _Loaded:
    bundled = cfg.data == "bundled"
    directory = data.find_fashion_mnist(None if bundled else cfg.data, subset=bundled)
    ds = data.load_fashion_mnist(directory, subset=directory is None)
    # Absolute: a resume or eval may run from another folder.
    setting = "bundled" if directory is None else str(directory.absolute())
    if ds.train.images.shape[-1] != image_size:
        raise ValueError(f"Fashion-MNIST images are 28x28 but the model expects {image_size}x{image_size}")
    return _Loaded(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, ds.class_names, ds.source, setting)


def _load_image_folder(cfg: TrainConfig, image_size: int) -> _Loaded:
    if cfg.data is None:
        raise ValueError(
            "colour models need --data DIR: an image folder with train/<class>/*.jpg and val/<class>/*.jpg"
        )
    root = Path(cfg.data)
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise FileNotFoundError(f"{root} must contain train/ and val/ (or test/) folders of class folders")
    resize = resize_for(image_size)
    train_folder = data.ImageFolder(root / "train", resize=resize)
    test_folder = data.ImageFolder(test_dir, resize=resize)
    if test_folder.classes != train_folder.classes:
        raise ValueError(f"{test_dir} has other classes than {root / 'train'}")
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
        raise ValueError(
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
