"""Every op's forward pass against plain NumPy, and some backward passes against analytic gradients.

Each test runs on NumPy, on the strict CuPy stand-in and on real CuPy (the `device` fixture), in float32
and in float64 (the `dtype` fixture). References are computed on the host in float64 from the same
input values, then compared with the tolerance of the dtype under test:

- float32: rtol 1e-5, atol 1e-6 (a few ulps of float32, and room for CuPy's own exp/log/tanh);
- float64: rtol 1e-12, atol 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host

import minigrad as mg
import minigrad.functional as F

TOL = {
    np.float32: {"rtol": 1e-5, "atol": 1e-6},
    np.float64: {"rtol": 1e-12, "atol": 1e-12},
}


def host(shape, seed=0, dtype=np.float64, low=None, high=None):
    """Seeded host data: standard normal, or uniform in [low, high)."""
    gen = np.random.default_rng(seed)
    data = gen.standard_normal(shape) if low is None else gen.uniform(low, high, shape)
    return np.asarray(data, dtype=dtype)


def leaf(data, device, dtype, requires_grad=True):
    return mg.tensor(np.asarray(data, dtype=dtype), device=device, requires_grad=requires_grad)


def assert_matches(got, expected, dtype):
    """`got` (a Tensor) has the dtype under test and equals the float64 reference within its tolerance."""
    assert got.dtype == dtype
    got_host = to_host(got.data)
    assert got_host.shape == np.shape(expected)
    np.testing.assert_allclose(got_host, expected, **TOL[dtype])


def as_ref(data, dtype):
    """The reference's input: the values the op really sees (rounded to dtype), in float64."""
    return np.asarray(data, dtype=dtype).astype(np.float64)


