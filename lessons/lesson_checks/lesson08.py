"""Checks of lesson 8 (augmentation): ten_crop and pca_lighting against alexnet.data, and the lighting's covariance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from alexnet import data
from lesson_checks import check_close, relative_error, report

# (batch shape, dtype, crop size): square and oblong crops, a crop the size of the image, uint8 and float32.
TEN_CROP_CASES = (
    ((2, 3, 12, 10), np.uint8, 6),
    ((1, 1, 8, 8), np.uint8, (4, 6)),
    ((3, 3, 7, 7), np.uint8, 7),
    ((2, 3, 9, 11), np.float32, (5, 4)),
)
COVARIANCE_DRAWS = 20_000  # images in the covariance check: sampling error about sqrt(2 / N), 1%


def check_ten_crop(ten_crop: Callable) -> None:
    """ten_crop(batch, size) equals alexnet.data.ten_crop (values, shape and dtype) on TEN_CROP_CASES."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape, dtype, size in TEN_CROP_CASES:
        batch = rng.integers(0, 256, size=shape).astype(dtype)
        yours, expected = np.asarray(ten_crop(batch, size)), data.ten_crop(batch, size)
        if yours.shape != expected.shape or yours.dtype != expected.dtype:
            line = f"ten_crop of {shape} {np.dtype(dtype).name}, size {size}: got {yours.shape} {yours.dtype}, "
            line += f"should be {expected.shape} {expected.dtype}"
            print(line)
            raise AssertionError(line)
        worst = max(worst, relative_error(yours, expected))
    report(f"ten_crop vs alexnet.data.ten_crop ({len(TEN_CROP_CASES)} batches)", worst, 1e-12)


def check_pca_lighting(pca_lighting: Callable, eigvals: np.ndarray, eigvecs: np.ndarray) -> None:
    """pca_lighting against alexnet.data.pca_lighting (same generator state), then the offsets' covariance
    against P diag((0.1 lambda)^2) P^T and its eigenvalues against (0.1 lambda)^2."""
    batch = np.random.default_rng(1).random((4, 3, 6, 5), dtype=np.float32)
    before = batch.copy()
    yours = np.asarray(pca_lighting(batch, eigvals, eigvecs, np.random.default_rng(2)))
    expected = data.pca_lighting(batch, eigvals, eigvecs, np.random.default_rng(2))
    if not np.array_equal(batch, before):
        line = "pca_lighting changed its input batch: return a new array"
        print(line)
        raise AssertionError(line)
    check_close("pca_lighting vs alexnet.data.pca_lighting", yours, expected, 1e-6)

    zeros = np.zeros((COVARIANCE_DRAWS, 3, 1, 1), dtype=np.float32)
    offsets = np.asarray(pca_lighting(zeros, eigvals, eigvecs, np.random.default_rng(3)))[:, :, 0, 0]
    covariance = np.cov(offsets.astype(np.float64), rowvar=False)
    p, lam = np.asarray(eigvecs, dtype=np.float64), 0.1 * np.asarray(eigvals, dtype=np.float64)
    check_close(
        f"covariance of {COVARIANCE_DRAWS:,} offsets vs P diag((0.1 lambda)^2) P^T",
        covariance,
        p @ np.diag(lam**2) @ p.T,
        0.05,
    )
    check_close("its eigenvalues vs (0.1 lambda)^2", np.linalg.eigvalsh(covariance)[::-1], lam**2, 0.05)
