"""Data sets, transforms and batching, on the host (NumPy + Pillow only).

Everything here works on NumPy arrays in main memory. The training loop moves
each finished batch to the device; keeping the data pipeline on the host means
it runs the same whether the model trains on the CPU or a GPU, and it never
needs `minigrad`.

Conventions used throughout:

* Images are channel-first, like the model: one image is `(C, H, W)`, a batch
  is `(B, C, H, W)`.
* Stored images are `uint8` in 0..255. The conversion to `float32` is a
  separate, explicit step (`to_unit_float`, then `normalize`): divide by 255 so
  pixels lie in [0, 1], then subtract a per-channel mean and divide by a
  per-channel std, both given on that [0, 1] scale.
* Every random choice takes an explicit `numpy.random.Generator`, so a run is
  reproducible from its seed and nothing touches NumPy's global random state.
* Labels are `int64` class indices.

Contents:

* IDX files (the format of MNIST and Fashion-MNIST): `read_idx`, `write_idx`.
* Fashion-MNIST: `load_fashion_mnist` finds the full data set, or falls back
  to a small class-balanced subset that ships inside the package.
* Batching: `iterate_batches` and the `DataLoader` class around it.
* The paper's augmentations on batches: `random_crop`, `random_horizontal_flip`,
  `center_crop`, `ten_crop`, `pca_lighting`, and the statistics they need:
  `rgb_pca`, `channel_mean_std`.
* An ImageNet-style folder reader, `ImageFolder`, and `make_fake_imagefolder`,
  which writes random JPEGs in that layout for tests and benchmarks.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# A transform takes a batch and the generator to draw its random choices from,
# and returns a new batch (it never modifies its input in place).
Transform = Callable[[np.ndarray, np.random.Generator | None], np.ndarray]

# ----------------------------------------------------------------------------- IDX files

# The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
# 0x00 0x00 <dtype code> <number of dimensions>, then one big-endian uint32 per
# dimension, then the values in C order, big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _idx_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_DTYPES.items():
        if idx_dtype.newbyteorder("=") == dtype.newbyteorder("="):
            return code
    raise ValueError(f"IDX cannot store dtype {dtype}; supported: uint8, int8, int16, int32, float32, float64")


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed) into a native-endian NumPy array.

    Gzip is recognised by its magic bytes, so `train-images-idx3-ubyte` and
    `train-images-idx3-ubyte.gz` both work. The header is checked against the
    payload, and every problem raises a `ValueError` that names the file:
    bad magic number, unsupported dtype code, wrong number of dimensions,
    truncated or over-long data, a `.gz` file that is not gzip, corrupt gzip.

    Args:
        path: the file.
        expected_ndim: if given, the number of dimensions the header must declare
            (1 for label files, 3 for image files).

    Returns:
        the array, shape as in the header (e.g. `(60000, 28, 28)` uint8 images,
        `(60000,)` uint8 labels), writable and in native byte order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a well-formed IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = path.read_bytes()

    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    elif path.suffix == ".gz":
        raise ValueError(f"{path}: the name ends in .gz but the file is not gzip-compressed (no gzip magic bytes)")

    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes, need at least 4)")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08X}; an IDX file starts with two zero bytes "
            "(e.g. 0x00000801 for uint8 labels, 0x00000803 for uint8 images)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in IDX_DTYPES.items())
        raise ValueError(f"{path}: unsupported IDX dtype code 0x{code:02X} (magic 0x{magic:08X}); known: {known}")
    if ndim == 0:
        raise ValueError(f"{path}: the header declares 0 dimensions (magic 0x{magic:08X})")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimension(s), the header declares {ndim}")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise ValueError(
            f"{path}: truncated data: the header promises shape {shape} of {dtype.name} = {expected} bytes, "
            f"but only {actual} bytes follow the header"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: {actual - expected} unexpected trailing bytes after the {expected} bytes of data "
            f"that the header (shape {shape}, {dtype.name}) describes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(shape)
    # astype copies: the result is writable and in the machine's byte order.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed if `path` ends in `.gz`.

    The inverse of `read_idx`, for test fixtures and for exporting data.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _idx_code(array.dtype)
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)  # mtime=0: the same array gives the same bytes
    path.write_bytes(payload)
    return path


# ----------------------------------------------------------------------------- Fashion-MNIST

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
BUNDLED_SUBSET = Path(__file__).resolve().parent / "data" / "fashion_mnist_subset.npz"


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


# ----------------------------------------------------------------------------- uint8 -> float32


def to_unit_float(batch: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in [0, 1]. A float32 batch is taken to be on that scale already.

    batch: (B, C, H, W) uint8 or float32. Anything else (float64, ints) raises a
    TypeError rather than being converted silently.
    """
    if batch.dtype == np.uint8:
        # One pass, one float32 buffer: the ufunc casts uint8 -> float32 as it multiplies.
        return np.multiply(batch, np.float32(1.0 / 255.0), dtype=np.float32)
    if batch.dtype == np.float32:
        return batch
    raise TypeError(f"expected a uint8 or float32 batch, got {batch.dtype}; convert it explicitly first")


