"""Elementwise, reduction, shape and matmul ops.

Each op is a `Function` subclass (forward/backward on raw arrays) and a lowercase
function that users call. Arrays' module comes from the arrays themselves
(`get_array_module`), so the same code runs on NumPy and CuPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minigrad import backend
from minigrad.backend import get_array_module
from minigrad.kernels.matmul_cpu import matmul2d
from minigrad.tensor import Array, Function, Tensor

Axis = int | Sequence[int] | None


# ----------------------------------------------------------------------------- helpers


def sum_to(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum a broadcast gradient back down to `shape` (the inverse of broadcasting)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    out = grad.sum(axis=axes, keepdims=True)
    if lead:
        out = out.reshape(shape)
    return out


def _normalize_axes(axis: Axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def _check_binary(name: str, a: Any, b: Any) -> None:
    """A clear error for shapes that don't broadcast (mixed float dtypes are refused by `Function.apply`)."""

    def array_like(v: Any) -> bool:  # NumPy scalars act like Python numbers: cast to the tensor's dtype
        return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.generic)

    if array_like(a) and array_like(b):
        shape_a, shape_b = tuple(a.shape), tuple(b.shape)
        try:
            np.broadcast_shapes(shape_a, shape_b)
        except ValueError:
            raise ValueError(f"{name}: shapes {shape_a} and {shape_b} do not broadcast") from None


# ----------------------------------------------------------------------------- elementwise binary


class Add(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g: Array) -> tuple[Array, Array]:
        return sum_to(g, self.shapes[0]), sum_to(g, self.shapes[1])