def summed_to(g, shape):
    """A broadcast gradient summed back to `shape`: over the leading axes, and the axes where shape has 1."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


# ----------------------------------------------------------------------------- elementwise binary

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
    "maximum": (F.maximum, np.maximum),
}

# (shape of a, shape of b); None means a Python scalar.
BROADCAST_CASES = {
    "same shape": ((3, 4), (3, 4)),
    "scalar right": ((3, 4), None),
    "scalar left": (None, (3, 4)),
    "column + row": ((3, 1), (1, 4)),
    "3-d + 1-d": ((2, 3, 4), (4,)),
    "1-d + 3-d": ((4,), (2, 3, 4)),
}


def binary_operands(a_shape, b_shape, device, dtype):
    """(a, b) as tensors or Python scalars, and their float64 reference values. b stays away from 0."""
    a_host = 1.5 if a_shape is None else host(a_shape, seed=1)
    b_host = 0.75 if b_shape is None else host(b_shape, seed=2, low=0.5, high=2.0) * np.sign(host(b_shape, seed=3))
    a = a_host if a_shape is None else leaf(a_host, device, dtype)
    b = b_host if b_shape is None else leaf(b_host, device, dtype)
    a_ref = a_host if a_shape is None else as_ref(a_host, dtype)
    b_ref = b_host if b_shape is None else as_ref(b_host, dtype)
    return a, b, a_ref, b_ref


@pytest.mark.parametrize("case", list(BROADCAST_CASES))
@pytest.mark.parametrize("op", list(BINARY))
def test_binary_op_broadcasts_like_numpy(op, case, device, dtype):
    ours, reference = BINARY[op]
    a, b, a_ref, b_ref = binary_operands(*BROADCAST_CASES[case], device, dtype)
    assert_matches(ours(a, b), reference(a_ref, b_ref), dtype)


@pytest.mark.parametrize("case", ["same shape", "column + row", "3-d + 1-d", "1-d + 3-d"])
def test_broadcast_gradients_are_summed_to_each_inputs_shape(case, device, dtype):
    # d/da sum(u * a * b) = u * b summed over the axes a was broadcast along (likewise for b).
    a_shape, b_shape = BROADCAST_CASES[case]
    a, b, a_ref, b_ref = binary_operands(a_shape, b_shape, device, dtype)
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    u = host(out_shape, seed=4)
    (a * b).backward(mg.tensor(u.astype(dtype), device=device))
    u_ref = as_ref(u, dtype)
    assert_matches(a.grad, summed_to(u_ref * b_ref, a_shape), dtype)
    assert_matches(b.grad, summed_to(u_ref * a_ref, b_shape), dtype)


def test_gradient_of_sum_of_products_is_the_other_factor(device, dtype):
    x_host, y_host = host((3, 4), seed=1), host((3, 4), seed=2)
    x, y = leaf(x_host, device, dtype), leaf(y_host, device, dtype)
    (x * y).sum().backward()
    assert_matches(x.grad, as_ref(y_host, dtype), dtype)
    assert_matches(y.grad, as_ref(x_host, dtype), dtype)


def test_gradient_of_a_quotient(device, dtype):
    # d/da sum(a / b) = 1 / b, d/db = -a / b^2
    a_host, b_host = host((5,), seed=1), host((5,), seed=2, low=0.5, high=2.0)
    a, b = leaf(a_host, device, dtype), leaf(b_host, device, dtype)
    (a / b).sum().backward()
    a_ref, b_ref = as_ref(a_host, dtype), as_ref(b_host, dtype)
    assert_matches(a.grad, 1 / b_ref, dtype)
    assert_matches(b.grad, -a_ref / b_ref**2, dtype)


def test_maximum_sends_the_gradient_to_the_larger_input_and_ties_to_the_first(device, dtype):
    a_host = np.array([1.0, 5.0, 2.0, 3.0])
    b_host = np.array([4.0, 0.0, 2.0, 3.0])  # the last two are ties
    a, b = leaf(a_host, device, dtype), leaf(b_host, device, dtype)
    F.maximum(a, b).sum().backward()
    a_wins = a_host >= b_host
    assert_matches(a.grad, a_wins.astype(np.float64), dtype)
    assert_matches(b.grad, (~a_wins).astype(np.float64), dtype)


def test_where_picks_elementwise_and_routes_gradients(device, dtype):
    a_host, b_host = host((3, 4), seed=1), host((4,), seed=2)
    a, b = leaf(a_host, device, dtype), leaf(b_host, device, dtype)
    cond = a > 0  # a boolean tensor on the same device
    y = F.where(cond, a, b)
    cond_host = to_host(cond.data)
    assert_matches(y, np.where(cond_host, as_ref(a_host, dtype), as_ref(b_host, dtype)), dtype)
    y.sum().backward()
    assert_matches(a.grad, cond_host.astype(np.float64), dtype)
    assert_matches(b.grad, (~cond_host).sum(axis=0).astype(np.float64), dtype)


# ----------------------------------------------------------------------------- elementwise unary

# name: (our op, NumPy reference, its derivative, input domain (low, high) or None for N(0, 1))
UNARY = {
    "neg": (F.neg, np.negative, lambda x: -np.ones_like(x), None),
    "exp": (F.exp, np.exp, np.exp, None),
    "log": (F.log, np.log, lambda x: 1 / x, (0.5, 3.0)),
    "sqrt": (F.sqrt, np.sqrt, lambda x: 0.5 / np.sqrt(x), (0.5, 3.0)),
    "relu": (F.relu, lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(np.float64), None),
    "tanh": (F.tanh, np.tanh, lambda x: 1 - np.tanh(x) ** 2, None),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2, None),
    "pow 3": (lambda x: F.pow(x, 3), lambda x: x**3, lambda x: 3 * x**2, None),
    "pow 0.5": (lambda x: x**0.5, np.sqrt, lambda x: 0.5 / np.sqrt(x), (0.5, 3.0)),
    "pow -1.5": (lambda x: x**-1.5, lambda x: x**-1.5, lambda x: -1.5 * x**-2.5, (0.5, 3.0)),
}


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_op_and_its_derivative(op, device, dtype):
    ours, reference, derivative, domain = UNARY[op]
    data = host((3, 4), seed=5) if domain is None else host((3, 4), seed=5, low=domain[0], high=domain[1])
    x = leaf(data, device, dtype)
    y = ours(x)
    x_ref = as_ref(data, dtype)
    assert_matches(y, reference(x_ref), dtype)
    y.sum().backward()
    assert_matches(x.grad, derivative(x_ref), dtype)


def test_sigmoid_does_not_overflow_for_large_inputs(device, dtype):
    y = F.sigmoid(leaf([-1000.0, 0.0, 1000.0], device, dtype))
    np.testing.assert_array_equal(to_host(y.data), [0.0, 0.5, 1.0])


# ----------------------------------------------------------------------------- reductions

REDUCTIONS = {"sum": (F.sum, np.sum), "mean": (F.mean, np.mean), "max": (F.max, np.max)}
AXES = [None, 0, -1, 1, (0, 2)]


@pytest.mark.parametrize("keepdims", [False, True], ids=["dropdims", "keepdims"])
@pytest.mark.parametrize("axis", AXES, ids=[str(a) for a in AXES])
@pytest.mark.parametrize("op", list(REDUCTIONS))
def test_reduction_matches_numpy(op, axis, keepdims, device, dtype):
    ours, reference = REDUCTIONS[op]
    data = host((2, 3, 4), seed=6)
    x = leaf(data, device, dtype)
    assert_matches(ours(x, axis, keepdims), reference(as_ref(data, dtype), axis=axis, keepdims=keepdims), dtype)


@pytest.mark.parametrize("axis", AXES, ids=[str(a) for a in AXES])
def test_sum_and_mean_spread_the_gradient_evenly(axis, device, dtype):
    data = host((2, 3, 4), seed=6)
    count = data.size // np.sum(data, axis=axis).size
    for op, share in ((F.sum, 1.0), (F.mean, 1.0 / count)):
        x = leaf(data, device, dtype)
        op(x, axis).sum().backward()
        assert_matches(x.grad, np.full(data.shape, share), dtype)


def test_max_gradient_goes_to_the_maximum_and_ties_share_it(device, dtype):
    data = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 5.0, 1.0, 4.0]])
    upstream = np.array([3.0, 4.0, 1.0])
    x = leaf(data, device, dtype)
    F.max(x, axis=1).backward(mg.tensor(upstream.astype(dtype), device=device))
    winners = data == data.max(axis=1, keepdims=True)
    expected = winners * upstream[:, None] / winners.sum(axis=1, keepdims=True)
    assert_matches(x.grad, expected, dtype)


# ----------------------------------------------------------------------------- shape ops


def test_reshape_and_flatten(device, dtype):
    data = host((2, 3, 4), seed=7)
    x = leaf(data, device, dtype)
    ref = as_ref(data, dtype)
    assert_matches(x.reshape(4, -1), ref.reshape(4, -1), dtype)
    assert_matches(x.reshape((6, 4)), ref.reshape(6, 4), dtype)
    assert_matches(x.flatten(1), ref.reshape(2, 12), dtype)
    assert_matches(x.flatten(), ref.reshape(24), dtype)  # everything by default, as torch.flatten
    assert_matches(F.flatten(x, 0, 1), ref.reshape(6, 4), dtype)
    assert_matches(F.flatten(x, -2), ref.reshape(2, 12), dtype)
    x.reshape(4, -1).backward(mg.tensor(np.arange(24.0).reshape(4, 6).astype(dtype), device=device))
    assert_matches(x.grad, np.arange(24.0).reshape(2, 3, 4), dtype)


def test_reshape_to_an_impossible_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 3\) into \(4, 2\)"):
        mg.tensor(np.zeros((2, 3))).reshape(4, 2)


@pytest.mark.parametrize("axes", [None, (2, 0, 1), (0, 2, 1), (-1, 0, -2)], ids=str)
def test_transpose_and_its_gradient(axes, device, dtype):
    data, upstream_src = host((2, 3, 4), seed=8), host((2, 3, 4), seed=9)
    x = leaf(data, device, dtype)
    y = F.transpose(x, axes)
    assert_matches(y, np.transpose(as_ref(data, dtype), axes), dtype)
    upstream = np.transpose(upstream_src, axes)  # any array of y's shape
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    # Transposing back puts each upstream entry where its input came from.
    inverse = None if axes is None else np.argsort([a % 3 for a in axes])
    assert_matches(x.grad, np.transpose(as_ref(upstream, dtype), inverse), dtype)


def test_T_and_permute_are_transposes(device, dtype):
    data = host((2, 3, 4), seed=8)
    x = leaf(data, device, dtype)
    ref = as_ref(data, dtype)
    assert_matches(x.T, ref.T, dtype)
    assert_matches(x.permute(1, 0, 2), ref.transpose(1, 0, 2), dtype)
    assert_matches(F.permute(x, (2, 1, 0)), ref.transpose(2, 1, 0), dtype)


# Indexes of a (4, 5, 6) tensor. The integer-array ones repeat elements, so their gradient must add up.
INDEXES = {
    "int": lambda: 2,
    "negative int": lambda: (-1, 1),
    "slices": lambda: (slice(1, None), slice(None, None, 2), -1),
    "negative steps": lambda: (slice(None, None, -1), slice(3, 0, -2)),
    "ellipsis and None": lambda: (Ellipsis, None, 0),
    "int list with repeats": lambda: [0, 2, 2, 1, 2],
    "int array with repeats": lambda: np.array([3, 3, 0]),
    "two int arrays": lambda: (np.array([0, 2, 2, 3]), np.array([1, 1, 1, 4])),
    "int array and slice": lambda: (np.array([1, 1]), slice(1, 4)),
    "slice then int array": lambda: (slice(None), np.array([4, 0, 4])),
}


@pytest.mark.parametrize("name", list(INDEXES))
def test_getitem_and_its_gradient_add_repeats(name, device, dtype):
    index = INDEXES[name]()
    data = host((4, 5, 6), seed=10)
    x = leaf(data, device, dtype)
    y = x[index]
    expected = as_ref(data, dtype)[index]
    assert_matches(y, expected, dtype)
    upstream = host(expected.shape, seed=11)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    dx = np.zeros(data.shape)
    key = index if isinstance(index, tuple) else (index,)
    np.add.at(dx, tuple(np.asarray(k) if isinstance(k, list) else k for k in key), as_ref(upstream, dtype))
    assert_matches(x.grad, dx, dtype)


def test_getitem_takes_an_index_tensor(device, dtype):
    data = host((5, 2), seed=12)
    x = leaf(data, device, dtype)
    idx = mg.tensor([4, 4, 0], device=device)
    x[idx].sum().backward()
    counts = np.bincount([4, 4, 0], minlength=5).astype(np.float64)
    assert_matches(x.grad, np.repeat(counts[:, None], 2, axis=1), dtype)


def test_concatenate_and_its_gradient(device, dtype):
    parts = [host((2, n), seed=13 + n) for n in (3, 1, 2)]
    xs = [leaf(p, device, dtype) for p in parts]
    y = F.concatenate(xs, axis=1)
    assert_matches(y, np.concatenate([as_ref(p, dtype) for p in parts], axis=1), dtype)
    upstream = host((2, 6), seed=20)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    ref = as_ref(upstream, dtype)
    for x, expected in zip(xs, np.split(ref, [3, 4], axis=1)):
        assert_matches(x.grad, expected, dtype)


def test_concatenate_of_mismatched_shapes_names_them():
    a, b = mg.tensor(np.zeros((2, 3))), mg.tensor(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"concatenate: shapes \(2, 3\) and \(3, 3\) do not match"):
        F.concatenate([a, b], axis=1)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack_and_its_gradient(axis, device, dtype):
    parts = [host((2, 3), seed=21 + i) for i in range(3)]
    xs = [leaf(p, device, dtype) for p in parts]
    y = F.stack(xs, axis=axis)
    assert_matches(y, np.stack([as_ref(p, dtype) for p in parts], axis=axis), dtype)
    upstream = host(y.shape, seed=25)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    for i, x in enumerate(xs):
        assert_matches(x.grad, np.take(as_ref(upstream, dtype), i, axis=axis), dtype)


@pytest.mark.parametrize("value", [0.0, -2.5])
def test_pad_and_its_gradient(value, device, dtype):
    data = host((2, 3, 4), seed=26)
    widths = ((0, 0), (1, 2), (2, 0))
    x = leaf(data, device, dtype)
    y = F.pad(x, widths, value)
    assert_matches(y, np.pad(as_ref(data, dtype), widths, constant_values=value), dtype)
    upstream = host(y.shape, seed=27)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    assert_matches(x.grad, as_ref(upstream, dtype)[:, 1:4, 2:6], dtype)


def test_pad_needs_one_pair_per_axis():
    with pytest.raises(ValueError, match=r"2 entries for a 3-d tensor of shape \(2, 3, 4\)"):
        F.pad(mg.tensor(np.zeros((2, 3, 4))), ((1, 1), (1, 1)))


def test_cast_converts_the_gradient_back(device):
    data = host((3,), seed=28, dtype=np.float32)
    x = leaf(data, device, np.float32)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(to_host(y.data), data.astype(np.float64))
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(to_host(x.grad.data), 2 * data, **TOL[np.float32])


# ----------------------------------------------------------------------------- matmul

MATMUL_CASES = {
    "2-d": ((3, 5), (5, 4)),
    "batched": ((2, 3, 5), (2, 5, 4)),
    "batched @ 2-d": ((2, 3, 5), (5, 4)),
    "2-d @ batched": ((3, 5), (2, 5, 4)),
    "broadcast batches": ((2, 1, 3, 5), (4, 5, 2)),
}


@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul_and_its_gradient(case, device, dtype):
    a_shape, b_shape = MATMUL_CASES[case]
    a_host, b_host = host(a_shape, seed=29), host(b_shape, seed=30)
    a, b = leaf(a_host, device, dtype), leaf(b_host, device, dtype)
    y = a @ b
    a_ref, b_ref = as_ref(a_host, dtype), as_ref(b_host, dtype)
    assert_matches(y, np.matmul(a_ref, b_ref), dtype)
    upstream = host(y.shape, seed=31)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    u = as_ref(upstream, dtype)
    # Every product of the batch adds to the gradient of the operand it shares (einsum spells out the sums).
    batch = y.shape[:-2]
    a_batched = np.broadcast_to(a_ref, (*batch, *a_shape[-2:]))
    b_batched = np.broadcast_to(b_ref, (*batch, *b_shape[-2:]))
    ga = np.einsum("...mn,...kn->...mk", u, b_batched)
    gb = np.einsum("...mk,...mn->...kn", a_batched, u)
    assert_matches(a.grad, summed_to(ga, a_shape), dtype)
    assert_matches(b.grad, summed_to(gb, b_shape), dtype)


def test_matmul_with_unfit_shapes_names_them():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) do not fit"):
        mg.tensor(np.zeros((3, 4))) @ mg.tensor(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"at least 2 dims.*\(4,\)"):
        mg.tensor(np.zeros(4)) @ mg.tensor(np.zeros((4, 2)))