def normalize(
    batch: np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Per-channel (x - mean) / std on a float32 batch.

    batch: (B, C, H, W) float32 on the [0, 1] scale.  mean, std: (C,), on the same scale.
    out: where to write the result; `out=batch` works in place. By default a new array.
    """
    if batch.dtype != np.float32:
        raise TypeError(f"normalize expects float32 (use to_unit_float first), got {batch.dtype}")
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != batch.shape[1] or std.shape[1] != batch.shape[1]:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} entries for {batch.shape[1]} channels")
    out = np.subtract(batch, mean, out=out)  # a new buffer unless `out` is given...
    out /= std  # ...then divided in place: no second temporary
    return out


def _uint8_to_normalized(
    batch: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray
) -> np.ndarray:
    """`normalize(to_unit_float(batch), mean, std)` for a uint8 batch, in one float32 buffer.

    (x / 255 - mean) / std  ==  x * (1 / (255 std)) - mean / std: a multiply that
    casts uint8 -> float32 into a new buffer, then an in-place subtraction. It saves
    one full pass and one temporary over the two-step version (a third of the
    conversion time on 128 x 3 x 227 x 227 batches).
    """
    c = batch.shape[1]
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != c or std.shape[1] != c:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} entries for {c} channels")
    out = np.multiply(batch, np.float32(1.0 / 255.0) / std, dtype=np.float32)
    out -= mean / std
    return out


# ----------------------------------------------------------------------------- batching


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None,
    drop_last: bool = False,
    transform: Transform | None = None,
    mean: Sequence[float] | np.ndarray | None = None,
    std: Sequence[float] | np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of mini-batches.

    For each batch: take the samples (in a random order drawn from `rng` if
    `shuffle`), apply `transform(batch, rng)` to the raw batch, convert uint8 to
    float32 in [0, 1] (`to_unit_float`), then `normalize` with `mean`/`std` if given.

    Args:
        images: (N, C, H, W), uint8 (or float32 already on the [0, 1] scale).
        labels: (N,) integer class indices.
        batch_size: samples per batch; the last batch is smaller unless `drop_last`.
        shuffle: visit the samples in a random permutation drawn from `rng`.
        rng: the only source of randomness (shuffling and the transform's draws).
        drop_last: skip the final incomplete batch (keeps every batch the same shape).
        transform: called as `transform(batch, rng)`, e.g. crops and flips on uint8;
            it may return uint8 or float32 in [0, 1] (`pca_lighting` needs float).
            It gets a fresh copy of the samples, so it may modify that in place.
        mean, std: per-channel statistics on the [0, 1] scale (`channel_mean_std`).

    Yields:
        x: (B, C', H', W') float32, contiguous.  y: (B,) int64.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle and rng is None:
        raise ValueError("shuffle=True needs an rng (numpy.random.Generator)")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        # Fancy indexing copies only this batch out of the (possibly huge) uint8 array.
        x = images[idx]
        y = np.asarray(labels[idx], dtype=np.int64)
        if transform is not None:
            x = transform(x, rng)
        if mean is None:
            x = to_unit_float(x)
        elif x.dtype == np.uint8:
            x = _uint8_to_normalized(x, mean, std)
        else:
            # `x` came from the transform; unless it is a view of the data set itself
            # (an identity transform on float32 images), this batch owns it and
            # normalizing in place saves allocating (and page-faulting) another buffer.
            x = normalize(x, mean, std, out=None if np.may_share_memory(x, images) else x)
        yield np.ascontiguousarray(x), y


class DataLoader:
    """`iterate_batches` as a re-iterable object: every `for` loop is one new epoch.

    The same `rng` is used across epochs, so epoch 2 gets a different order than
    epoch 1, and the whole sequence is reproducible from the generator's seed.
    `len(loader)` is the number of batches per epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
        transform: Transform | None = None,
        mean: Sequence[float] | np.ndarray | None = None,
        std: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.rng, self.drop_last = batch_size, shuffle, rng, drop_last
        self.transform, self.mean, self.std = transform, mean, std

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iterate_batches(
            self.images,
            self.labels,
            self.batch_size,
            self.shuffle,
            self.rng,
            drop_last=self.drop_last,
            transform=self.transform,
            mean=self.mean,
            std=self.std,
        )


# ----------------------------------------------------------------------------- transforms on batches


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))


