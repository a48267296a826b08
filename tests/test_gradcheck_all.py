"""Every registered gradient check passes on every backend, and the checker itself catches wrong gradients.

`minigrad.checks.CHECKS` is the one registry of gradient checks (every op and every layer, small float64
inputs). The `minigrad gradcheck` command runs it; so does this file, on NumPy, on the strict CuPy
stand-in and on real CuPy, so the command and the tests can never disagree.

A checker that never fails proves nothing, so the second half shows `gradcheck` failing on a Function
whose backward is deliberately wrong, in both of its modes (element by element, and random directions
for inputs above `max_elements`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import strict_cupy
from conftest import to_host

import minigrad as mg
import minigrad.functional as F
from minigrad import backend, cli
from minigrad.checks import CHECKS, Check, run_check
from minigrad.gradcheck import format_table, gradcheck
from minigrad.tensor import Function, Tensor

# ----------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("name", list(CHECKS))
def test_registered_check_passes(name, device):
    report = run_check(name, device)
    assert report.inputs, f"check {name} compared no inputs"
    assert report.passed, report.table()


# Public names of minigrad.functional that need no check of their own, and why.
NOT_CHECKED = {
    "sum_to": "a helper on raw arrays (the backward of broadcasting), not an op",
    "permute": "an alias of transpose",
    "cast": "finite differences cannot cross a float32 round trip; its backward is tested in test_ops.py",
}


def checked_op(check_name: str) -> str | None:
    """The op a check is named after: the longest op name it equals or starts with plus '_' ("max_axis" ->
    max, "log_softmax" -> log_softmax, not log; "max_pool2d_padded" -> max_pool2d, not max)."""
    ops = [op for op in F.__all__ if check_name == op or check_name.startswith(op + "_")]
    return max(ops, key=len) if ops else None


def test_every_functional_op_has_a_registered_check():
    covered = {checked_op(name) for name in CHECKS}
    unchecked = [op for op in F.__all__ if op not in NOT_CHECKED and op not in covered]
    assert not unchecked, f"ops without a gradient check in minigrad/checks.py: {unchecked}"


def test_every_layer_has_a_registered_check():
    from minigrad import nn

    layers = [
        name
        for name, obj in vars(nn).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module
    ]
    missing = [name for name in layers if name not in CHECKS]
    assert not missing, f"layers without a gradient check in minigrad/checks.py: {missing}"


# ----------------------------------------------------------------------------- gradcheck itself


class Square(Function):
    """y = x * x, with the right gradient 2 x g."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return 2 * g * self.x


