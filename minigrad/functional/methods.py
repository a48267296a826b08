"""Tensor's operators and methods (`a + b`, `a @ b`, `x[i]`, `x.sum()`, `x.reshape(...)`), as the ops they are.

`tensor.py` defines Tensor without importing any op (the ops import it), and `minigrad.functional`
calls `install_tensor_methods` once when it is imported, so `minigrad.Tensor` has its operators as soon as
`import minigrad` returns. Each method here is one line: the op it stands for is in basic.py or loss.py.
A few methods that are not differentiable (`argmax`, `any`, `all`) return tensors outside the graph.
May import: `minigrad.tensor`, the op modules of this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigrad.functional import basic as B
from minigrad.tensor import Tensor

Axis = int | Sequence[int] | None


def _shape_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`x.reshape(2, 3)` and `x.reshape((2, 3))` (NumPy's and PyTorch's styles) name the same shape."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return args


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return B.reshape(self, _shape_args(shape))


def _transpose(self: Tensor, *axes: Any) -> Tensor:
    return B.transpose(self, _shape_args(axes) or None)


def _squeeze(self: Tensor, axis: int | None = None) -> Tensor:
    """Drop axes of length 1 (only `axis` when given)."""
    if axis is None:
        return B.reshape(self, tuple(n for n in self.shape if n != 1))
    axis %= self.ndim
    if self.shape[axis] != 1:
        return self
    return B.reshape(self, self.shape[:axis] + self.shape[axis + 1 :])


def _unsqueeze(self: Tensor, axis: int) -> Tensor:
    """A new axis of length 1 at `axis` (negative counts from the end of the new shape)."""
    axis %= self.ndim + 1
    return B.reshape(self, (*self.shape[:axis], 1, *self.shape[axis:]))


def _argmax(self: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the largest value (over everything, or along `axis`); int64, not in the graph."""
    return Tensor(self.xp.argmax(self.data, axis=axis, keepdims=keepdims).astype("int64"))


def _any(self: Tensor, axis: Axis = None) -> Tensor:
    return Tensor(self.xp.any(self.data, axis=axis))


def _all(self: Tensor, axis: Axis = None) -> Tensor:
    return Tensor(self.xp.all(self.data, axis=axis))


OPERATORS = {
    "__add__": lambda self, other: B.add(self, other),
    "__radd__": lambda self, other: B.add(other, self),
    "__sub__": lambda self, other: B.sub(self, other),
    "__rsub__": lambda self, other: B.sub(other, self),
    "__mul__": lambda self, other: B.mul(self, other),
    "__rmul__": lambda self, other: B.mul(other, self),
    "__truediv__": lambda self, other: B.div(self, other),
    "__rtruediv__": lambda self, other: B.div(other, self),
    "__neg__": lambda self: B.neg(self),
    "__pow__": lambda self, exponent: B.pow(self, exponent),
    "__matmul__": lambda self, other: B.matmul(self, other),
    "__rmatmul__": lambda self, other: B.matmul(other, self),
    "__getitem__": lambda self, index: B.getitem(self, index),
}

METHODS = {
    "sum": lambda self, axis=None, keepdims=False: B.sum(self, axis, keepdims),
    "mean": lambda self, axis=None, keepdims=False: B.mean(self, axis, keepdims),
    "max": lambda self, axis=None, keepdims=False: B.max(self, axis, keepdims),
    "reshape": _reshape,
    "view": lambda self, *shape: _reshape(self, *shape),  # PyTorch's name; here it may copy when NumPy must
    "transpose": _transpose,
    "permute": lambda self, *axes: _transpose(self, *axes),
    "flatten": lambda self, start_dim=0, end_dim=-1: B.flatten(self, start_dim, end_dim),
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "exp": lambda self: B.exp(self),
    "log": lambda self: B.log(self),
    "sqrt": lambda self: B.sqrt(self),
    "relu": lambda self: B.relu(self),
    "tanh": lambda self: B.tanh(self),
    "sigmoid": lambda self: B.sigmoid(self),
    "astype": lambda self, dtype: B.cast(self, dtype),
    "argmax": _argmax,
    "any": _any,
    "all": _all,
}


def install_tensor_methods() -> None:
    """Give Tensor its operators, its method forms of common ops and `.T`."""
    for name, fn in {**OPERATORS, **METHODS}.items():
        fn.__name__, fn.__qualname__ = name, f"Tensor.{name}"
        setattr(Tensor, name, fn)
    Tensor.T = property(lambda self: B.transpose(self, None), doc="The axes reversed (a transpose for 2-D).")
