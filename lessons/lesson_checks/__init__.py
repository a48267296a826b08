"""Helpers shared by every lesson: the clock, the relative error, and the check line each exercise prints.

A check prints one line in the style of cs231n's assignments, for example

    conv dx: max relative error 3.2e-10, should be < 1e-07

and raises AssertionError carrying that same line when the learner's code is wrong. A check also fails when the
learner's code raises (a stub raises NotImplementedError): the exception goes through unchanged.

Each lesson's own checks live beside this file, in lessonNN.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "as_array",
    "check_close",
    "check_fails_on_stub",
    "fails_on",
    "relative_error",
    "report",
    "report_at_least",
    "report_below",
    "report_runtime",
    "start_clock",
]

TINY = 1e-30  # the floor under the denominator of relative_error, so two zero arrays compare as equal

_clock: dict[str, float] = {}


def start_clock() -> None:
    """Start the notebook's clock (the first code cell of every lesson calls it)."""
    _clock["start"] = time.perf_counter()


def report_runtime() -> None:
    """Print the seconds since start_clock() (the last cell of every lesson calls it)."""
    if "start" not in _clock:
        raise RuntimeError("start_clock() was never called: run the notebook from its first cell")
    seconds = time.perf_counter() - _clock["start"]
    print(f"this notebook ran in {seconds:.1f} s")


def as_array(value: Any) -> np.ndarray:
    """A float64 NumPy copy of a number, an array, or a minigrad Tensor (through its .numpy())."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.array(value, dtype=np.float64)


def relative_error(a: Any, b: Any) -> float:
    """The largest difference between a and b, relative to their largest magnitude.

    max |a - b| / max(|a| + |b|), with the denominator floored at TINY. One shared scale (not one per
    element) keeps entries that are zero up to rounding from reporting an error of 1. Shapes must match.
    """
    a, b = as_array(a), as_array(b)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a) + np.abs(b))), TINY)
    return float(np.max(np.abs(a - b))) / scale


def report(name: str, error: float, bound: float) -> float:
    """Print '<name>: max relative error <error>, should be < <bound>'; raise AssertionError unless error < bound."""
    line = f"{name}: max relative error {error:.1e}, should be < {bound:.0e}"
    print(line)
    if math.isnan(error) or not error < bound:
        raise AssertionError(line)
    return error


def check_close(name: str, got: Any, expected: Any, bound: float) -> float:
    """relative_error(got, expected), reported against bound (a shape mismatch fails with both shapes)."""
    got_array, expected_array = as_array(got), as_array(expected)
    if got_array.shape != expected_array.shape:
        line = f"{name}: shape {got_array.shape}, should be {expected_array.shape}"
        print(line)
        raise AssertionError(line)
    return report(name, relative_error(got_array, expected_array), bound)


def report_at_least(name: str, value: float, bound: float, unit: str = "") -> float:
    """Print '<name>: <value><unit>, should be >= <bound><unit>'; raise AssertionError unless value >= bound."""
    line = f"{name}: {value:.3g}{unit}, should be >= {bound:.3g}{unit}"
    print(line)
    if math.isnan(value) or not value >= bound:
        raise AssertionError(line)
    return value


def report_below(name: str, value: float, bound: float, unit: str = "") -> float:
    """Print '<name>: <value><unit>, should be < <bound><unit>'; raise AssertionError unless value < bound."""
    line = f"{name}: {value:.3g}{unit}, should be < {bound:.3g}{unit}"
    print(line)
    if math.isnan(value) or not value < bound:
        raise AssertionError(line)
    return value


def fails_on(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Exception:
    """Call fn(*args, **kwargs) and return the exception it raises; raise AssertionError when it returns."""
    try:
        fn(*args, **kwargs)
    except Exception as error:  # the caller inspects which exception it was
        return error
    name = getattr(fn, "__name__", repr(fn))
    raise AssertionError(f"{name} should have raised, but it returned")


def check_fails_on_stub(stub_source: str, check_source: str) -> None:
    """Run an exercise's unfilled stub, then its check, in the notebook's namespace: the check must fail.

    The test suite inserts this before each check cell (scripts/build_lessons.py, the "verify" form) to show
    that the check tells a filled exercise from an unfilled one. Passes when the stub or the check raises
    AssertionError or NotImplementedError; raises AssertionError when the check passes on the stub.
    """
    from IPython import get_ipython  # only here: the checks themselves work outside a notebook

    shell = get_ipython()
    namespace = shell.user_ns
    try:
        exec(compile(shell.transform_cell(stub_source), "<exercise stub>", "exec"), namespace)
        exec(compile(shell.transform_cell(check_source), "<check>", "exec"), namespace)
    except (AssertionError, NotImplementedError) as error:
        print(f"on the unfilled stub the check fails, as it should ({type(error).__name__})")
        return
    raise AssertionError("check passed on the unfilled stub")
