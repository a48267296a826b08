"""Checks and timing helpers of lesson 4: the learner's Numba im2col against the library's im2col, and its
speed against the Python loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad.kernels import im2col

from . import check_close, report_at_least

# (x shape, kernel, stride, pad): AlexNet's geometries in miniature (conv1's 11x11 stride 4, conv2's 5x5 pad 2)
CASES = [((2, 3, 9, 9), 3, 1, 0), ((2, 4, 10, 9), 3, 2, 1), ((1, 3, 27, 27), 11, 4, 0), ((2, 2, 8, 8), 5, 1, 2)]
SPEED_INPUT = (4, 16, 16, 16)  # N, C, H, W: a 3x3 kernel, padding 1


def best_time(fn: Callable[..., Any], *args: Any, repeat: int = 5, budget_s: float = 1.0) -> float:
    """The fastest of `repeat` calls, in seconds (fewer calls when they would take longer than budget_s)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return min(times)


def check_im2col_equal(im2col_numba: Callable) -> None:
    """im2col_numba(x, kh, kw, stride, pad) equals minigrad's im2col on several geometries, float32 and float64."""
    rng = np.random.default_rng(4)
    for shape, k, stride, pad in CASES:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dtype)
            got = im2col_numba(x, k, k, stride, pad)
            if got.dtype != dtype:
                raise AssertionError(f"im2col_numba returned {got.dtype} for {np.dtype(dtype)} input")
            check_close(
                f"im2col {k}x{k} stride {stride} pad {pad} {np.dtype(dtype)}", got, im2col(x, k, k, stride, pad), 1e-15
            )


def check_im2col_speed(im2col_numba: Callable, at_least: float = 5.0) -> None:
    """The compiled im2col_numba is at least `at_least` times faster than the same function run by the Python
    interpreter (its `.py_func`), on SPEED_INPUT (measured here)."""
    if not hasattr(im2col_numba, "py_func"):
        line = "im2col_numba is not compiled: decorate it with @numba.njit"
        print(line)
        raise AssertionError(line)
    x = np.random.default_rng(5).standard_normal(SPEED_INPUT).astype(np.float32)
    im2col_numba(x, 3, 3, 1, 1)  # compile first: the speed of the compiled code is what counts here
    interpreted = best_time(im2col_numba.py_func, x, 3, 3, 1, 1, repeat=1)
    compiled = best_time(im2col_numba, x, 3, 3, 1, 1, repeat=20)
    report_at_least(
        f"im2col_numba vs the same loops interpreted, on {SPEED_INPUT}: speed-up", interpreted / compiled, at_least, "x"
    )
