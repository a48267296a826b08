"""Linear layers' op, softmax, log-softmax and cross-entropy."""

from __future__ import annotations

from typing import Any

from minigrad.backend import get_array_module
from minigrad.functional.basic import add, matmul, transpose
from minigrad.tensor import Array, Function, Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x: (N, in) @ weight.T (weight: (out, in)) + bias: (out,) -> (N, out)."""
    if x.ndim != 2 or weight.ndim != 2:
        raise ValueError(f"linear expects x (N, in) and weight (out, in), got shapes {x.shape} and {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[1]} features but weight {weight.shape} expects {weight.shape[1]}")
    y = matmul(x, transpose(weight))
    return y if bias is None else add(y, bias)


def _log_softmax(x: Array, axis: int) -> Array:
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)  # exp never overflows
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x: Array) -> Array:
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, grad: Array) -> Array:
        xp = get_array_module(grad)
        return grad - xp.exp(self.y) * grad.sum(axis=self.axis, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) computed stably (the max is subtracted first)."""
    return LogSoftmax.apply(x, axis=axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(log_softmax(x)): probabilities along `axis`."""
    return log_softmax(x, axis).exp()


class CrossEntropy(Function):
    def forward(self, logits: Array) -> Array:
        xp = get_array_module(logits)
        n = logits.shape[0]
        self.logp = _log_softmax(logits, 1)
        rows = xp.arange(n)
        return -self.logp[rows, self.labels].mean()

    def backward(self, grad: Array) -> Array:
        xp = get_array_module(grad)
        n = self.logp.shape[0]
        d = xp.exp(self.logp)  # softmax
        d[xp.arange(n), self.labels] -= 1
        return d * (grad / grad.dtype.type(n))


def cross_entropy(logits: Tensor, labels: Any) -> Tensor:
    """Mean negative log-likelihood of integer `labels` under softmax(logits).

    logits: (N, K) float, labels: (N,) integers in [0, K). Returns a scalar tensor.
    """
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, K), got shape {logits.shape}")
    xp = logits.xp
    labels = labels.data if isinstance(labels, Tensor) else labels
    labels = xp.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got {labels.dtype}")
    k = logits.shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise ValueError(f"cross_entropy: labels must be in [0, {k}), found values in [{low}, {high}]")
    return CrossEntropy.apply(logits, labels=labels)
