"""Checks of lesson 10 (CPU to GPU): an xp-generic op on NumPy and on the strict CuPy stand-in."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

import minigrad as mg
from lesson_checks import check_close, report
from minigrad import backend

TESTS = Path(__file__).resolve().parents[2] / "tests"  # where tests/strict_cupy.py lives


def strict_cupy_module() -> ModuleType:
    """The tests' strict CuPy stand-in (tests/strict_cupy.py), imported with the tests folder on sys.path."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    return importlib.import_module("strict_cupy")


def _inputs(dtype: str) -> np.ndarray:
    """Values from -40 to 40: e^40 overflows float32, so the naive ln(1 + e^x) would give inf there."""
    values = np.random.default_rng(0).standard_normal((4, 6)) * 3
    values[0, :3] = (-40.0, 40.0, 0.0)
    return values.astype(dtype)


def _softplus_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softplus and its derivative in float64 on the host: logaddexp(0, x) and 1 / (1 + e^-x)."""
    x = x.astype(np.float64)
    return np.logaddexp(0.0, x), 0.5 * (1.0 + np.tanh(0.5 * x))


def _run(op: type, x: np.ndarray, grad: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Forward and backward of op on `device`: (output on the host, input gradient on the host, output data)."""
    xt = mg.tensor(x, dtype=x.dtype, requires_grad=True).to(device)  # a leaf on the device
    y = op.apply(xt)
    y.backward(mg.tensor(grad, dtype=grad.dtype).to(device))
    return y.to("cpu").numpy(), xt.grad.to("cpu").numpy(), y.data


def check_softplus(op: type) -> None:
    """op (a Function) against float64 references on NumPy and on the strict stand-in, float32 and float64, and
    against finite differences; the outputs stay on the device and keep the input's dtype."""
    strict_cupy = strict_cupy_module()
    for dtype, bound in (("float64", 1e-12), ("float32", 1e-6)):
        x = _inputs(dtype)
        grad = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
        value, slope = _softplus_reference(x)
        for name, module in (("numpy", None), ("strict_cupy", strict_cupy)):
            if module is None:
                y, dx, data = _run(op, x, grad, "cpu")
                expected_type = np.ndarray
            else:
                with backend.use_gpu_module(module):
                    y, dx, data = _run(op, x, grad, "gpu")
                expected_type = module.ndarray
            if not isinstance(data, expected_type) or y.dtype != x.dtype:
                line = f"{name}, {dtype}: output {type(data).__name__} {y.dtype}, "
                line += f"should be {expected_type.__name__} {dtype}"
                print(line)
                raise AssertionError(line)
            check_close(f"forward on {name}, {dtype}", y, value, bound)
            check_close(f"backward on {name}, {dtype}", dx, grad * slope, bound)
    x64 = mg.tensor(_inputs("float64")[1:], dtype="float64", requires_grad=True)
    result = mg.gradcheck(op.apply, x64)
    error = result.max_rel_error if result.passed else float("nan")
    report("backward vs finite differences (float64)", error, 1e-5)
