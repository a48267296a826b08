"""Time the Numba kernels against the xp-generic ones on the paper's AlexNet shapes (NumPy, CPU).

    python benchmarks/kernels.py [--batch 32] [--repeat 7] [--no-interference]

Prints one row per kernel and layer: the best time of each version in milliseconds and the speedup.
Then it measures how idle worker threads that keep spinning slow the next kernel on a machine with few
cores: conv2's backward pair, a GEMM and then col2im (a Numba kernel on minigrad's threads), each alone and
back to back. Two ways to run the GEMM: NumPy's own `np.matmul` (OpenBLAS's worker threads, which spin for
a while after it before they sleep) and minigrad's `matmul_split` (one block per core on minigrad's
threads, the BLAS on one thread: its workers are never woken). Each runs in a fresh interpreter that
imports NumPy first, with the environment as the user set it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402  (first, as in a learner's notebook: the order no longer matters)

from minigrad import kernels as K  # noqa: E402  (after the path tweak)

# name, input shape without the batch, kernel, stride, padding
CONVS = [
    ("conv1", (3, 227, 227), 11, 4, 0),
    ("conv2", (96, 27, 27), 5, 1, 2),
    ("conv3", (256, 13, 13), 3, 1, 1),
    ("conv4/5", (384, 13, 13), 3, 1, 1),
]
POOLS = [
    ("pool1", (96, 55, 55), 3, 2, 0),
    ("pool2", (256, 27, 27), 3, 2, 0),
    ("pool5", (256, 13, 13), 3, 2, 0),
]


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs: other processes only ever add time, so the minimum is the least noisy."""
    for _ in range(3):  # compile, and let the allocator and the thread pools settle (the first calls are slower)
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def both(fn_numba: Callable[[], object], fn_generic: Callable[[], object], repeat: int) -> tuple[float, float]:
    t_numba = best_ms(fn_numba, repeat)
    with K.force_generic():
        t_generic = best_ms(fn_generic, repeat)
    return t_numba, t_generic


def conv_rows(x: np.ndarray, k: int, s: int, p: int, repeat: int) -> list[tuple[str, float, float]]:
    cols = K.im2col_numba(x, k, k, s, p)
    return [
        ("im2col", *both(lambda: K.im2col_numba(x, k, k, s, p), lambda: K.im2col_generic(x, k, k, s, p), repeat)),
        (
            "col2im",
            *both(
                lambda: K.col2im_numba(cols, x.shape, k, k, s, p),
                lambda: K.col2im_generic(cols, x.shape, k, k, s, p),
                repeat,
            ),
        ),
    ]


def pool_rows(x: np.ndarray, k: int, s: int, p: int, repeat: int) -> list[tuple[str, float, float]]:
    out, argmax = K.max_pool2d_forward_numba(x, k, k, s, p)
    forward = both(
        lambda: K.max_pool2d_forward_numba(x, k, k, s, p), lambda: K.max_pool2d_forward_generic(x, k, k, s, p), repeat
    )
    backward = both(
        lambda: K.max_pool2d_backward_numba(out, argmax, x.shape, k, k, s, p),
        lambda: K.max_pool2d_backward_generic(out, argmax, x.shape, k, k, s, p),
        repeat,
    )
    return [("forward", *forward), ("backward", *backward)]


def table(batch: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for layers, measure in ((CONVS, conv_rows), (POOLS, pool_rows)):
        for layer, shape, k, s, p in layers:
            x = rng.standard_normal((batch, *shape), dtype=np.float32)
            label = f"{shape[0]}x{shape[1]}x{shape[2]} {k}x{k}/{s} pad {p}"
            rows += [
                (f"{layer} {what}", label, t_numba, t_generic)
                for what, t_numba, t_generic in measure(x, k, s, p, repeat)
            ]

    load = os.getloadavg()[0]
    print(
        f"float32, batch {batch}, best of {repeat}, {os.cpu_count()} cores, the Numba kernels on {K.cpu_cores()}, "
        f"load average before {load:.2f}"
    )
    print(f"{'kernel':<22} {'input, kernel/stride':<28} {'numba ms':>9} {'generic ms':>11} {'speedup':>8}")
    for name, label, t_numba, t_generic in rows:
        print(f"{name:<22} {label:<28} {t_numba:9.2f} {t_generic:11.2f} {t_generic / t_numba:7.1f}x")


GEMMS = ("numpy", "minigrad")  # np.matmul on OpenBLAS's threads; K.matmul_split on minigrad's


def interference(gemm_kind: str, repeat: int) -> None:
    """conv2's backward pair, GEMM then col2im, timed alone and back to back (as in a training step).

    On as many images as conv2d works on at a time on the CPU (16 MB of columns: 2 of conv2's).
    """
    from minigrad.kernels import conv_cpu

    batch = max(1, conv_cpu.CPU_COLS_BYTES // (96 * 25 * 27 * 27 * 4))
    rng = np.random.default_rng(0)
    k, s, p = 5, 1, 2
    x_shape = (batch, 96, 27, 27)
    weights_t = np.ascontiguousarray(rng.standard_normal((256, 96 * k * k), dtype=np.float32).T)
    dout = rng.standard_normal((256, batch * 27 * 27), dtype=np.float32)  # (O, N*L), as conv2d lays it out
    dcols = np.empty((96 * k * k, batch * 27 * 27), dtype=np.float32)
    cols6 = dcols.reshape(96, k, k, batch, 27, 27)  # (C, KH, KW, N, OH, OW)

    def gemm() -> None:
        if gemm_kind == "numpy":
            np.matmul(weights_t, dout, out=dcols)
        else:
            K.matmul_split(weights_t, dout, out=dcols)

    def col2im() -> None:
        K.col2im_numba(cols6, x_shape, k, k, s, p)

    gemm_alone, col2im_alone = best_ms(gemm, repeat), best_ms(col2im, repeat)
    col2im_after, gemm_after = [], []
    for _ in range(repeat):  # alternate the orders, so both pairs see the same background load
        for first, second, times in ((gemm, col2im, col2im_after), (col2im, gemm, gemm_after)):
            first()
            start = time.perf_counter()
            second()
            times.append(1e3 * (time.perf_counter() - start))
    col2im_after_ms, gemm_after_ms = min(col2im_after), min(gemm_after)
    label = {"numpy": "np.matmul (OpenBLAS's threads)", "minigrad": "matmul_split (minigrad's threads)"}[gemm_kind]
    print(
        f"{batch} images | GEMM by {label:<34} | "
        f"col2im {col2im_alone:6.2f} ms alone, {col2im_after_ms:6.2f} ms after the GEMM "
        f"({col2im_after_ms / col2im_alone:.1f}x) | "
        f"GEMM {gemm_alone:6.2f} ms alone, {gemm_after_ms:6.2f} ms after col2im ({gemm_after_ms / gemm_alone:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-interference", action="store_true", help="skip the spinning-threads measurement")
    parser.add_argument("--interference-only", choices=GEMMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.interference_only:
        interference(args.interference_only, args.repeat)
        return
    table(args.batch, args.repeat)
    if args.no_interference or not K.numba_available():
        return
    print(f"\nload average {os.getloadavg()[0]:.2f}; {K.cpu_gemm_threads()} cores for minigrad's threads")
    for gemm_kind in GEMMS:  # a fresh interpreter each: OpenBLAS's threads are still spinning after the first
        command = [sys.executable, __file__, "--interference-only", gemm_kind, "--repeat", str(4 * args.repeat)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
