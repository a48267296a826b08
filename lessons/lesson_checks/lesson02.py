"""Checks of lesson 2: the learner's Linear and SoftmaxCrossEntropy Functions against minigrad's ops
(F.linear, F.cross_entropy) and against finite differences (mg.gradcheck), in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

import minigrad as mg
import minigrad.functional as F

from . import check_close, report


def _leaf(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> mg.Tensor:
    return mg.tensor(rng.standard_normal(shape) * scale, dtype="float64", requires_grad=True)


def _gradients(fn: Any, inputs: list[mg.Tensor], upstream: np.ndarray) -> list[np.ndarray]:
    for t in inputs:
        t.zero_grad()
    out = fn(*inputs)
    out.backward(mg.tensor(upstream, dtype="float64"))
    return [out.numpy()] + [t.grad.numpy() for t in inputs]


def _gradcheck_line(name: str, fn: Any, inputs: list[mg.Tensor]) -> None:
    result = mg.gradcheck(fn, *inputs, name=name)
    # gradcheck's relative error is per entry, so a small entry's few float64 ulps show; 1e-4 is its rtol
    report(f"{name} vs finite differences", result.max_rel_error, 1e-4)
    if not result.passed:
        print(result)
        raise AssertionError(f"{name}: gradcheck failed")


def check_linear(Linear: type) -> None:
    """Forward and backward of the learner's Linear equal F.linear's; gradcheck passes."""
    rng = np.random.default_rng(2)
    x, w, b = _leaf(rng, 5, 4), _leaf(rng, 3, 4), _leaf(rng, 3)
    upstream = rng.standard_normal((5, 3))
    got = _gradients(Linear.apply, [x, w, b], upstream)
    expected = _gradients(F.linear, [x, w, b], upstream)
    for name, g, e in zip(("y", "dx", "dw", "db"), got, expected):
        check_close(f"Linear {name} vs F.linear", g, e, 1e-12)
    _gradcheck_line("Linear", Linear.apply, [x, w, b])


def check_softmax_cross_entropy(SoftmaxCrossEntropy: type) -> None:
    """Loss and gradient equal F.cross_entropy's, gradcheck passes, and logits near 1000 do not overflow."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=6)
    logits = _leaf(rng, 6, 5, scale=3.0)
    upstream = np.array(rng.standard_normal())

    def ours(z: mg.Tensor) -> mg.Tensor:
        return SoftmaxCrossEntropy.apply(z, labels=labels)

    got = _gradients(ours, [logits], upstream)
    expected = _gradients(lambda z: F.cross_entropy(z, labels), [logits], upstream)
    check_close("cross-entropy loss vs F.cross_entropy", got[0], expected[0], 1e-12)
    check_close("cross-entropy dlogits vs F.cross_entropy", got[1], expected[1], 1e-12)
    _gradcheck_line("SoftmaxCrossEntropy", ours, [logits])
    shifted = mg.tensor(logits.numpy() + 1000.0, dtype="float64")
    with np.errstate(over="ignore", invalid="ignore"):
        big = ours(shifted).numpy()
    check_close("loss with logits + 1000 (must not overflow)", big, expected[0], 1e-12)