class Sub(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g: Array) -> tuple[Array, Array]:
        return sum_to(g, self.shapes[0]), sum_to(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a * b

    def backward(self, g: Array) -> tuple[Array | None, Array | None]:
        need_a, need_b = self.needs_input_grad
        ga = sum_to(g * self.b, self.a.shape) if need_a else None
        gb = sum_to(g * self.a, self.b.shape) if need_b else None
        return ga, gb


class Div(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a / b

    def backward(self, g: Array) -> tuple[Array | None, Array | None]:
        need_a, need_b = self.needs_input_grad
        ga = sum_to(g / self.b, self.a.shape) if need_a else None
        gb = sum_to(-g * self.a / (self.b * self.b), self.b.shape) if need_b else None
        return ga, gb


class Maximum(Function):
    """Elementwise max; on ties the gradient goes to the first argument."""

    def forward(self, a: Array, b: Array) -> Array:
        xp = get_array_module(a, b)
        self.a_wins = a >= b
        self.shapes = (a.shape, b.shape)
        return xp.maximum(a, b)

    def backward(self, g: Array) -> tuple[Array, Array]:
        zero = g.dtype.type(0)
        xp = get_array_module(g)
        return (
            sum_to(xp.where(self.a_wins, g, zero), self.shapes[0]),
            sum_to(xp.where(self.a_wins, zero, g), self.shapes[1]),
        )


class Where(Function):
    """`cond ? a : b`; `cond` is a constant boolean array."""

    def forward(self, a: Array, b: Array) -> Array:
        xp = get_array_module(a, b)
        self.shapes = (a.shape, b.shape)
        return xp.where(self.cond, a, b)

    def backward(self, g: Array) -> tuple[Array, Array]:
        xp = get_array_module(g)
        zero = g.dtype.type(0)
        return (
            sum_to(xp.where(self.cond, g, zero), self.shapes[0]),
            sum_to(xp.where(self.cond, zero, g), self.shapes[1]),
        )


def _binary(cls: type[Function], name: str, a: Any, b: Any) -> Tensor:
    _check_binary(name, a, b)
    return cls.apply(a, b)


def add(a: Any, b: Any) -> Tensor:
    """a + b with broadcasting."""
    return _binary(Add, "add", a, b)


def sub(a: Any, b: Any) -> Tensor:
    """a - b with broadcasting."""
    return _binary(Sub, "sub", a, b)


def mul(a: Any, b: Any) -> Tensor:
    """a * b with broadcasting."""
    return _binary(Mul, "mul", a, b)


def div(a: Any, b: Any) -> Tensor:
    """a / b with broadcasting. Integers divide into the default float dtype (float32), never float64."""
    if not any(_is_floating(v) for v in (a, b)):
        a = cast(a, backend.DEFAULT_DTYPE) if isinstance(a, Tensor) else a
        b = cast(b, backend.DEFAULT_DTYPE) if isinstance(b, Tensor) else b
    return _binary(Div, "div", a, b)


def _is_floating(value: Any) -> bool:
    """A float tensor, array or number (whose dtype decides the result's)."""
    dtype = getattr(value, "dtype", None)
    return isinstance(value, float) if dtype is None else np.dtype(dtype).kind == "f"


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum with broadcasting (ties send the gradient to `a`)."""
    return _binary(Maximum, "maximum", a, b)


def where(cond: Tensor | Array, a: Any, b: Any) -> Tensor:
    """Elementwise `a` where `cond` is true, else `b`. `cond` gets no gradient."""
    _check_binary("where", a, b)
    like = a if isinstance(a, Tensor) else b
    cond_data = cond.data if isinstance(cond, Tensor) else cond
    if isinstance(like, Tensor):
        cond_data = like.xp.asarray(cond_data)  # a host mask for device tensors is copied over explicitly
    return Where.apply(a, b, cond=cond_data)


# ----------------------------------------------------------------------------- elementwise unary


class Neg(Function):
    def forward(self, x: Array) -> Array:
        return -x

    def backward(self, g: Array) -> Array:
        return -g


class Pow(Function):
    """x ** p for a constant scalar exponent p."""

    def forward(self, x: Array) -> Array:
        self.x = x
        return x**self.p

    def backward(self, g: Array) -> Array:
        if self.p == 0:  # x ** 0 is constant; p * x ** -1 would be 0 * inf = nan at x == 0
            return get_array_module(g).zeros_like(g)
        return g * (self.p * self.x ** (self.p - 1))


class Exp(Function):
    def forward(self, x: Array) -> Array:
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, g: Array) -> Array:
        return g * self.y


class Log(Function):
    def forward(self, x: Array) -> Array:
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g: Array) -> Array:
        return g / self.x


class Sqrt(Function):
    def forward(self, x: Array) -> Array:
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g: Array) -> Array:
        return g / (2 * self.y)


class ReLU(Function):
    def forward(self, x: Array) -> Array:
        self.positive = x > 0
        return get_array_module(x).maximum(x, x.dtype.type(0))

    def backward(self, g: Array) -> Array:
        return g * self.positive


class Tanh(Function):
    def forward(self, x: Array) -> Array:
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, g: Array) -> Array:
        return g * (1 - self.y * self.y)


class Sigmoid(Function):
    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
        self.y = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.y

    def backward(self, g: Array) -> Array:
        return g * self.y * (1 - self.y)


class Cast(Function):
    def forward(self, x: Array) -> Array:
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, g: Array) -> Array:
        return g.astype(self.source)


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def pow(x: Tensor, p: float) -> Tensor:
    """x ** p for a Python number p."""
    if isinstance(p, Tensor):
        raise TypeError("pow: the exponent must be a Python number, not a Tensor")
    if isinstance(p, np.generic):  # a NumPy float64 scalar would silently promote float32 data
        p = p.item()
    return Pow.apply(x, p=p)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


def relu(x: Tensor) -> Tensor:
    """max(x, 0); the gradient at exactly 0 is 0."""
    return ReLU.apply(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def cast(x: Tensor, dtype: Any) -> Tensor:
    """x converted to `dtype`; the gradient is converted back."""
    return Cast.apply(x, dtype=np.dtype(dtype))


# ----------------------------------------------------------------------------- reductions


class Sum(Function):
    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        self.axes = _normalize_axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g: Array) -> Array:
        xp = get_array_module(g)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axes) if self.axes else g
        return xp.broadcast_to(g, self.shape).copy()


class Mean(Function):
    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        self.axes = _normalize_axes(self.axis, x.ndim)
        self.count = int(np.prod([x.shape[a] for a in self.axes]))
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g: Array) -> Array:
        xp = get_array_module(g)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axes) if self.axes else g
        return xp.broadcast_to(g / g.dtype.type(self.count), self.shape).copy()


class Max(Function):
    """Maximum over axes. Ties share the gradient equally (so it is a true subgradient average)."""

    def forward(self, x: Array) -> Array:
        self.axes = _normalize_axes(self.axis, x.ndim)
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = x == y
        return y if self.keepdims else y.squeeze(axis=self.axes)

    def backward(self, g: Array) -> Array:
        xp = get_array_module(g)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axes)
        count = self.mask.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        return self.mask * (g / count)


def sum(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Sum over `axis` (all axes when None)."""
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over `axis` (all axes when None). The mean of integers is float32 (the default float dtype)."""
    if isinstance(x, Tensor) and not _is_floating(x):
        x = cast(x, backend.DEFAULT_DTYPE)
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over `axis` (all axes when None); tied maxima share the gradient."""
    return Max.apply(x, axis=axis, keepdims=keepdims)


# ----------------------------------------------------------------------------- shape


class Reshape(Function):
    def forward(self, x: Array) -> Array:
        self.source = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {tuple(x.shape)} into {tuple(self.shape)}") from None

    def backward(self, g: Array) -> Array:
        return g.reshape(self.source)


class Transpose(Function):
    def forward(self, x: Array) -> Array:
        self.perm = tuple(range(x.ndim))[::-1] if self.axes is None else tuple(a % x.ndim for a in self.axes)
        if sorted(self.perm) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation of a {x.ndim}-d tensor's axes")
        return x.transpose(self.perm)

    def backward(self, g: Array) -> Array:
        inverse = tuple(int(i) for i in np.argsort(self.perm))
        return g.transpose(inverse)


def _is_basic_index(index: tuple) -> bool:
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index)


class GetItem(Function):
    """x[index] for slices, integers and integer arrays. Backward scatters with add."""

    def forward(self, x: Array) -> Array:
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g: Array) -> Array:
        xp = get_array_module(g)
        dx = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            dx[self.index] = g  # basic indexing never selects an element twice
        else:
            backend.scatter_add(dx, self.index, g)  # integer arrays may repeat an element
        return dx


