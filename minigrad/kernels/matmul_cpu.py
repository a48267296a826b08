"""Matrix products tuned for the CPU: a @ b in blocks, one block per core, each on a one-thread BLAS.

The plain version is `a @ b`. `matmul2d(a, b)` gives the same product; for large NumPy float products it
runs `matmul_split`, which cuts the product into one block per core and runs the blocks on minigrad's own
threads (`cpu_threads.split_over_cores`), so that the BLAS's worker threads are never woken
(cpu_threads.py says why that matters). `F.linear` and `F.matmul` call it; conv2d splits its products
itself (conv_cpu.py).

Where the cut goes. (M, K) @ (K, N) is cut either by rows (each core: a block of a's rows times ALL of b)
or by columns (ALL of a times a block of b's columns). Each core reads the whole of the operand that is
not cut, so the cut goes through the larger operand, which is then read once in all. For a linear layer
with a small batch, x (32, 9216) @ w.T (9216, 4096), the weight is the larger: each core takes a block of
the output features, not of the batch.

Imports: NumPy, and `cpu_threads` and `dispatch` from this package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cpu_threads import split_over_cores
from .dispatch import generic_forced

BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# OpenBLAS runs products with fewer multiply-adds (M*N*K) than this on the calling thread already.
SPLIT_MIN_MULTIPLY_ADDS = 1 << 19


def matmul_split(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, workers: int | None = None) -> Any:
    """a (M, K) @ b (K, N) -> (M, N), in one block of rows or columns per core; `out` receives it if given.

    Rows when a is the larger operand (each core reads all of b), else columns (each core reads all of a).
    `workers`: how many blocks (default: cpu_gemm_threads()).
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    if a.size >= b.size:

        def rows(lo: int, hi: int) -> None:
            np.matmul(a[lo:hi], b, out=out[lo:hi])

        split_over_cores(a.shape[0], rows, workers)
    else:

        def columns(lo: int, hi: int) -> None:
            np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

        split_over_cores(b.shape[1], columns, workers)
    return out


def matmul2d(a: Any, b: Any) -> Any:
    """a (M, K) @ b (K, N) -> (M, N) for 2-D arrays on any xp: `a @ b`, or `matmul_split` for NumPy float32/float64
    operands of one dtype with at least SPLIT_MIN_MULTIPLY_ADDS multiply-adds (not inside `force_generic()`)."""
    numpy_floats = all(isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype in BLAS_DTYPES for v in (a, b))
    if not numpy_floats or a.dtype != b.dtype or a.shape[1] != b.shape[0] or generic_forced():
        return a @ b
    if a.shape[0] * a.shape[1] * b.shape[1] < SPLIT_MIN_MULTIPLY_ADDS:
        return a @ b
    return matmul_split(a, b)
