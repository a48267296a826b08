"""The kernels' third path: CuPy arrays go to their GPU twin (minigrad.kernels.gpu) when numba.cuda runs on the
GPU, and to the generic version otherwise. Tested without a GPU: on the strict CuPy stand-in, with
`use_gpu_kernels_for` pretending the GPU kernels run and a fake twin that records its call."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import to_host, use_backend

import minigrad.kernels as K
from minigrad.kernels import dispatch, gpu, lrn, pooling, sgd

im2col = importlib.import_module("minigrad.kernels.im2col")  # by name: minigrad.kernels.im2col is also a function


def _pool_inputs(xp: Any, rng: np.random.Generator) -> tuple:
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    _, argmax = pooling.max_pool2d_forward_generic(x, 3, 3, 2, 0)
    dout = rng.standard_normal(argmax.shape).astype(np.float32)
    return xp.asarray(dout), xp.asarray(argmax), x.shape, 3, 3, 2, 0


def _lrn_inputs(xp: Any, rng: np.random.Generator) -> tuple:
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    _, scale = lrn.lrn_forward_generic(x, 5, 1e-4, 0.75, 2.0)
    grad = rng.standard_normal(x.shape).astype(np.float32)
    return xp.asarray(grad), xp.asarray(x), xp.asarray(scale), 5, 1e-4, 0.75


def _col2im_inputs(xp: Any, rng: np.random.Generator) -> tuple:
    cols = im2col.im2col_generic(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), 3, 3, 1, 1)
    return xp.asarray(cols), (2, 3, 5, 5), 3, 3, 1, 1


def _sgd_inputs(xp: Any, rng: np.random.Generator) -> tuple:
    w, g, v = (xp.asarray(rng.standard_normal((4, 5)).astype(np.float32)) for _ in range(3))
    return w, g, v, 0.9, 5e-4, 0.01


def _image(shape: tuple[int, ...]) -> Callable[[Any, np.random.Generator], Any]:
    return lambda xp, rng: xp.asarray(rng.standard_normal(shape).astype(np.float32))


# (module, dispatcher, GPU twin, generic twin, the dispatcher's arguments on `xp`)
CASES = {
    "max_pool2d_forward": (
        pooling, "max_pool2d_forward", "max_pool2d_forward_gpu", "max_pool2d_forward_generic",
        lambda xp, rng: (_image((2, 3, 7, 7))(xp, rng), 3, 3, 2, 0),
    ),
    "max_pool2d_backward": (
        pooling, "max_pool2d_backward", "max_pool2d_backward_gpu", "max_pool2d_backward_generic", _pool_inputs,
    ),
    "lrn_forward": (
        lrn, "lrn_forward", "lrn_forward_gpu", "lrn_forward_generic",
        lambda xp, rng: (_image((2, 6, 4, 4))(xp, rng), 5, 1e-4, 0.75, 2.0),
    ),
    "lrn_backward": (lrn, "lrn_backward", "lrn_backward_gpu", "lrn_backward_generic", _lrn_inputs),
    "im2col": (
        im2col, "im2col", "im2col_gpu", "im2col_generic", lambda xp, rng: (_image((2, 3, 5, 5))(xp, rng), 3, 3, 1, 1),
    ),
    "col2im": (im2col, "col2im", "col2im_gpu", "col2im_generic", _col2im_inputs),
    "sgd_momentum_step": (sgd, "sgd_momentum_step", "sgd_momentum_step_gpu", "sgd_momentum_step_generic", _sgd_inputs),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _gpu_kernels_not_failed(monkeypatch):
    monkeypatch.setattr(dispatch, "_gpu_failure", None)  # each test starts as a fresh process would


def pretend_gpu_kernels_run(monkeypatch) -> list[int]:
    """use_gpu_kernels_for answers True (as on a GPU with numba.cuda); returns the list of its calls."""
    asked: list[int] = []

    def yes(*arrays: Any) -> bool:
        asked.append(len(arrays))
        return True

    monkeypatch.setattr(gpu, "use_gpu_kernels_for", yes)
    return asked


def fake_twin(monkeypatch, module: Any, gpu_name: str, generic_name: str, raises: Exception | None = None) -> list:
    """Replace gpu.<gpu_name> by a function that records its arguments and answers with the generic twin."""
    calls: list = []
    generic = getattr(module, generic_name)

    def twin(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        if raises is not None:
            raise raises
        return generic(*args, **kwargs)

    monkeypatch.setattr(gpu, gpu_name, twin)
    return calls


def call(module: Any, name: str, args: tuple) -> Any:
    return getattr(module, name)(*args)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cupy_arrays_go_to_the_gpu_twin_with_the_same_arguments(case, monkeypatch):
    module, name, gpu_name, generic_name, make = CASES[case]
    with use_backend("strict") as (xp, _):
        asked = pretend_gpu_kernels_run(monkeypatch)
        calls = fake_twin(monkeypatch, module, gpu_name, generic_name)
        args = make(xp, np.random.default_rng(0))
        call(module, name, args)
    assert len(calls) == 1 and asked
    (passed, keywords) = calls[0]
    assert len(passed) == len(args) and all(a is b for a, b in zip(passed, args))  # the very same arguments
    assert all(value is None for value in keywords.values())  # only an `out` not given


@pytest.mark.parametrize("case", sorted(CASES))
def test_without_usable_gpu_kernels_cupy_arrays_take_the_generic_version(case, monkeypatch):
    module, name, gpu_name, generic_name, make = CASES[case]
    with use_backend("strict") as (xp, _):  # the stand-in's arrays are no CUDA arrays: no GPU kernels
        calls = fake_twin(monkeypatch, module, gpu_name, generic_name)
        args = make(xp, np.random.default_rng(0))
        call(module, name, args)
    assert calls == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_arrays_never_ask_about_the_gpu_kernels(case, monkeypatch):
    module, name, gpu_name, generic_name, make = CASES[case]
    asked = pretend_gpu_kernels_run(monkeypatch)
    calls = fake_twin(monkeypatch, module, gpu_name, generic_name)
    call(module, name, make(np, np.random.default_rng(0)))
    assert calls == [] and asked == []


def test_force_generic_keeps_cupy_arrays_off_the_gpu_kernels(monkeypatch):
    module, name, gpu_name, generic_name, make = CASES["max_pool2d_forward"]
    with use_backend("strict") as (xp, _):
        pretend_gpu_kernels_run(monkeypatch)
        calls = fake_twin(monkeypatch, module, gpu_name, generic_name)
        with K.force_generic():
            call(module, name, make(xp, np.random.default_rng(0)))
    assert calls == []


def test_an_unavailable_gpu_kernel_falls_back_to_generic_with_one_warning_for_the_process(monkeypatch):
    module, name, gpu_name, generic_name, make = CASES["lrn_forward"]
    with use_backend("strict") as (xp, _):
        pretend_gpu_kernels_run(monkeypatch)
        broken = gpu.GpuKernelsUnavailable("pretend NVVM is missing")
        calls = fake_twin(monkeypatch, module, gpu_name, generic_name, raises=broken)
        args = make(xp, np.random.default_rng(0))
        with pytest.warns(RuntimeWarning, match="GPU kernels are unavailable: pretend NVVM is missing"):
            y, scale = call(module, name, args)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            call(module, name, args)
        want_y, want_scale = lrn.lrn_forward_generic(*args)
        np.testing.assert_array_equal(to_host(y), to_host(want_y))
        np.testing.assert_array_equal(to_host(scale), to_host(want_scale))
    assert len(calls) == 1  # the second call went to the generic version directly


def test_a_non_contiguous_sgd_update_is_not_sent_to_the_one_pass_kernel(monkeypatch):
    with use_backend("strict") as (xp, _):
        pretend_gpu_kernels_run(monkeypatch)
        calls = fake_twin(monkeypatch, sgd, "sgd_momentum_step_gpu", "sgd_momentum_step_generic")
        w, g, v, *hyper = _sgd_inputs(xp, np.random.default_rng(0))
        sgd.sgd_momentum_step(w.T, g.T, v.T, *hyper)  # transposed: not C-contiguous
    assert calls == []
