"""Tensor follows Python's protocols the way a PyTorch tensor does (truth value, numbers, formatting, ==).

Each runs on NumPy, on the strict CuPy stand-in and on real CuPy (skipped without a GPU): a protocol that
reaches the data must go through `.item()` or the array module, never through NumPy on device data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_host

import minigrad as mg


def test_truth_value_of_one_element_is_its_value(device):
    assert bool(mg.tensor([1.0], device=device) < 0) is False
    assert bool(mg.tensor([0.0], device=device)) is False
    assert bool(mg.tensor(2.0, device=device)) is True
    taken = "negative" if mg.tensor([-1.0], device=device) < 0 else "not negative"
    assert taken == "negative"


def test_truth_value_of_several_elements_is_an_error_that_says_why(device):
    with pytest.raises(ValueError, match=r"ambiguous.*any\(\).*all\(\)"):
        bool(mg.tensor([1.0, 2.0], device=device))
    assert bool((mg.tensor([1.0, 2.0], device=device) > 0).all())
    assert not bool((mg.tensor([1.0, 2.0], device=device) > 1.5).all())
    assert bool((mg.tensor([1.0, 2.0], device=device) > 1.5).any())


def test_a_zero_d_loss_is_usable_as_a_number(device):
    loss = mg.tensor(0.6931472, device=device)
    best = mg.tensor(0.8, device=device)
    assert float(loss) == pytest.approx(0.6931472)
    assert int(mg.tensor(3.9, device=device)) == 3
    assert f"{loss:.3f}" == "0.693"
    assert loss < best  # a comparison used as a condition
    assert max(loss, best) is best
    assert math.isclose(float(round(loss, 3)), 0.693, rel_tol=1e-6)


def test_round_is_elementwise_and_outside_the_graph(device):
    x = mg.tensor([1.26, -0.54], device=device, requires_grad=True)
    rounded = round(x, 1)
    np.testing.assert_allclose(to_host(rounded.data), [1.3, -0.5], rtol=1e-6)
    assert not rounded.requires_grad


def test_index_works_only_for_one_integer_element(device):
    items = ["a", "b", "c"]
    assert items[mg.tensor(2, device=device)] == "c"
    assert list(range(mg.tensor(2, device=device))) == [0, 1]
    with pytest.raises(TypeError, match="only integer tensors"):
        items[mg.tensor(1.0, device=device)]


def test_equality_is_elementwise_and_tensors_stay_hashable(device):
    a = mg.tensor([1.0, 2.0, 3.0], device=device)
    b = mg.tensor([1.0, 0.0, 3.0], device=device)
    assert to_host((a == b).data).tolist() == [True, False, True]
    assert to_host((a != b).data).tolist() == [False, True, False]
    assert to_host((a == 2.0).data).tolist() == [False, True, False]
    assert (a == b).dtype == np.bool_
    table = {a: "a", b: "b"}  # hashing by identity: equal-valued tensors are still different keys
    assert table[a] == "a" and len({a, mg.tensor([1.0, 2.0, 3.0], device=device)}) == 2


def test_format_without_a_spec_is_the_repr_for_any_size(device):
    x = mg.tensor([1.0, 2.0], device=device)
    assert f"{x}" == repr(x)
    with pytest.raises(ValueError, match="formatting of a tensor with 2 elements"):
        f"{x:.2f}"


def test_tolist_and_len(device):
    x = mg.tensor([[1, 2], [3, 4]], device=device)
    assert x.tolist() == [[1, 2], [3, 4]]
    assert mg.tensor(5, device=device).tolist() == 5
    assert len(x) == 2
    with pytest.raises(TypeError, match="0-d"):
        len(mg.tensor(1.0, device=device))


def test_view_squeeze_unsqueeze_and_flatten_as_in_pytorch(device):
    x = mg.randn(2, 3, 4, device=device)
    assert x.view(6, 4).shape == (6, 4) and x.view((4, 6)).shape == (4, 6)
    assert x.flatten().shape == (24,)
    assert mg.randn((4,), device=device).flatten().shape == (4,)
    assert x.flatten(1).shape == (2, 12)
    assert x.unsqueeze(0).shape == (1, 2, 3, 4) and x.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert x.unsqueeze(1).squeeze().shape == (2, 3, 4)
    assert x.unsqueeze(1).squeeze(1).shape == (2, 3, 4)
    with pytest.raises(IndexError, match="start_dim=3 is out of range"):
        x.flatten(3)


def test_argmax_numel_dim(device):
    x = mg.tensor([[0.1, 0.9, 0.0], [0.7, 0.2, 0.1]], device=device)
    assert x.argmax(1).tolist() == [1, 0]
    assert int(x.argmax()) == 1
    assert x.numel() == 6 and x.dim() == 2


@pytest.mark.parametrize("factory", [mg.zeros, mg.ones, mg.randn, mg.rand])
def test_factories_take_a_shape_as_one_tuple_or_as_several_ints(factory, device):
    assert factory(2, 3, device=device).shape == (2, 3)
    assert factory((2, 3), device=device).shape == (2, 3)
    assert factory([4], device=device).shape == (4,)
    assert factory(2, 3, device=device).dtype == np.float32
    assert factory(2, dtype="float64", device=device).dtype == np.float64
    with pytest.raises(TypeError, match="a shape is non-negative ints"):
        factory(2.5, device=device)