def _check_crop(batch: np.ndarray, h: int, w: int) -> None:
    if batch.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {batch.shape}")
    if not (0 < h <= batch.shape[2] and 0 < w <= batch.shape[3]):
        raise ValueError(f"cannot crop {h}x{w} out of {batch.shape[2]}x{batch.shape[3]} images")


def random_crop(
    batch: np.ndarray, size: int | tuple[int, int], rng: np.random.Generator, padding: int = 0
) -> np.ndarray:
    """A random `size` crop from each image, each at its own position (the paper's 224/227 crops).

    batch: (B, C, H, W), any dtype.  size: s or (h, w).  padding: zeros added on
    every side first (the usual augmentation for 28x28 or 32x32 images).
    Returns (B, C, h, w), same dtype.
    """
    h, w = _pair(size)
    if padding:
        batch = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    _check_crop(batch, h, w)
    b, _, height, width = batch.shape
    tops = rng.integers(0, height - h + 1, size=b)
    lefts = rng.integers(0, width - w + 1, size=b)
    out = np.empty((b, batch.shape[1], h, w), dtype=batch.dtype)
    # One slice copy per image (a loop over B, not over pixels). Measured on a
    # (128, 3, 256, 256) uint8 batch: 3.5 ms, 4x faster than gathering all crops with
    # one fancy index into a sliding_window_view, which copies element by element.
    for i, (top, left) in enumerate(zip(tops, lefts)):
        out[i] = batch[i, :, top : top + h, left : left + w]
    return out