def reshape(x: Tensor, shape: Sequence[int]) -> Tensor:
    """x with a new shape (one entry may be -1)."""
    return Reshape.apply(x, shape=tuple(shape))


def transpose(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them when `axes` is None)."""
    return Transpose.apply(x, axes=None if axes is None else tuple(axes))


def permute(x: Tensor, axes: Sequence[int]) -> Tensor:
    return transpose(x, axes)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge the axes `start_dim..end_dim` (both included) into one, as `torch.flatten`.

    By default everything: (N, C, H, W) -> (N*C*H*W,); `flatten(x, 1)` gives (N, C*H*W). A 0-d x gives (1,).
    """
    if x.ndim == 0:
        return reshape(x, (1,))
    start, end = (_axis_index(d, x.ndim, name) for d, name in ((start_dim, "start_dim"), (end_dim, "end_dim")))
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    merged = math.prod(x.shape[start : end + 1])
    return reshape(x, (*x.shape[:start], merged, *x.shape[end + 1 :]))


def _axis_index(axis: int, ndim: int, name: str) -> int:
    """A possibly negative axis as an index into a shape of `ndim` axes; an error that names it otherwise."""
    if not -ndim <= axis < ndim:
        raise IndexError(f"{name}={axis} is out of range for a tensor with {ndim} axes")
    return axis % ndim


def getitem(x: Tensor, index: Any) -> Tensor:
    """x[index]; index arrays (lists, NumPy arrays, Tensors) are moved to x's device."""
    if not isinstance(index, tuple):
        index = (index,)
    xp = x.xp
    parts = []
    for i in index:
        if isinstance(i, Tensor):
            i = i.data
        if isinstance(i, (list, np.ndarray)) or backend.is_gpu_array(i):
            i = xp.asarray(i)
        parts.append(i)
    return GetItem.apply(x, index=tuple(parts))


class Concatenate(Function):
    def forward(self, *xs: Array) -> Array:
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, g: Array) -> tuple[Array, ...]:
        bounds = np.cumsum(self.sizes)[:-1]
        xp = get_array_module(g)
        return tuple(xp.split(g, [int(b) for b in bounds], axis=self.axis))


class Stack(Function):
    def forward(self, *xs: Array) -> Array:
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, g: Array) -> tuple[Array, ...]:
        xp = get_array_module(g)
        return tuple(xp.take(g, i, axis=self.axis) for i in range(g.shape[self.axis]))


class Pad(Function):
    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(self.pad_width, x.shape))
        return xp.pad(x, self.pad_width, mode="constant", constant_values=self.value)

    def backward(self, g: Array) -> Array:
        return g[self.slices]


def _same_shapes_but(name: str, tensors: Sequence[Tensor], axis: int | None) -> None:
    first = tensors[0].shape
    for t in tensors[1:]:
        a = list(first)
        b = list(t.shape)
        if axis is not None and len(a) == len(b):
            a.pop(axis % len(a))
            b.pop(axis % len(b))
        if a != b:
            raise ValueError(f"{name}: shapes {first} and {t.shape} do not match")


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    _same_shapes_but("concatenate", tensors, axis)
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    _same_shapes_but("stack", tensors, None)
    return Stack.apply(*tensors, axis=axis)


def pad(x: Tensor, pad_width: Sequence[tuple[int, int]], value: float = 0.0) -> Tensor:
    """Constant padding: `pad_width` gives (before, after) for every axis."""
    pad_width = tuple((int(lo), int(hi)) for lo, hi in pad_width)
    if len(pad_width) != x.ndim:
        raise ValueError(f"pad: pad_width has {len(pad_width)} entries for a {x.ndim}-d tensor of shape {x.shape}")
    return Pad.apply(x, pad_width=pad_width, value=value)


# ----------------------------------------------------------------------------- matmul


class MatMul(Function):
    """a @ b for 2-D matrices and batches of them (leading axes broadcast).

    Each product `p @ q` is written `_product(p, q)`: the same product, which two large NumPy matrices get
    on all CPU cores (minigrad/kernels/matmul_cpu.py).
    """

    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return _product(a, b)

    def backward(self, g: Array) -> tuple[Array | None, Array | None]:
        need_a, need_b = self.needs_input_grad
        ga = sum_to(_product(g, self.b.swapaxes(-1, -2)), self.a.shape) if need_a else None
        gb = sum_to(_product(self.a.swapaxes(-1, -2), g), self.b.shape) if need_b else None
        return ga, gb


def _product(p: Array, q: Array) -> Array:
    """p @ q; two matrices through `matmul2d` (all CPU cores for large NumPy ones)."""
    return matmul2d(p, q) if p.ndim == 2 and q.ndim == 2 else p @ q


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a: (..., M, K) @ b: (..., K, N) -> (..., M, N)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs tensors with at least 2 dims, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit (inner sizes differ)")
    return MatMul.apply(a, b)
