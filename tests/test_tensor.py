"""Specification of `Tensor`: properties, devices, dtypes, autograd semantics and error messages.

Every test that takes the `device` (or `xp`) fixture runs on NumPy, on the strict CuPy stand-in and on
real CuPy (skipped without a GPU). Tests about the GPU-less machine (what happens when no GPU is usable)
only run where real CuPy cannot.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import strict_cupy
from conftest import to_host

import minigrad as mg
import minigrad.functional as F
from minigrad import backend
from minigrad.tensor import Function

no_real_gpu = pytest.mark.skipif(backend.gpu_available(), reason="a GPU is usable here")


def host(shape, seed=0, dtype=np.float32, low=None, high=None):
    """Seeded host data: standard normal, or uniform in [low, high)."""
    gen = np.random.default_rng(seed)
    data = gen.standard_normal(shape) if low is None else gen.uniform(low, high, shape)
    return data.astype(dtype)


# ----------------------------------------------------------------------------- properties and devices


def test_properties_describe_the_data(device):
    t = mg.tensor(host((2, 3, 4)), device=device)
    assert t.shape == (2, 3, 4)
    assert t.ndim == 3
    assert t.size == 24
    assert len(t) == 2
    assert t.dtype == np.float32
    assert t.device == device
    assert str(t.device) == ("cpu" if device == "cpu" else "cuda:0")
    assert t.is_leaf and not t.requires_grad


def test_to_device_and_back_keeps_the_values(device):
    data = host((3, 2), dtype=np.float64)
    there = mg.tensor(data).to(device)
    assert there.device == device
    assert there.dtype == np.float64
    back = there.to("cpu")
    assert back.device == "cpu"
    assert isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), data)


def test_to_the_same_device_returns_the_tensor_itself(device):
    t = mg.tensor(host((2,)), device=device)
    assert t.to(device) is t


def test_to_another_device_gives_a_new_leaf_that_keeps_requires_grad():
    with backend.use_gpu_module(strict_cupy):
        x = mg.tensor(host((3,)), requires_grad=True)
        moved = x.to("gpu")
        assert moved is not x
        assert moved.requires_grad and moved.is_leaf
        (moved * moved).sum().backward()
        assert moved.grad is not None
        assert x.grad is None  # the copy is a new leaf: no gradient flows back across devices


def test_numpy_returns_a_host_array_on_every_device(device):
    data = host((2, 2))
    out = mg.tensor(data, device=device).numpy()
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, data)


def test_item_gives_a_python_number(device):
    assert mg.tensor([2.5], device=device).item() == 2.5
    assert isinstance(mg.tensor([[2.5]], device=device).item(), float)
    assert isinstance(mg.tensor(7, device=device).item(), int)


def test_item_on_several_elements_names_the_shape(device):
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        mg.tensor(host((2, 3)), device=device).item()


def test_detach_cuts_the_graph_but_shares_the_data(device):
    x = mg.tensor(host((3,)), device=device, requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    assert d.data is y.data
    (d * x).sum().backward()  # d is a constant here: x's gradient is d alone, nothing through y
    np.testing.assert_array_equal(to_host(x.grad.data), to_host(d.data))


def test_zero_grad_forgets_the_gradient(device):
    x = mg.tensor(host((3,)), device=device, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad is not None
    x.zero_grad()
    assert x.grad is None


def test_gradients_live_on_the_tensors_device(device):
    x = mg.tensor(host((3,)), device=device, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.device == device
    assert x.grad.dtype == x.dtype


def test_repr_shows_values_device_and_requires_grad(device):
    text = repr(mg.tensor([1.0, 2.0], device=device, requires_grad=True))
    assert text.startswith("Tensor([1., 2.]")
    assert f"device={'cpu' if device == 'cpu' else 'cuda:0'}" in text
    assert "requires_grad=True" in text


def test_repr_names_the_dtype_once():
    assert repr(mg.tensor([1.0, 2.0])).count("dtype=") == 1


def test_comparisons_give_boolean_tensors_without_a_graph(device):
    x = mg.tensor(host((4,)), device=device, requires_grad=True)
    mask = x > 0
    assert mask.dtype == np.bool_
    assert not mask.requires_grad
    np.testing.assert_array_equal(to_host(mask.data), to_host(x.data) > 0)


def test_tensor_copies_the_array_it_is_given():
    data = np.ones(3, np.float32)
    p = mg.nn.Parameter(mg.tensor(data))
    p.grad = mg.tensor(np.ones(3, np.float32))
    mg.optim.SGD([p], lr=0.1).step()
    np.testing.assert_array_equal(data, np.ones(3, np.float32))


# ----------------------------------------------------------------------------- dtype rules


def test_python_floats_become_float32_and_ints_int64():
    assert mg.tensor(1.5).dtype == np.float32
    assert mg.tensor([[1.0, 2]]).dtype == np.float32
    assert mg.tensor(3).dtype == np.int64
    assert mg.tensor([1, 2]).dtype == np.int64
    assert mg.tensor([True, False]).dtype == np.bool_


def test_arrays_and_numpy_scalars_keep_their_dtype():
    assert mg.tensor(np.zeros(2, np.float64)).dtype == np.float64
    assert mg.tensor(np.zeros(2, np.int32)).dtype == np.int32
    assert mg.tensor(np.float64(1.0)).dtype == np.float64
    assert mg.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_factories_make_float32_on_the_device(device):
    for make in (mg.zeros, mg.ones, mg.randn, mg.rand):
        t = make((2, 3), device=device)
        assert t.dtype == np.float32, make.__name__
        assert t.device == device, make.__name__
    assert mg.zeros((2,), dtype=np.float64, device=device).dtype == np.float64


# Ops on one float32 (3, 4) tensor `x` (and a float32 (4, 2) `w`); each must stay float32, gradient included.
FLOAT32_OPS = {
    "add": lambda x, w: x + x,
    "sub": lambda x, w: x - x,
    "mul": lambda x, w: x * x,
    "div": lambda x, w: x / (x * x + 1),
    "maximum": lambda x, w: F.maximum(x, x * 0.5),
    "where": lambda x, w: F.where(x > 0, x, x * 2),
    "neg": lambda x, w: -x,
    "pow": lambda x, w: (x * x + 1) ** 0.5,
    "exp": lambda x, w: x.exp(),
    "log": lambda x, w: (x * x + 1).log(),
    "sqrt": lambda x, w: (x * x + 1).sqrt(),
    "relu": lambda x, w: x.relu(),
    "tanh": lambda x, w: x.tanh(),
    "sigmoid": lambda x, w: x.sigmoid(),
    "sum": lambda x, w: x.sum(axis=0),
    "mean": lambda x, w: x.mean(),
    "max": lambda x, w: x.max(axis=1),
    "reshape": lambda x, w: x.reshape(2, 6),
    "transpose": lambda x, w: x.T,
    "getitem": lambda x, w: x[[0, 0, 2], 1:],
    "concatenate": lambda x, w: F.concatenate([x, x], axis=1),
    "stack": lambda x, w: F.stack([x, x]),
    "pad": lambda x, w: F.pad(x, ((1, 0), (0, 2))),
    "matmul": lambda x, w: x @ w,
    "linear": lambda x, w: F.linear(x, w.T),
    "softmax": lambda x, w: F.softmax(x),
    "log_softmax": lambda x, w: F.log_softmax(x),
    "cross_entropy": lambda x, w: F.cross_entropy(x, [0, 3, 1]),
    "conv2d": lambda x, w: F.conv2d(x.reshape(1, 1, 3, 4), w.reshape(2, 1, 2, 2), padding=1),
    "max_pool2d": lambda x, w: F.max_pool2d(x.reshape(1, 1, 3, 4), 2, 1),
    "avg_pool2d": lambda x, w: F.avg_pool2d(x.reshape(1, 1, 3, 4), 2, 1, padding=1),
    "adaptive_avg_pool2d": lambda x, w: F.adaptive_avg_pool2d(x.reshape(1, 1, 3, 4), 2),
    "local_response_norm": lambda x, w: F.local_response_norm(x.reshape(1, 3, 2, 2), size=3),
    "dropout": lambda x, w: F.dropout(x, 0.5),
}


@pytest.mark.parametrize("op", list(FLOAT32_OPS))
def test_float32_in_float32_out(op, device):
    x = mg.tensor(host((3, 4), seed=1), device=device, requires_grad=True)
    w = mg.tensor(host((4, 2), seed=2), device=device, requires_grad=True)
    y = FLOAT32_OPS[op](x, w)
    assert y.dtype == np.float32
    y.sum().backward()
    for leaf in (x, w):
        if leaf.grad is not None:
            assert leaf.grad.dtype == np.float32


SCALAR_EXPRESSIONS = {
    "2 * x": lambda x, w: 2 * x,
    "x * 2.5": lambda x, w: x * 2.5,
    "x / 3": lambda x, w: x / 3,
    "3 / x": lambda x, w: 3 / x,
    "x ** 2": lambda x, w: x**2,
    "x ** 0.5": lambda x, w: (x * x) ** 0.5,
    "-x": lambda x, w: -x,
    "x @ w": lambda x, w: x @ w,
    "1 - x": lambda x, w: 1 - x,
    "x + 0.5": lambda x, w: x + 0.5,
    "np.float64(2) * x": lambda x, w: np.float64(2) * x,
    "x * np.float64(2)": lambda x, w: x * np.float64(2),
}


@pytest.mark.parametrize("expression", list(SCALAR_EXPRESSIONS))
def test_scalar_operands_keep_float32(expression, device):
    x = mg.tensor(host((2, 3), low=0.5, high=2.0), device=device)
    w = mg.tensor(host((3, 2)), device=device)
    assert SCALAR_EXPRESSIONS[expression](x, w).dtype == np.float32


def test_a_numpy_float64_exponent_keeps_float32():
    x = mg.tensor([1.0, 4.0])
    assert (x ** np.float64(0.5)).dtype == np.float32


def test_integer_tensors_and_float_numbers_give_float32_not_a_truncated_int(device):
    ints = mg.tensor([1, 2, 3], device=device)
    np.testing.assert_array_equal(to_host((ints * 0.5).data), np.array([0.5, 1.0, 1.5], np.float32))
    assert (ints * 0.5).dtype == np.float32
    assert (ints + 0.7).dtype == np.float32
    np.testing.assert_array_equal(to_host((ints < 1.5).data), [True, False, False])
    np.testing.assert_array_equal(to_host((ints >= 2.5).data), [False, False, True])
    mask = mg.Tensor(backend.to_device(np.array([True, False]), device))
    np.testing.assert_array_equal(to_host((mask * 0.5).data), np.array([0.5, 0.0], np.float32))


def test_dividing_or_averaging_integers_gives_float32(device):
    ints = mg.tensor([1, 2, 4], device=device)
    for result in (ints / 2, 2 / ints, ints / ints, ints.mean(), F.mean(ints, axis=0)):
        assert result.dtype == np.float32
    np.testing.assert_array_equal(to_host((ints / 2).data), np.array([0.5, 1.0, 2.0], np.float32))
    assert (ints.mean()).item() == pytest.approx(7 / 3)


def test_integer_numbers_keep_an_integer_tensor_integer():
    assert (mg.tensor(np.array([1, 2], np.int32)) + 1).dtype == np.int32
    assert (mg.tensor([1, 2]) * 3).dtype == np.int64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "other",
    [
        lambda d: mg.tensor([1, 2, 3], device=d),
        lambda d: backend.to_device(np.array([1, 2, 3]), d),
        lambda d: [1, 2, 3],
    ],
    ids=["int64 tensor", "int64 array", "list of ints"],
)
def test_integer_operands_take_the_float_operands_dtype_and_so_does_its_gradient(dtype, other, device):
    if isinstance(other(device), list) and device != "cpu":
        pytest.skip("a list is host data: device tensors refuse it, as CuPy does")
    w = mg.tensor(np.ones(3, dtype), device=device, requires_grad=True)
    y = w * other(device)
    y.sum().backward()
    assert y.dtype == dtype and w.grad.dtype == dtype
    np.testing.assert_array_equal(to_host(w.grad.data), np.array([1, 2, 3], dtype))


# ----------------------------------------------------------------------------- autograd semantics


def test_gradients_accumulate_over_two_backward_calls(device):
    data = host((4,), dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad.data), 2 * (2 * data), rtol=1e-14)


def test_retain_graph_allows_a_second_backward_through_the_same_graph(device):
    data = host((4,), dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    y = (x * x * 3).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(to_host(x.grad.data), 2 * (6 * data), rtol=1e-14)


def test_without_retain_graph_the_graph_is_freed_and_a_second_backward_raises(device):
    data = host((4,), dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    y = (x * x * 3).sum()
    y.backward()
    assert y.is_leaf  # the recorded op was released
    first = to_host(x.grad.data).copy()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(to_host(x.grad.data), first)  # nothing was added


def test_using_an_intermediate_after_its_graph_was_freed_raises():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    z = x * 2
    z.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (z * 3).sum().backward()


def test_backward_with_an_explicit_upstream_gradient(device):
    data, upstream = host((2, 3), dtype=np.float64), host((2, 3), seed=1, dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    (x * x).backward(mg.tensor(upstream, device=device))
    np.testing.assert_allclose(to_host(x.grad.data), 2 * data * upstream, rtol=1e-14)


def test_no_grad_records_nothing(device):
    x = mg.tensor(host((3,)), device=device, requires_grad=True)
    with mg.no_grad():
        y = (x * 2).exp().sum()
        with mg.enable_grad():
            z = (x * 2).sum()
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad and not z.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_ops_on_constants_record_nothing(device):
    x = mg.tensor(host((3,)), device=device)
    y = (x * 2).sum()
    assert not y.requires_grad and y.is_leaf


def test_a_chain_of_100_000_ops_backpropagates_without_recursion():
    x = mg.tensor([0.5], dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])


def test_a_tensor_used_several_times_gets_the_summed_gradient(device):
    # a = 2x, b = a + a*a = 2x + 4x^2: both paths from b to x meet in a (a diamond), so db/dx = 2 + 8x.
    data = host((5,), dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    a = x * 2
    b = a + a * a
    b.sum().backward()
    np.testing.assert_allclose(to_host(x.grad.data), 2 + 8 * data, rtol=1e-13)


def test_a_tensor_as_both_operands(device):
    data = host((5,), dtype=np.float64)
    x = mg.tensor(data, device=device, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad.data), 2 * data, rtol=1e-14)


def test_leaves_never_share_a_gradient_array_with_each_other_or_the_caller(device):
    a = mg.tensor(host((2,)), device=device, requires_grad=True)
    b = mg.tensor(host((2,)), device=device, requires_grad=True)
    (a + b).sum().backward()  # Add hands the same gradient array to both inputs
    a.grad.data *= 0.5  # in place, as gradient clipping would
    np.testing.assert_array_equal(to_host(b.grad.data), [1.0, 1.0])

    c = mg.tensor(host((2,)), device=device, requires_grad=True)
    seed = backend.to_device(np.ones(2, np.float32), device)
    c.reshape(1, 2).backward(seed.reshape(1, 2))  # reaches the leaf as a view of the caller's array
    seed[...] = 7
    np.testing.assert_array_equal(to_host(c.grad.data), [1.0, 1.0])


def test_the_gradient_of_x_to_the_power_0_is_0_even_at_0(device):
    x = mg.tensor(np.array([0.0, 2.0], np.float32), device=device, requires_grad=True)
    (x**0).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad.data), [0.0, 0.0])


def test_only_leaves_keep_gradients(device):
    x = mg.tensor(host((3,)), device=device, requires_grad=True)
    y = x * 2
    y.sum().backward()
    assert x.grad is not None
    assert y.grad is None


# ----------------------------------------------------------------------------- clear errors


def test_shapes_that_do_not_broadcast_are_named():
    a, b = mg.tensor(np.zeros((2, 3))), mg.tensor(np.zeros(4))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) do not broadcast"):
        a + b


def test_mixing_devices_names_both_devices():
    with backend.use_gpu_module(strict_cupy):
        on_cpu = mg.tensor([1.0, 2.0])
        on_gpu = mg.tensor([1.0, 2.0], device="gpu")
        with pytest.raises(ValueError, match=r"different devices: cpu and cuda:0"):
            on_cpu + on_gpu
        with pytest.raises(ValueError, match=r"cuda:0 and cpu"):
            on_gpu * on_cpu


def test_backward_on_a_non_scalar_needs_a_gradient():
    y = mg.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"one-element tensor; this one has shape \(2, 3\)"):
        y.backward()


def test_backward_with_a_gradient_of_the_wrong_shape_names_both_shapes():
    y = mg.tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\) but the tensor has shape \(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_with_a_gradient_of_another_dtype_or_device_is_refused(device):
    y = mg.tensor(host((2, 3)), device=device, requires_grad=True) * 2
    with pytest.raises(TypeError, match=r"grad has dtype float64 but the tensor is float32"):
        y.backward(backend.to_device(np.ones((2, 3)), device))  # np.ones is float64
    if device != "cpu":
        with pytest.raises(ValueError, match=r"grad is on cpu but the tensor is on"):
            y.backward(np.ones((2, 3), np.float32))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match=r"only floating-point tensors can require gradients.*int64"):
        mg.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError, match="int32"):
        mg.tensor(np.arange(3, dtype=np.int32)).requires_grad_()


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:1", "gpu0"])
def test_unknown_device_strings_are_refused(spec):
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        mg.Device(spec)
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        mg.tensor([1.0]).to(spec)


KNOWN_DEVICES = {"cpu": "cpu", "CPU": "cpu", "gpu": "cuda:0", "cuda": "cuda:0", "cuda:0": "cuda:0", "cuda:1": "cuda:1"}


@pytest.mark.parametrize("spec", list(KNOWN_DEVICES))
def test_known_device_strings_and_their_names(spec):
    device = mg.Device(spec)
    assert str(device) == KNOWN_DEVICES[spec]
    assert device == KNOWN_DEVICES[spec]
    assert device == mg.Device(KNOWN_DEVICES[spec])


@no_real_gpu
def test_asking_for_the_gpu_without_one_raises_with_the_reason():
    reason = backend.gpu_unavailable_reason()
    assert reason
    with pytest.raises(RuntimeError, match=re.escape(reason)):
        _ = mg.Device("gpu").xp
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        mg.tensor([1.0], device="gpu")


def test_cupy_arrays_from_a_program_that_imported_cupy_are_gpu_arrays_before_any_device_call(monkeypatch):
    """A program that imports CuPy and hands its arrays straight to a kernel (no Device or .to() first)
    must get CuPy as the array module, not NumPy (which would fail on the first host/device mix)."""
    monkeypatch.setitem(sys.modules, "cupy", strict_cupy)  # what `import cupy` would have put there
    monkeypatch.setattr(backend, "_gpu_probe", None)  # nothing has asked for a device yet
    a = strict_cupy.asarray(np.ones(3, np.float32))
    assert backend.get_array_module(a) is strict_cupy
    assert backend.is_gpu_array(a)


def test_without_cupy_imported_nothing_is_probed(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(backend, "_gpu_probe", None)
    assert backend.get_array_module(np.ones(3)) is np
    assert backend._gpu_probe is None  # the probe (import, device query, a test matmul) did not run


def test_mixed_float_dtypes_are_refused():
    a = mg.tensor(np.ones((2, 2), np.float32))
    b = mg.tensor(np.ones((2, 2), np.float64))
    with pytest.raises(TypeError, match=r"add: dtypes differ \(float32 and float64\)"):
        a + b
    with pytest.raises(TypeError, match=r"matmul: dtypes differ"):
        a @ b
    with pytest.raises(TypeError, match=r"maximum: dtypes differ"):
        F.maximum(a, b)
    with pytest.raises(TypeError, match=r"matmul: dtypes differ"):
        a @ np.ones((2, 2))  # an array counts like a tensor
    with pytest.raises(TypeError, match=r"concatenate: dtypes differ"):
        F.concatenate([a, b])
    with pytest.raises(TypeError, match=r"stack: dtypes differ"):
        F.stack([a, b])


def test_conv2d_with_mixed_float_dtypes_is_refused():
    x = mg.tensor(np.ones((1, 1, 3, 3), np.float32))
    w = mg.tensor(np.ones((1, 1, 2, 2), np.float64))
    with pytest.raises(TypeError, match="dtypes differ"):
        F.conv2d(x, w)


# ----------------------------------------------------------------------------- the stand-in catches host-only code


class HostOnlyExp(Function):
    """exp written with `np.exp`: fine on NumPy arrays, but on a GPU it would copy to the host (or fail)."""

    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class HostRoundTripExp(Function):
    """exp through an explicit host copy: nothing for the stand-in to refuse, but the output leaves the GPU."""

    def forward(self, x):
        return np.exp(backend.to_numpy(x))

    def backward(self, g):
        return backend.to_numpy(g)


class HostGradientScale(Function):
    """A forward on the device, a backward that returns a host array."""

    def forward(self, x):
        return x * 2

    def backward(self, g):
        return backend.to_numpy(g) * 2


def test_an_op_whose_output_or_gradient_leaves_the_device_is_named():
    with backend.use_gpu_module(strict_cupy):
        x = mg.tensor(host((3,)), device="gpu", requires_grad=True)
        with pytest.raises(RuntimeError, match=r"HostRoundTripExp.forward returned an array on cpu for inputs on"):
            HostRoundTripExp.apply(x)
        y = HostGradientScale.apply(x)
        with pytest.raises(RuntimeError, match=r"HostGradientScale.backward gave a gradient on cpu for an input on"):
            y.sum().backward()


def test_a_host_only_op_works_on_numpy():
    data = host((3,), dtype=np.float64)
    y = HostOnlyExp.apply(mg.tensor(data))
    np.testing.assert_allclose(y.numpy(), np.exp(data), rtol=1e-15)


def test_a_deliberately_host_only_op_is_caught_by_the_stand_in():
    with backend.use_gpu_module(strict_cupy):
        x = mg.tensor(host((3,)), device="gpu")
        with pytest.raises(TypeError, match=r"numpy\.exp was called on a device array"):
            HostOnlyExp.apply(x)