class SquareWrongGradient(Function):
    """y = x * x whose backward forgets the factor 2 (the slip gradcheck exists to catch)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x


def leaf(device, shape, seed=0, dtype=np.float64):
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(data, device=device, requires_grad=True)


def test_gradcheck_passes_a_correct_backward(device):
    report = gradcheck(Square.apply, leaf(device, (3, 4)), name="square")
    assert report.passed, report.table()
    assert report.inputs[0].mode == "elements"
    assert report.inputs[0].checked == 12


def test_gradcheck_fails_a_wrong_backward(device):
    report = gradcheck(SquareWrongGradient.apply, leaf(device, (3, 4)), name="square_wrong")
    assert not report.passed
    assert not report.inputs[0].passed
    # The analytic gradient is half the true one: the relative error is about 1/2.
    assert report.max_rel_error > 0.4


class SquareNaNGradient(Square):
    def backward(self, g):
        return 2 * g * self.x + float("nan")


def test_a_nan_gradient_fails_and_is_reported_as_nan_not_as_zero_error(device):
    report = gradcheck(SquareNaNGradient.apply, leaf(device, (4,)), name="square_nan")
    assert not report.passed
    assert math.isnan(report.max_rel_error)
    assert "nan" in report.table()


def test_gradcheck_checks_random_directions_above_max_elements(device):
    x = leaf(device, (20, 15))  # 300 entries > the default max_elements of 256
    report = gradcheck(Square.apply, x)
    check = report.inputs[0]
    assert check.mode == "directions"
    assert check.checked == 8  # the default n_directions
    assert report.passed, report.table()


def test_gradcheck_directions_also_catch_a_wrong_backward(device):
    report = gradcheck(SquareWrongGradient.apply, leaf(device, (4, 5)), max_elements=10, n_directions=3)
    assert report.inputs[0].mode == "directions"
    assert report.inputs[0].checked == 3
    assert not report.passed


def test_gradcheck_refuses_float32_inputs_naming_the_input():
    a = leaf("cpu", (2, 3))
    b = leaf("cpu", (2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match=r"input 1 of shape \(2, 3\) is float32"):
        gradcheck(F.mul, a, b)


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(F.exp, Tensor(np.ones(3)))


def test_gradcheck_leaves_the_inputs_as_they_were(device):
    x = leaf(device, (3, 3))
    before = to_host(x.data).copy()
    gradcheck(Square.apply, x)
    gradcheck(Square.apply, x, max_elements=1)
    np.testing.assert_array_equal(to_host(x.data), before)


def test_gradcheck_checks_only_inputs_that_require_grad():
    a = leaf("cpu", (2, 2))
    constant = Tensor(np.full((2, 2), 3.0))
    report = gradcheck(F.mul, a, constant)
    assert [c.index for c in report.inputs] == [0]
    assert report.passed, report.table()


def test_report_tables_say_pass_or_fail():
    good = gradcheck(Square.apply, leaf("cpu", (2,)), name="good")
    bad = gradcheck(SquareWrongGradient.apply, leaf("cpu", (2,)), name="bad")
    assert "gradcheck good: PASS" in good.table()
    assert "gradcheck bad: FAIL" in bad.table()
    assert str(bad) == bad.table()
    rows = format_table([good, bad], ["op", "op"]).splitlines()
    assert rows[2].startswith("good") and rows[2].endswith("PASS")
    assert rows[3].startswith("bad") and rows[3].endswith("FAIL")


# ----------------------------------------------------------------------------- the command


def test_cli_runs_one_check_and_prints_a_table(capsys):
    assert cli.main(["gradcheck", "--op", "add"]) == 0
    out = capsys.readouterr().out
    assert "gradient checks on cpu" in out
    assert any(line.startswith("add ") and line.endswith("PASS") for line in out.splitlines())
    assert "1 passed, 0 failed" in out


def test_cli_op_is_repeatable(capsys):
    assert cli.main(["gradcheck", "--op", "exp", "--op", "Linear"]) == 0
    assert "2 passed, 0 failed" in capsys.readouterr().out


def test_cli_list_names_every_check(capsys):
    assert cli.main(["gradcheck", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == list(CHECKS)


def test_cli_unknown_op_exits_2_naming_it(capsys):
    assert cli.main(["gradcheck", "--op", "no_such_op"]) == 2
    assert "no_such_op" in capsys.readouterr().err


def test_cli_exits_1_when_a_check_fails(monkeypatch, capsys):
    def build(device):
        return SquareWrongGradient.apply, (leaf(device, (2, 2)),)

    monkeypatch.setitem(CHECKS, "square_wrong", Check("square_wrong", "op", build))
    assert cli.main(["gradcheck", "--op", "square_wrong"]) == 1
    captured = capsys.readouterr()
    assert "0 passed, 1 failed" in captured.out
    assert "gradcheck square_wrong: FAIL" in captured.out  # the failing check's own table, on stdout with the rest


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is usable here")
def test_cli_device_gpu_without_a_gpu_exits_2_with_the_reason(capsys):
    assert cli.main(["gradcheck", "--device", "gpu", "--op", "add"]) == 2
    err = capsys.readouterr().err
    assert "no GPU is usable" in err
    assert backend.gpu_unavailable_reason() in err


def test_cli_device_gpu_runs_on_the_stand_in(capsys):
    with backend.use_gpu_module(strict_cupy):
        assert cli.main(["gradcheck", "--device", "gpu", "--op", "conv2d", "--op", "max_pool2d"]) == 0
    out = capsys.readouterr().out
    assert "gradient checks on cuda:0" in out
    assert "2 passed, 0 failed" in out


def test_gradcheck_refuses_a_non_leaf_input_and_says_how_to_fix_it():
    x = mg.tensor(np.ones((2, 2)), dtype=np.float64, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"detach\(\)\.requires_grad_\(\)"):
        mg.gradcheck(lambda x: x * x, x)


def test_a_tensor_names_its_creator():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    assert x.creator is None and type(y.creator).__name__ == "Mul" and y.creator.inputs[0] is x
