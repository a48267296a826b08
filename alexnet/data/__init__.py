"""The data side of AlexNet, on the host (NumPy + Pillow only), one job per module.

Everything here works on NumPy arrays in main memory; the training loop moves each finished batch to the
device, so the pipeline runs the same whether the model trains on the CPU or a GPU, and it never needs
`minigrad`. Conventions: images are channel-first, `(C, H, W)`, a batch `(B, C, H, W)`; stored images are
uint8 in 0..255, converted to float32 in an explicit step (`to_unit_float`, then `normalize`); every random
choice takes an explicit `numpy.random.Generator`; labels are int64 class indices.

Modules, in the order a reader meets them:

- `idx`: IDX files, the format of MNIST and Fashion-MNIST.
- `fashion_mnist`: the full Fashion-MNIST when installed, else the subset bundled in this folder.
- `transforms`: uint8 -> float32, the paper's crops, flips and PCA lighting, 10-crop.
- `batching`: one epoch of mini-batches (`iterate_batches`, `DataLoader`).
- `image_folder`: ImageNet's folder layout, read with the paper's resize and centre crop.
- `synthetic`: generated ImageNet-style folders for tests, benchmarks and trying the pipeline.

ImageNet at full scale, never held whole in memory:

- `layout`, `decode`: the source folder's files and labels; one image decoded the paper's way.
- `prepare`, `store`: `alexnet prepare` decodes every image once into a memory-mapped store (`PreparedStore`).
- `augment`, `loader`: one image at a time; `BackgroundLoader` makes batches in worker processes (`workers`).

May import: NumPy, Pillow, the standard library. Never minigrad.
"""

from alexnet.data.batching import (
    DataLoader,
    iterate_batches,
)
from alexnet.data.decode import decode_image
from alexnet.data.fashion_mnist import (
    BUNDLED_SUBSET,
    CLASS_NAMES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    SYSTEM_FASHION_MNIST_DIR,
    Dataset,
    Split,
    find_fashion_mnist,
    load_fashion_mnist,
    load_fashion_mnist_subset,
)
from alexnet.data.idx import (
    IDX_DTYPES,
    read_idx,
    write_idx,
)
from alexnet.data.image_folder import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    load_image,
)
from alexnet.data.layout import LayoutError, list_source
from alexnet.data.loader import (
    BackgroundLoader,
    BadImageWarning,
    RawFolderSource,
    Subset,
    estimate_statistics,
    eval_batches,
)
from alexnet.data.prepare import PrepareError, PrepareReport, prepare
from alexnet.data.store import PreparedStore, Statistics, StoreError, is_store, write_store
from alexnet.data.synthetic import (
    make_fake_imagefolder,
)
from alexnet.data.transforms import (
    Transform,
    center_crop,
    channel_mean_std,
    distinct_ten_crop_views,
    eval_transform,
    normalize,
    pca_lighting,
    random_crop,
    random_horizontal_flip,
    rgb_pca,
    ten_crop,
    ten_crop_positions,
    to_unit_float,
    train_transform,
)

__all__ = [
    "BUNDLED_SUBSET",
    "CLASS_NAMES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "IDX_DTYPES",
    "IMAGE_EXTENSIONS",
    "SYSTEM_FASHION_MNIST_DIR",
    "BackgroundLoader",
    "BadImageWarning",
    "DataLoader",
    "Dataset",
    "ImageFolder",
    "LayoutError",
    "PrepareError",
    "PrepareReport",
    "PreparedStore",
    "RawFolderSource",
    "Split",
    "Statistics",
    "StoreError",
    "Subset",
    "Transform",
    "center_crop",
    "channel_mean_std",
    "decode_image",
    "distinct_ten_crop_views",
    "estimate_statistics",
    "eval_batches",
    "eval_transform",
    "find_fashion_mnist",
    "is_store",
    "iterate_batches",
    "list_source",
    "load_fashion_mnist",
    "load_fashion_mnist_subset",
    "load_image",
    "make_fake_imagefolder",
    "normalize",
    "pca_lighting",
    "prepare",
    "random_crop",
    "random_horizontal_flip",
    "read_idx",
    "rgb_pca",
    "ten_crop",
    "ten_crop_positions",
    "to_unit_float",
    "train_transform",
    "write_idx",
    "write_store",
]
