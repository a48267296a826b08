"""Specification of the strict CuPy stand-in: what it refuses, what it allows, and that it matches CuPy."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import strict_cupy as sc
from conftest import to_host

import minigrad.backend as backend


@pytest.fixture
def dev() -> sc.ndarray:
    """A 2x3 float32 device array [[0, 1, 2], [3, 4, 5]]."""
    return sc.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))


# ----------------------------------------------------------------------------- what it refuses

HOST_MIXES = {
    "np.asarray(dev)": lambda d, h: np.asarray(d),
    "np.array([dev])": lambda d, h: np.array([d]),
    "np.exp(dev)": lambda d, h: np.exp(d),
    "np.sum(dev)": lambda d, h: np.sum(d),
    "np.concatenate([dev, dev])": lambda d, h: np.concatenate([d, d]),
    "dev + host": lambda d, h: d + h,
    "host + dev": lambda d, h: h + d,
    "dev * host_0d": lambda d, h: d * np.array(2.0),
    "dev < host": lambda d, h: d < h,
    "host < dev": lambda d, h: h < d,
    "np_scalar < dev": lambda d, h: np.float32(2) < d,
    "dev += host": lambda d, h: d.__iadd__(h),
    "host += dev": lambda d, h: h.__iadd__(d),
    "dev @ host": lambda d, h: d @ h.T,
    "dev[host_index]": lambda d, h: d[np.array([0, 1])],
    "dev[host_mask]": lambda d, h: d[np.array([True, False])],
    "dev[host_index] = 1": lambda d, h: d.__setitem__(np.array([0]), 1.0),
    "dev[0] = host": lambda d, h: d.__setitem__(0, h[0]),
    "host[dev_index]": lambda d, h: h[sc.asarray([0])],
    "xp.concatenate([dev, host])": lambda d, h: sc.concatenate([d, h]),
    "xp.exp(host)": lambda d, h: sc.exp(h),
    "xp.exp(dev, out=host)": lambda d, h: sc.exp(d, out=h),
    "xp.where(dev > 0, host, 0)": lambda d, h: sc.where(d > 0, h, 0.0),
    "xp.exp([1.0, 2.0])": lambda d, h: sc.exp([1.0, 2.0]),
    "xp.sum([1.0, 2.0])": lambda d, h: sc.sum([1.0, 2.0]),
    "xp.concatenate([[1.0], [2.0]])": lambda d, h: sc.concatenate([[1.0], [2.0]]),
    "xp.where([True, False], [1.0, 2.0], 0)": lambda d, h: sc.where([True, False], [1.0, 2.0], 0.0),
    "dev.dot(host)": lambda d, h: d.dot(h.T),
    "float(1-d)": lambda d, h: float(d[0]),
    "range(dev_0d)": lambda d, h: range(sc.asarray(3)),
}


@pytest.mark.parametrize("name", list(HOST_MIXES))
def test_implicit_conversions_and_host_device_mixes_raise_type_error(dev: sc.ndarray, name: str) -> None:
    host = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        HOST_MIXES[name](dev, host)


def test_set_copies_only_an_array_of_the_same_shape_and_dtype(dev: sc.ndarray) -> None:
    dev.set(np.full(dev.shape, 2.0, dev.dtype))
    np.testing.assert_array_equal(dev.get(), 2.0)
    with pytest.raises(ValueError, match="neither broadcasts nor casts"):
        dev.set(np.ones(dev.shape, np.float64))
    with pytest.raises(ValueError, match="neither broadcasts nor casts"):
        dev.set(np.ones(dev.shape[1:], dev.dtype))


def test_error_messages_say_what_went_wrong(dev: sc.ndarray) -> None:
    with pytest.raises(TypeError, match=r"implicit conversion.*\.get\(\) or xp\.asnumpy\(\)"):
        np.asarray(dev)
    with pytest.raises(TypeError, match=r"numpy\.exp.*xp\.exp"):
        np.exp(dev)
    with pytest.raises(TypeError, match=r"numpy\.sum\(\).*xp\.sum\(\)"):
        np.sum(dev)
    with pytest.raises(TypeError, match=r"operator \+: a host numpy\.ndarray .* \(strict_cupy\.ndarray\)"):
        dev + np.ones(3)
    with pytest.raises(TypeError, match=r"strict_cupy\.concatenate\(\): a host numpy\.ndarray"):
        sc.concatenate([dev, np.ones((1, 3))])


def test_only_cupy_names_are_reachable() -> None:
    for name in ("errstate", "seterr", "asmatrix", "float128", "not_a_function", "fuse"):
        with pytest.raises(AttributeError, match="has no attribute"):
            getattr(sc, name)
    assert not hasattr(sc.add, "at")  # no np.add.at-style scatter
    with pytest.raises(AttributeError, match=r"add\.at"):
        sc.add.at  # noqa: B018


def test_random_generator_has_only_what_cupy_has() -> None:
    g = sc.random.default_rng(0)
    for name in ("normal", "permutation", "choice", "shuffle"):
        assert not hasattr(g, name)
    with pytest.raises(AttributeError, match="standard_normal"):
        g.normal  # noqa: B018
    with pytest.raises(TypeError):
        g.random(3, dtype=np.float16)  # NumPy's generator (and so the stand-in) only draws float32/float64


# ----------------------------------------------------------------------------- what it allows


def test_scalars_mix_with_device_arrays(dev: sc.ndarray) -> None:
    for result in (dev + 2.0, 2.0 * dev, dev * np.float32(2), np.float32(2) * dev, dev**2, 1 - dev, dev > 1.5):
        assert isinstance(result, sc.ndarray)
    assert (dev + 2.0).dtype == np.float32  # Python scalars do not promote (NEP 50, as CuPy)
    np.testing.assert_array_equal((np.float32(2) * dev).get(), 2 * np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal((-dev).get(), -abs(dev).get())
    np.testing.assert_array_equal((dev @ dev.T).get(), dev.get() @ dev.get().T)


def test_explicit_round_trip_copies(dev: sc.ndarray) -> None:
    host = np.arange(4.0)
    d = sc.asarray(host)
    host[0] = 99.0  # asarray copied: the device array does not see host writes
    assert isinstance(d, sc.ndarray) and d.device.id == 0
    np.testing.assert_array_equal(sc.asnumpy(d), [0.0, 1.0, 2.0, 3.0])
    assert isinstance(d.get(), np.ndarray) and d.get() is not d.get()
    assert sc.asarray(dev) is dev and sc.asarray(dev, dtype=np.float64).dtype == np.float64
    assert sc.array([1, 2, 3], dtype=sc.float32).dtype == np.float32
    assert sc.asarray([dev, dev]).shape == (2, 2, 3)
    assert "strict_cupy" in repr(dev)


def test_reductions_and_integer_indexing_give_0d_device_arrays(dev: sc.ndarray) -> None:
    for scalar in (dev.sum(), sc.sum(dev), dev.max(), dev.mean(axis=None), dev[1, 2], sc.argmax(dev)):
        assert isinstance(scalar, sc.ndarray) and scalar.shape == ()
    assert float(dev.sum()) == 15.0 and int(dev[1, 2]) == 5 and bool(dev[0, 1])
    assert dev.sum().item() == 15.0 and dev.sum(axis=0, keepdims=True).shape == (1, 3)
    assert f"{dev.sum():.1f}" == "15.0"


def test_indexing_with_device_arrays_and_views(dev: sc.ndarray) -> None:
    np.testing.assert_array_equal(dev[sc.asarray([1, 0])].get(), dev.get()[[1, 0]])
    np.testing.assert_array_equal(dev[dev > 2].get(), [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(dev[None, ..., 1:].get(), dev.get()[None, ..., 1:])
    row = dev[0]
    row += 10  # a view, as in CuPy
    dev[1, sc.asarray([0, 2])] = -1.0
    np.testing.assert_array_equal(dev.get(), [[10, 11, 12], [-1, 4, -1]])
    assert [type(r) for r in dev] == [sc.ndarray, sc.ndarray] and len(dev) == 2


def test_module_functions_take_and_give_device_arrays(dev: sc.ndarray) -> None:
    assert sc.concatenate([dev, dev]).shape == (4, 3) and sc.stack((dev, dev)).shape == (2, 2, 3)
    parts = sc.split(dev, 3, axis=1)
    assert len(parts) == 3 and all(isinstance(p, sc.ndarray) for p in parts)
    assert sc.where(dev > 2, dev, 0.0).dtype == np.float32
    np.testing.assert_allclose(sc.einsum("ij,kj->ik", dev, dev).get(), dev.get() @ dev.get().T)
    out = sc.empty((2, 3), dtype=sc.float32)
    assert sc.exp(dev, out=out) is out and dev.astype(sc.float32, copy=False) is dev
    np.testing.assert_array_equal(sc.add.reduce(dev, axis=0).get(), [3, 5, 7])
    assert sc.get_array_module(dev) is sc and sc.get_array_module(np.ones(1), 1.0) is np
    assert sc.float32 is np.float32 and sc.dtype is np.dtype and sc.newaxis is None


def test_copies_and_pickles(dev: sc.ndarray) -> None:
    for c in (copy.copy(dev), copy.deepcopy(dev), pickle.loads(pickle.dumps(dev))):
        assert isinstance(c, sc.ndarray) and c is not dev
        np.testing.assert_array_equal(c.get(), dev.get())


def test_random_generator_draws_device_arrays_of_the_asked_dtype() -> None:
    g = sc.random.default_rng(0)
    for draw in (g.random((2, 3), dtype=sc.float32), g.standard_normal(5, dtype=sc.float32)):
        assert isinstance(draw, sc.ndarray) and draw.dtype == np.float32
    assert g.uniform(-1.0, 1.0, size=4, dtype=sc.float32).dtype == np.float32
    ints = g.integers(0, 10, size=100, dtype=sc.int32)
    assert ints.dtype == np.int32 and 0 <= int(ints.min()) and int(ints.max()) < 10
    assert g.random().shape == ()


def test_as_strided_gives_a_view_of_device_memory_and_refuses_host_arrays() -> None:
    a = sc.asarray(np.arange(6, dtype=np.float32))
    windows = sc.lib.stride_tricks.as_strided(a, shape=(4, 3), strides=(4, 4))  # overlapping windows of 3
    assert isinstance(windows, sc.ndarray)
    np.testing.assert_array_equal(windows.get(), [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    a[2] = 9.0  # a view: the change shows through every window that covers it
    np.testing.assert_array_equal(windows.get(), [[0, 1, 9], [1, 9, 3], [9, 3, 4], [3, 4, 5]])
    with pytest.raises(TypeError, match="device array"):
        sc.lib.stride_tricks.as_strided(np.arange(6.0), shape=(2,), strides=(8,))


def test_every_allowlisted_name_resolves() -> None:
    for name in sorted(sc.CUPY_NAMES):
        assert getattr(sc, name) is not None or name == "newaxis", name
    helpers = {n for n in vars(sc) if not n.startswith("_")} - sc.CUPY_NAMES
    assert helpers <= {"CUPY_NAMES", "annotations", "np", "operator", "sys", "types", "Any"}, helpers


def test_backend_treats_the_stand_in_as_the_gpu() -> None:
    with backend.use_gpu_module(sc):
        assert backend.gpu_available() and backend.Device("gpu").xp is sc
        d = backend.to_device(np.arange(3.0), "gpu")
        assert isinstance(d, sc.ndarray) and backend.device_of(d) == "cuda:0"
        assert backend.get_array_module(d) is sc
        np.testing.assert_array_equal(backend.to_numpy(d), [0.0, 1.0, 2.0])
        assert backend.rng("gpu").standard_normal((2,), dtype=sc.float32).dtype == np.float32
        backend.synchronize("gpu")
        with pytest.raises(RuntimeError):
            backend.to_device(np.arange(3.0), "cuda:1")
    assert not backend.is_gpu_array(d)


# ----------------------------------------------------------------------------- fixtures and real CuPy


def test_fixtures_agree(xp, device) -> None:
    assert backend.Device(device).xp is xp
    a = backend.to_device(np.arange(3, dtype=np.float32), device)
    assert backend.get_array_module(a) is xp
    np.testing.assert_allclose(to_host(xp.exp(a)), np.exp(np.arange(3, dtype=np.float32)), rtol=1e-6)


@pytest.mark.gpu
def test_stand_in_names_exist_on_real_cupy() -> None:
    cupy = backend.Device("gpu").xp
    assert cupy is not sc
    assert sorted(n for n in sc.CUPY_NAMES if not hasattr(cupy, n)) == []
    g = cupy.random.default_rng(0)
    for name in ("random", "standard_normal", "integers", "uniform"):  # what the stand-in's Generator has
        assert hasattr(g, name), name
    for name in ("normal", "permutation", "choice", "shuffle"):  # what it refuses, as CuPy's lacks them
        assert not hasattr(g, name), name
    assert callable(cupy.lib.stride_tricks.as_strided)
    dev = cupy.ones(3, dtype=cupy.float32)
    for name in ("device", "get", "astype", "sum", "T", "item", "tolist"):
        assert hasattr(dev, name), name
    assert dev.device.id == 0
    with pytest.raises(TypeError):
        np.asarray(dev)
    with pytest.raises(TypeError):
        dev + np.ones(3, dtype=np.float32)