def random_horizontal_flip(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability `p` (the paper's horizontal reflections).

    batch: (B, C, H, W).  Returns a new array of the same shape and dtype.
    """
    flip = rng.random(len(batch)) < p
    out = batch.copy()
    out[flip] = batch[flip, ..., ::-1]  # reverse the W axis of the chosen images only
    return out


def center_crop(batch: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The central `size` crop of each image (evaluation on a single crop).

    batch: (B, C, H, W).  Returns (B, C, h, w), a contiguous copy.
    """
    h, w = _pair(size)
    _check_crop(batch, h, w)
    top, left = (batch.shape[2] - h) // 2, (batch.shape[3] - w) // 2
    return np.ascontiguousarray(batch[:, :, top : top + h, left : left + w])


def ten_crop(batch: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The paper's test-time augmentation: 5 crops and their mirror images.

    The order is: top-left, top-right, bottom-left, bottom-right, centre, then
    the same five flipped left-right. The model's softmax outputs over the 10
    crops are averaged to get the prediction.

    batch: (B, C, H, W).  Returns (10, B, C, h, w), same dtype.
    """
    h, w = _pair(size)
    _check_crop(batch, h, w)
    height, width = batch.shape[2:]
    top, left = (height - h) // 2, (width - w) // 2
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
    out = np.empty((10, *batch.shape[:2], h, w), dtype=batch.dtype)
    for i, (y, x) in enumerate(corners):
        out[i] = batch[:, :, y : y + h, x : x + w]
    out[5:] = out[:5, ..., ::-1]
    return out


def pca_lighting(
    batch: np.ndarray,
    eigvals: np.ndarray,
    eigvecs: np.ndarray,
    rng: np.random.Generator,
    std: float = 0.1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's colour augmentation ("PCA lighting", Krizhevsky et al. 2012, section 4.1).

    To every pixel of image b add the same RGB offset  sum_i alpha_bi * lambda_i * p_i,
    where (lambda_i, p_i) are the eigenvalues/eigenvectors of the 3x3 covariance of
    the training set's RGB pixels and alpha_bi ~ N(0, std) is drawn once per image.
    It shifts the colour and brightness of the lighting along the directions in which
    natural pixel colours actually vary.

    batch: (B, 3, H, W) float32 on the same scale the eigen-pairs were computed on
        ([0, 1] for `rgb_pca`). uint8 is refused: the offsets are fractions of a level.
    eigvals: (3,).  eigvecs: (3, 3) with the eigenvectors p_i as columns.
    out: where to write the result; `out=batch` works in place. By default a new array.
    Returns the float32 batch with the offsets added (not clipped, as in the paper).
    """
    if batch.dtype != np.float32:
        raise TypeError(f"pca_lighting needs a float32 batch (see to_unit_float), got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"pca_lighting needs (B, 3, H, W) RGB batches, got {batch.shape}")
    eigvals = np.asarray(eigvals, dtype=np.float32).reshape(3)
    eigvecs = np.asarray(eigvecs, dtype=np.float32).reshape(3, 3)
    alpha = rng.standard_normal((len(batch), 3), dtype=np.float32) * np.float32(std)  # (B, 3)
    # offset[b] = sum_i alpha[b, i] * eigvals[i] * eigvecs[:, i]  ==  (alpha * eigvals) @ eigvecs.T
    offset = (alpha * eigvals) @ eigvecs.T  # (B, 3)
    # Broadcast over H and W: the same offset for every pixel of an image.
    return np.add(batch, offset[:, :, None, None], out=out)


def _unit_float_chunks(images: np.ndarray, pixels_per_chunk: int = 1 << 21) -> Iterator[np.ndarray]:
    """Yield (pixels, C) float64 arrays on the [0, 1] scale, a few images at a time.

    Statistics are accumulated in float64 (sums of millions of values) but only
    over small chunks, so a large uint8 data set is never converted whole.
    """
    n, c = images.shape[:2]
    per_image = max(1, math.prod(images.shape[2:]))
    step = max(1, pixels_per_chunk // per_image)
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    for start in range(0, n, step):
        chunk = images[start : start + step]
        yield np.moveaxis(chunk, 1, -1).reshape(-1, c).astype(np.float64) * scale


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all pixels, on the [0, 1] scale, for `normalize`.

    images: (N, C, H, W) uint8 (divided by 255) or float (taken as is).
    Returns mean (C,), std (C,) float32 (population std).
    """
    c = images.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for px in _unit_float_chunks(images):
        total += px.sum(axis=0)
        sq += np.einsum("pc,pc->c", px, px)
        count += len(px)
    mean = total / count
    var = np.maximum(sq / count - mean**2, 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def rgb_pca(
    images: np.ndarray, rng: np.random.Generator | None = None, max_pixels: int = 1_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-pairs of the 3x3 covariance of RGB pixel values, for `pca_lighting`.

    images: (N, 3, H, W) uint8 (divided by 255) or float (taken as on the [0, 1] scale).
    rng: if given and there are more than `max_pixels` pixels, estimate from
        `max_pixels` pixels sampled with it (fast, and plenty for a 3x3 matrix).
        Without an rng every pixel is used, streamed in chunks.

    Returns:
        eigvals (3,) float32, largest first; eigvecs (3, 3) float32 whose columns are
        the unit eigenvectors (each one's largest component made positive, so the
        result does not depend on the sign the solver happens to pick).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"rgb_pca needs (N, 3, H, W) RGB images, got {images.shape}")
    n, _, h, w = images.shape
    if rng is not None and n * h * w > max_pixels:
        # Draw random (image, row, column) triples; the gather gives (max_pixels, 3).
        ii, yy, xx = (rng.integers(0, k, size=max_pixels) for k in (n, h, w))
        scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
        chunks: Iterator[np.ndarray] | list[np.ndarray] = [images[ii, :, yy, xx].astype(np.float64) * scale]
    else:
        chunks = _unit_float_chunks(images)
    # Covariance from running sums: cov = (sum x x^T - count * mean mean^T) / (count - 1),
    # the same normalisation as np.cov.
    total, outer, count = np.zeros(3), np.zeros((3, 3)), 0
    for px in chunks:
        total += px.sum(axis=0)
        outer += px.T @ px
        count += len(px)
    if count < 2:
        raise ValueError("rgb_pca needs at least 2 pixels")
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending, for a symmetric matrix
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    signs = np.sign(eigvecs[np.abs(eigvecs).argmax(axis=0), np.arange(3)])
    eigvecs = eigvecs * np.where(signs == 0, 1.0, signs)
    return np.maximum(eigvals, 0.0).astype(np.float32), eigvecs.astype(np.float32)


def train_transform(
    crop_size: int,
    eigvals: np.ndarray | None = None,
    eigvecs: np.ndarray | None = None,
    pca_std: float = 0.1,
    flip: bool = True,
    padding: int = 0,
) -> Transform:
    """The paper's training augmentation as one transform for `iterate_batches`.

    Random crop and (optionally) horizontal flip on the uint8 batch, which is cheap,
    then to float32 in [0, 1] and, if eigen-pairs are given, PCA lighting.
    """

    def transform(batch: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None:
            raise ValueError("train_transform needs an rng")
        batch = random_crop(batch, crop_size, rng, padding=padding)
        if flip:
            batch = random_horizontal_flip(batch, rng)
        if eigvals is not None and eigvecs is not None:
            batch = to_unit_float(batch)  # a new float32 buffer, so lighting can be added in place
            batch = pca_lighting(batch, eigvals, eigvecs, rng, std=pca_std, out=batch)
        return batch

    return transform


def eval_transform(crop_size: int) -> Transform:
    """Single centre crop, for evaluation batches (`ten_crop` is the 10-view alternative)."""

    def transform(batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return center_crop(batch, crop_size)

    return transform


# ----------------------------------------------------------------------------- ImageNet-style folders

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def load_image(path: str | os.PathLike, resize: int = 256) -> np.ndarray:
    """Read an image the paper's way: RGB, shorter side scaled to `resize`, centre `resize` x `resize` crop.

    Returns (3, resize, resize) uint8. A file Pillow cannot decode is a ValueError that names it.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")  # greyscale, palette, RGBA and CMYK files all become RGB
            w, h = img.size
            scale = resize / min(w, h)
            # round() and max(): the shorter side becomes exactly `resize`, the longer never falls below it.
            new_w, new_h = max(resize, round(w * scale)), max(resize, round(h * scale))
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)  # Pillow antialiases when shrinking
            left, top = (new_w - resize) // 2, (new_h - resize) // 2
            img = img.crop((left, top, left + resize, top + resize))
            hwc = np.asarray(img, dtype=np.uint8)  # (H, W, 3): Pillow's layout
    except FileNotFoundError:
        raise
    except OSError as exc:  # not an image, truncated, unsupported or unreadable: one folder entry to fix
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))  # -> (3, H, W)


class ImageFolder:
    """Images in ImageNet's layout: `root/<class name>/<image>.JPEG` (also .jpg, .png).

    Class names are the sub-directory names, sorted; a class's index is its
    position in that order (for ImageNet, sorted WordNet ids give the usual
    0..999 numbering). `dataset[i]` loads one image as (3, resize, resize) uint8.
    """

    def __init__(self, root: str | os.PathLike, resize: int = 256) -> None:
        self.root = Path(root)
        self.resize = resize
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.classes: list[str] = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-directories (expected root/<class>/<image>.JPEG)")
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = [
            (p, i)
            for i, name in enumerate(self.classes)
            for p in sorted((self.root / name).iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise ValueError(f"{self.root} contains no {'/'.join(IMAGE_EXTENSIONS)} images in its class directories")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return load_image(path, self.resize), label

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64, without loading any image."""
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Load every image: (N, 3, resize, resize) uint8 and (N,) int64 labels.

        For small folders only: 1000 images at 256x256 take 197 MB.
        """
        images = np.empty((len(self), 3, self.resize, self.resize), dtype=np.uint8)
        for i in range(len(self)):
            images[i] = self[i][0]
        return images, self.labels


def make_fake_imagefolder(
    root: str | os.PathLike,
    classes: int | Sequence[str] = 4,
    per_class: int = 8,
    size: int | tuple[int, int] | Sequence[tuple[int, int]] = (320, 240),
    seed: int = 0,
    ext: str = ".JPEG",
) -> Path:
    """Write random images in ImageNet's layout, `root/<class>/<class>_<i>.JPEG`; returns `root`.

    Generated data for tests and benchmarks of the full-size pipeline (no real
    ImageNet is available here). Each class has its own random base colour, with
    a smooth gradient and noise on top, so the classes are learnable but not trivial.

    classes: a number of classes (named like WordNet ids, n00000000, n00000001, ...) or the names.
    size: (width, height) of every image, an int for squares, or a list of (width, height)
        used in turn, to get several aspect ratios.
    ext: ".JPEG", ".jpg" (JPEG, quality 90) or ".png".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"n{i:08d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    if isinstance(size, int | np.integer):
        sizes = [(int(size), int(size))]
    elif len(size) == 2 and all(isinstance(s, int | np.integer) for s in size):
        sizes = [(int(size[0]), int(size[1]))]
    else:
        sizes = [(int(w), int(h)) for w, h in size]
    fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}[ext.lower()]
    k = 0
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(40, 215, size=3)  # this class's colour
        for i in range(per_class):
            w, h = sizes[k % len(sizes)]
            k += 1
            # A random-direction gradient (per image) plus noise around the class colour.
            gy, gx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
            direction = rng.normal(size=2)
            ramp = (direction[0] * gy + direction[1] * gx)[..., None] * 25.0
            pixels = base + ramp + rng.normal(0.0, 20.0, size=(h, w, 3))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            img.save(folder / f"{name}_{i:04d}{ext}", format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return root
