"""Shared test fixtures: every op test runs on NumPy, on the strict CuPy stand-in, and on real CuPy.

    def test_relu(xp):                 # xp: numpy, strict_cupy, or cupy (skipped without a GPU)
        ...
    def test_tensor_to(device):        # device: "cpu", "gpu" (stand-in), "gpu" (real CuPy)
        t = Tensor([1.0, -2.0]).to(device)

`xp` and `device` share one parametrization, so a test that takes both runs three times, not nine.
Compare results on the host with `from conftest import to_host`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import strict_cupy  # found because pytest puts this folder (the conftest's, no __init__.py) on sys.path

import minigrad.backend as backend
from minigrad.kernels import dispatch

BACKEND_IDS = ("numpy", "strict", "cupy")
_PARAMS = [pytest.param("numpy"), pytest.param("strict"), pytest.param("cupy", marks=pytest.mark.gpu)]


def real_gpu_unavailable_reason() -> str | None:
    """Why real CuPy cannot run here (None when it can). The stand-in does not count as a GPU."""
    if not backend.gpu_available():
        return backend.gpu_unavailable_reason()
    if backend.Device("gpu").xp is strict_cupy:
        return "the strict CuPy stand-in is installed, not real CuPy"
    return None


@contextlib.contextmanager
def use_backend(backend_id: str) -> Iterator[tuple[ModuleType, str]]:
    """Set up one backend by id for the duration of a `with` block: yields (array module, device string)."""
    if backend_id == "numpy":
        yield np, "cpu"
    elif backend_id == "strict":
        with backend.use_gpu_module(strict_cupy):
            yield strict_cupy, "gpu"
    elif backend_id == "cupy":
        reason = real_gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        yield backend.Device("gpu").xp, "gpu"
    else:
        raise ValueError(f"unknown backend id {backend_id!r}: expected one of {BACKEND_IDS}")


@pytest.fixture(params=_PARAMS)
def backend_setup(request: pytest.FixtureRequest) -> Iterator[tuple[ModuleType, str]]:
    """(array module, device string) of the backend this test instance runs on."""
    with use_backend(request.param) as setup:
        yield setup


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> type:
    """The float dtype under test: float32 (minigrad's default) and float64 (where gradients are checked)."""
    return request.param


@pytest.fixture
def xp(backend_setup: tuple[ModuleType, str]) -> ModuleType:
    """The array module: numpy, the strict CuPy stand-in, or cupy."""
    return backend_setup[0]


@pytest.fixture
def device(backend_setup: tuple[ModuleType, str]) -> str:
    """The device string for `Tensor.to(device)`: "cpu" or "gpu"."""
    return backend_setup[1]


def spy_on(monkeypatch: pytest.MonkeyPatch, module_name: str, names: list[str]) -> list[str]:
    """Wrap functions of a module so a test can see which of them a dispatcher called (names, in order)."""
    module = importlib.import_module(module_name)  # by name: `minigrad.kernels.im2col` is also a function
    calls: list[str] = []
    for name in names:
        original = getattr(module, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return calls


def break_numba_kernel(monkeypatch: pytest.MonkeyPatch, module_name: str, kernel_name: str) -> None:
    """Make one Numba kernel (of `minigrad.kernels.<module_name>`) fail as a broken JIT would, with Numba
    otherwise usable and not yet warned about.

    monkeypatch restores the switch's state (usable, not yet warned) and the real kernel after the test.
    """

    def broken(*args: Any) -> None:
        raise RuntimeError("pretend the JIT failed")

    module = importlib.import_module(f"minigrad.kernels.{module_name}")
    monkeypatch.setattr(dispatch, "_failure", None)
    monkeypatch.setattr(dispatch, "_warned", False)
    monkeypatch.setattr(module, kernel_name, broken)
    monkeypatch.delenv("MINIGRAD_DISABLE_NUMBA", raising=False)


def to_host(a: Any) -> np.ndarray:
    """A NumPy array from a NumPy, stand-in or CuPy array (for comparing results in tests)."""
    return backend.to_numpy(a)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random numbers."""
    backend.manual_seed(0)


@pytest.fixture(autouse=True)
def _skip_gpu_tests_without_gpu(request: pytest.FixtureRequest) -> None:
    """A test marked `gpu` skips cleanly (with the reason) when no real GPU is usable."""
    if request.node.get_closest_marker("gpu") is not None:
        reason = real_gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
