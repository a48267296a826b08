"""Make the small Fashion-MNIST subset that ships inside the package.

    python scripts/make_fashion_subset.py [--source DIR] [--train-per-class 900] [--test-per-class 200]

It picks, with a fixed seed, the same number of images of every class: train
images from the official TRAIN split, test images from the official TEST split
(so the bundled test set is never seen in training, as with the full data).
The result is written with np.savez_compressed to
alexnet/data/fashion_mnist_subset.npz, with these arrays:

    train_images (N, 28, 28) uint8    train_labels (N,) uint8    train_indices (N,) uint16
    test_images  (M, 28, 28) uint8    test_labels  (M,) uint8    test_indices  (M,) uint16
    seed () int64

`*_indices` are the positions in the official files, sorted, so every image can be
traced back. 900 + 200 per class keeps the file under 5 MB (1000 + 200 gave 5.3 MB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from alexnet.data import (  # noqa: E402  (needs the sys.path line above)
    BUNDLED_SUBSET,
    CLASS_NAMES,
    FASHION_MNIST_FILES,
    SYSTEM_FASHION_MNIST_DIR,
    read_idx,
)

SEED = 20120101  # fixed: the subset must be the same every time it is rebuilt


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` distinct indices of every class, drawn at random, returned sorted."""
    chosen = []
    for c in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} images, {per_class} requested")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def read_split(source: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    def path(key: str) -> Path:
        name = FASHION_MNIST_FILES[f"{kind}_{key}"]
        gz = source / f"{name}.gz"
        return gz if gz.is_file() else source / name

    return read_idx(path("images"), expected_ndim=3), read_idx(path("labels"), expected_ndim=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SYSTEM_FASHION_MNIST_DIR, help="folder with the IDX files")
    parser.add_argument("--train-per-class", type=int, default=900)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=BUNDLED_SUBSET)
    args = parser.parse_args(argv)

    train_images, train_labels = read_split(args.source, "train")
    test_images, test_labels = read_split(args.source, "test")
    rng = np.random.default_rng(args.seed)
    train_idx = balanced_indices(train_labels, args.train_per_class, rng)
    test_idx = balanced_indices(test_labels, args.test_per_class, rng)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=train_images[train_idx],
        train_labels=train_labels[train_idx].astype(np.uint8),
        train_indices=train_idx.astype(np.uint16),  # < 65536: the official train split has 60000
        test_images=test_images[test_idx],
        test_labels=test_labels[test_idx].astype(np.uint8),
        test_indices=test_idx.astype(np.uint16),
        seed=np.int64(args.seed),
    )
    size = args.out.stat().st_size
    print(
        f"wrote {args.out}: {len(train_idx)} train ({args.train_per_class}/class) + "
        f"{len(test_idx)} test ({args.test_per_class}/class) images, seed {args.seed}, "
        f"{size / 1e6:.2f} MB ({size / 2**20:.2f} MiB)"
    )


if __name__ == "__main__":
    main()
