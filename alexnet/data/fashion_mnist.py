"""Fashion-MNIST: find the full data set (`load_fashion_mnist`) or fall back to the class-balanced subset
that ships inside the package (`load_fashion_mnist_subset`).

May import: `alexnet.data.idx`, NumPy, the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.data.idx import read_idx

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The four files of the official distribution (each may also be un-gzipped).
FASHION_MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_ENV = "ALEXNET_FASHION_MNIST"
# Where the Debian package `dataset-fashion-mnist` installs the files.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Made by scripts/make_fashion_subset.py; see alexnet/data/FASHION_MNIST_LICENSE.txt.
BUNDLED_SUBSET = Path(__file__).resolve().parent / "fashion_mnist_subset.npz"


@dataclass(frozen=True)
class Split:
    """One split of a data set.

    images: (N, C, H, W) uint8.  labels: (N,) int64 class indices.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """Train and test splits, the class names, and a line saying where the data came from."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _fashion_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four Fashion-MNIST files in `directory` (gzipped or not), and the names of those missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, name in FASHION_MNIST_FILES.items():
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{name}.gz")
    return found, missing


def _make_split(images: np.ndarray, labels: np.ndarray, what: str, num_classes: int) -> Split:
    """Check an (N, H, W) image array against its labels and give it a channel axis."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{what}: expected (N, H, W) uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: {len(images)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what}: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    # (N, H, W) -> (N, 1, H, W): grey images get the channel axis the model expects.
    return Split(np.ascontiguousarray(images[:, None]), labels.astype(np.int64))


def _load_fashion_dir(directory: Path) -> Dataset:
    files, missing = _fashion_files(directory)
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST directory {directory} lacks: {', '.join(missing)} (or un-gzipped)")
    arrays = {key: read_idx(p, expected_ndim=3 if key.endswith("images") else 1) for key, p in files.items()}
    n = len(CLASS_NAMES)
    return Dataset(
        train=_make_split(arrays["train_images"], arrays["train_labels"], f"{directory} (train)", n),
        test=_make_split(arrays["test_images"], arrays["test_labels"], f"{directory} (test)", n),
        class_names=CLASS_NAMES,
        source=f"full Fashion-MNIST from {directory}",
    )


def load_fashion_mnist_subset(path: str | os.PathLike = BUNDLED_SUBSET) -> Dataset:
    """Load the small class-balanced Fashion-MNIST subset that ships with the package.

    Its train images come from the official train split and its test images
    from the official test split (scripts/make_fashion_subset.py).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundled Fashion-MNIST subset not found: {path}")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in ("train_images", "train_labels", "test_images", "test_labels")}
    n = len(CLASS_NAMES)
    train = _make_split(arrays["train_images"], arrays["train_labels"], f"{path} (train)", n)
    test = _make_split(arrays["test_images"], arrays["test_labels"], f"{path} (test)", n)
    return Dataset(
        train=train,
        test=test,
        class_names=CLASS_NAMES,
        source=f"bundled subset ({len(train)} train / {len(test)} test images, {path.name})",
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, subset: bool = False) -> Dataset:
    """Load Fashion-MNIST: 28x28 grey images of 10 kinds of clothing.

    Where the data comes from, first match wins:

    1. `data_dir`, if given (missing files are an error that names them);
    2. the directory in the environment variable `ALEXNET_FASHION_MNIST`, if set
       (also an error if files are missing: a setting that points nowhere
       should not be silently ignored);
    3. `/usr/share/datasets/fashion-mnist` (Debian/Ubuntu package
       `dataset-fashion-mnist`), if all four files are there;
    4. the bundled subset inside the package (~1/6 of the data, class-balanced).

    `subset=True` skips 1-3 and always uses the bundled subset (quick demos and tests).
    `Dataset.source` says which one was used.

    Returns:
        a `Dataset` with `train.images` (N, 1, 28, 28) uint8, `train.labels` (N,) int64,
        the same for `test`, and `class_names` = `CLASS_NAMES`.
    """
    directory = find_fashion_mnist(data_dir, subset=subset)
    return load_fashion_mnist_subset() if directory is None else _load_fashion_dir(directory)


def find_fashion_mnist(data_dir: str | os.PathLike | None = None, *, subset: bool = False) -> Path | None:
    """The directory `load_fashion_mnist` reads (same arguments, same order of places), None for the bundled subset.

    A run saves this choice, so resuming it later reads the same data whatever the environment says then.
    """
    if subset:
        return None
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        return Path(env)
    if not _fashion_files(SYSTEM_FASHION_MNIST_DIR)[1]:
        return SYSTEM_FASHION_MNIST_DIR
    return None
