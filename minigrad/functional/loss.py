"""Linear layers' op, softmax, log-softmax and cross-entropy."""

from __future__ import annotations

from typing import Any

from minigrad.backend import get_array_module
from minigrad.kernels.matmul_cpu import matmul2d
from minigrad.tensor import Array, Function, Tensor


class Linear(Function):
    """y = x @ w.T + b, with each gradient computed directly in its parameter's layout.

    (Composing matmul and transpose would hand back dW as a transposed view of a (in, out) array,
    and an optimizer updating through such a view strides across memory instead of streaming through it.)
    Each product `p @ q` is written `matmul2d(p, q)`: the same product, which large NumPy operands get on
    all CPU cores (minigrad/kernels/matmul_cpu.py).
    """

    def forward(self, x: Array, w: Array, b: Array | None = None) -> Array:
        self.x, self.w = x, w
        y = matmul2d(x, w.T)  # x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, grad: Array) -> tuple[Array | None, ...]:
        need = self.needs_input_grad
        dx = matmul2d(grad, self.w) if need[0] else None  # grad @ w
        dw = matmul2d(grad.T, self.x) if need[1] else None  # grad.T @ x: (out, N) @ (N, in), C-contiguous like w
        if len(need) == 3:
            return dx, dw, grad.sum(axis=0) if need[2] else None
        return dx, dw


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x: (N, in) @ weight.T (weight: (out, in)) + bias: (out,) -> (N, out)."""
    if x.ndim != 2 or weight.ndim != 2:
        raise ValueError(f"linear expects x (N, in) and weight (out, in), got shapes {x.shape} and {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[1]} features but weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    dtypes = {x.dtype, weight.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        raise TypeError(f"linear: dtypes differ ({', '.join(sorted(map(str, dtypes)))}); convert with .astype(...)")
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


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
    if labels.size == 0:
        raise ValueError("cross_entropy: the batch is empty (logits of shape (0, K)): the mean loss is undefined")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise ValueError(f"cross_entropy: labels must be in [0, {k}), found values in [{low}, {high}]")
    return CrossEntropy.apply(logits, labels=labels)
