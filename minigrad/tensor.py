"""Tensor, Function, and the reverse-mode graph walk.

A `Tensor` wraps one array (NumPy or CuPy). Every differentiable operation is a
`Function` subclass with two methods on raw arrays:

    forward(*arrays)  -> array
    backward(grad)    -> one gradient per input (or None where no gradient is needed)

`Function.apply(*inputs)` runs `forward` and, when gradients are wanted, records
the function as the output's creator. `Tensor.backward()` then sorts the recorded
graph topologically (iteratively, so long chains don't hit Python's recursion
limit) and calls each creator's `backward` once, from the output to the leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from minigrad import backend
from minigrad.backend import Device

Array = Any  # numpy.ndarray or cupy.ndarray

_grad_enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside this block no graph is recorded (evaluation, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Record the graph again inside a `no_grad` block."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, True
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def _is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f"  # (np.issubdtype says the same, several times slower: this runs per op)


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    Args:
        data: an array (NumPy or CuPy; its dtype is kept), a nested list or a number
            (floats become float32, integers int64).
        requires_grad: accumulate gradients into `.grad` on `backward()`. Floating dtypes only.
        dtype: convert the data to this dtype.
        device: move the data to this device ('cpu', 'gpu', 'cuda:N').
    """

    # Makes `numpy_array * tensor` call Tensor.__rmul__ instead of NumPy's broadcasting.
    __array_priority__ = 1000

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        device: str | Device | None = None,
    ) -> None:
        if isinstance(data, Tensor):
            data = data.data
        xp = backend.get_array_module(data)
        if not isinstance(data, xp.ndarray):
            # NumPy scalars (what NumPy reductions return) keep their dtype; Python numbers and lists get defaults.
            typed = isinstance(data, np.generic)
            data = np.asarray(data)
            if dtype is None and not typed:
                if data.dtype.kind == "f":
                    dtype = backend.DEFAULT_DTYPE
                elif data.dtype.kind in "iu":
                    dtype = np.int64
        if dtype is not None and data.dtype != np.dtype(dtype):
            data = data.astype(dtype)
        if device is not None:
            data = backend.to_device(data, device)
        self.data: Array = data
        self.grad: Tensor | None = None
        self._ctx: Function | None = None
        self._freed = False  # True once backward() released the op that made this tensor
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> Device:
        return backend.device_of(self.data)

    @property
    def xp(self) -> Any:
        """The array module of the data (numpy or cupy)."""
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def creator(self) -> Function | None:
        """The op that computed this tensor (its `inputs` lead further back); None for a leaf."""
        return self._ctx

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="Tensor(")
        extra = f", dtype={self.dtype}, device={self.device}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    # -------------------------------------------------------------- conversion
    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
        self.requires_grad = flag
        return self

    def to(self, device: str | Device) -> Tensor:
        """This tensor on `device` (itself when already there). The copy is a new leaf."""
        device = Device(device)
        if device == self.device:
            return self
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.data)

    def item(self) -> float | int | bool:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype: Any) -> Tensor:
        from minigrad.functional import cast

        return cast(self, dtype)

    def zero_grad(self) -> None:
        self.grad = None

    # -------------------------------------------------------------- autograd
    def backward(self, grad: Tensor | Array | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`.

        Args:
            grad: the upstream gradient, same shape as self. May be omitted for a one-element tensor.
            retain_graph: keep the graph so backward can run through it again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without grad works only on a one-element tensor; this one has shape {self.shape}. "
                    "Pass grad= with the same shape, or reduce it first (e.g. .sum())."
                )
            grad_data = self.xp.ones_like(self.data)
        else:
            grad_data = grad.data if isinstance(grad, Tensor) else grad
            if tuple(grad_data.shape) != self.shape:
                raise ValueError(f"grad has shape {tuple(grad_data.shape)} but the tensor has shape {self.shape}")
            if backend.device_of(grad_data) != self.device:
                raise ValueError(f"grad is on {backend.device_of(grad_data)} but the tensor is on {self.device}")
            if grad_data.dtype != self.dtype:  # np.ones(shape) is float64: every op would then make float64 too
                raise TypeError(
                    f"grad has dtype {grad_data.dtype} but the tensor is {self.dtype}; pass grad.astype({self.dtype})"
                )

        grads: dict[int, Array] = {id(self): grad_data}
        # Arrays that someone else holds: the caller's `grad`, and what earlier leaves got. An op may pass a
        # gradient on unchanged or as a view (Add hands the same g to both inputs, reshape a view of it), so
        # a leaf whose gradient shares memory with one of these gets a copy: changing one leaf's .grad in
        # place (clipping, scaling) must not change another's, nor the caller's array.
        held = _HeldMemory()
        if grad is not None:
            held.add(grad_data)
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._ctx
            if node._freed:
                raise RuntimeError(
                    "backward() reached a tensor whose graph an earlier backward() already freed; "
                    "pass retain_graph=True to the first backward() to go through the graph twice"
                )
            if fn is None:  # a leaf: accumulate
                if node.grad is not None:
                    node.grad = Tensor(node.grad.data + g)
                    continue
                if held.shares_memory(g):
                    g = g.copy()
                held.add(g)
                node.grad = Tensor(g)
                continue
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(fn.inputs):
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned {len(input_grads)} gradients for {len(fn.inputs)} inputs"
                )
            for inp, ig in zip(fn.inputs, input_grads):
                if ig is None or not inp.requires_grad:
                    continue
                if tuple(ig.shape) != inp.shape:
                    raise RuntimeError(
                        f"{type(fn).__name__}.backward gave a gradient of shape {tuple(ig.shape)} "
                        f"for an input of shape {inp.shape}"
                    )
                if backend.is_gpu_array(ig) != backend.is_gpu_array(inp.data):
                    raise RuntimeError(
                        f"{type(fn).__name__}.backward gave a gradient on {backend.device_of(ig)} "
                        f"for an input on {inp.device}"
                    )
                previous = grads.get(id(inp))
                grads[id(inp)] = ig if previous is None else previous + ig
            if not retain_graph:
                node._ctx = None
                node._freed = True
                fn.inputs = ()
                fn.release()

    # -------------------------------------------------------------- operators (defined in functional)
    def __add__(self, other: Any) -> Tensor:
        return _F.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _F.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _F.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _F.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _F.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _F.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _F.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _F.div(other, self)

    def __neg__(self) -> Tensor:
        return _F.neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return _F.pow(self, exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return _F.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _F.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return _F.getitem(self, index)

    # Comparisons give boolean tensors with no graph (useful for masks and accuracy).
    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _raw(other, self))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _raw(other, self))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _raw(other, self))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _raw(other, self))

    # Tensors hash by identity (they are graph nodes), so == is not overloaded.
    __hash__ = object.__hash__

    # -------------------------------------------------------------- method forms of common ops
    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return _F.sum(self, axis, keepdims)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return _F.mean(self, axis, keepdims)

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        return _F.max(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _F.reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _F.transpose(self, axes or None)

    def permute(self, *axes: int) -> Tensor:
        return self.transpose(*axes)

    @property
    def T(self) -> Tensor:
        return _F.transpose(self, None)

    def flatten(self, start_dim: int = 1) -> Tensor:
        return _F.flatten(self, start_dim)

    def exp(self) -> Tensor:
        return _F.exp(self)

    def log(self) -> Tensor:
        return _F.log(self)

    def sqrt(self) -> Tensor:
        return _F.sqrt(self)

    def relu(self) -> Tensor:
        return _F.relu(self)

    def tanh(self) -> Tensor:
        return _F.tanh(self)

    def sigmoid(self) -> Tensor:
        return _F.sigmoid(self)


class _HeldMemory:
    """The memory of arrays already handed out as gradients (or given by the caller), for `backward`.

    NumPy arrays are found by the object that owns their memory (the end of the `.base` chain of a view),
    in a set: constant time per leaf, so a graph with thousands of scalar leaves stays fast. Other arrays
    (CuPy's; models there have few leaves) are compared with `may_share_memory`.
    """

    def __init__(self) -> None:
        self.owners: set[int] = set()
        self.others: list[Array] = []

    @staticmethod
    def _owner(array: np.ndarray) -> Any:
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array

    def add(self, array: Array) -> None:
        if isinstance(array, np.ndarray):
            self.owners.add(id(self._owner(array)))
        else:
            self.others.append(array)

    def shares_memory(self, array: Array) -> bool:
        if isinstance(array, np.ndarray):
            return id(self._owner(array)) in self.owners
        xp = backend.get_array_module(array)
        return any(xp.may_share_memory(array, other) for other in self.others)


def _raw(value: Any, like: Tensor) -> Array:
    """Raw array for a Tensor or a Python number (on `like`'s device, typed by `_number_dtype`)."""
    if isinstance(value, Tensor):
        return value.data
    if _is_number(value):
        return like.xp.asarray(value, dtype=_number_dtype(value, like.dtype))
    return like.xp.asarray(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, bool, np.number, np.bool_))


def _number_dtype(number: Any, tensor_dtype: np.dtype, float_dtype: np.dtype | None = None) -> np.dtype:
    """The dtype a Python (or NumPy) number takes next to a tensor, as in PyTorch: never float64 by surprise.

    A float tensor (or `float_dtype`, the float dtype of the op's other inputs) decides: `x32 * 0.5` stays
    float32. Next to integer or bool tensors a float number gives the default float dtype (`ints * 0.5` is
    float32, not the int 0), and an integer number follows NumPy's rules (`int32_tensor + 1` stays int32).
    """
    if float_dtype is None and _is_float(tensor_dtype):
        float_dtype = tensor_dtype
    if float_dtype is not None:
        return np.dtype(float_dtype)
    if isinstance(number, (float, np.floating)):
        return backend.DEFAULT_DTYPE
    return np.result_type(tensor_dtype, number)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from `root` through recorded ops, each after all of its inputs.

    An explicit stack instead of recursion: a chain of 100,000 ops must not overflow.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for inp in node._ctx.inputs:
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


class Function:
    """One differentiable operation. Subclasses implement `forward` and `backward` on raw arrays.

    Parameters that are not tensors (axes, strides, ...) go to `__init__` as keyword
    arguments of `apply`; anything `backward` needs from the forward pass is kept on `self`.
    """

    inputs: tuple[Tensor, ...] = ()

    def __init__(self, **params: Any) -> None:
        for key, value in params.items():
            setattr(self, key, value)

    def forward(self, *xs: Array) -> Array:
        raise NotImplementedError

    def backward(self, grad: Array) -> Array | tuple[Array | None, ...] | None:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what the forward pass saved, once the backward pass has used it."""
        self.__dict__.clear()

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        return tuple(t.requires_grad for t in self.inputs)

    @classmethod
    def apply(cls, *inputs: Any, **params: Any) -> Tensor:
        """Run the op on tensors (numbers and arrays are accepted as constants)."""
        fn = cls(**params)
        tensors = _as_tensors(cls.__name__, inputs)
        record = _grad_enabled and any(t.requires_grad for t in tensors)
        if record:
            fn.inputs = tensors  # set before forward so forward can read needs_input_grad
        out_data = fn.forward(*(t.data for t in tensors))
        if backend.is_gpu_array(out_data) != backend.is_gpu_array(tensors[0].data):
            # e.g. a forward that went through backend.to_numpy: the result would quietly leave the GPU
            raise RuntimeError(
                f"{cls.__name__}.forward returned an array on {backend.device_of(out_data)} "
                f"for inputs on {tensors[0].device}"
            )
        out = Tensor(out_data)
        if record:
            out.requires_grad = True
            out._ctx = fn
        return out


def _as_tensors(op_name: str, inputs: Sequence[Any]) -> tuple[Tensor, ...]:
    """The inputs of an op as tensors on one device, with one float dtype.

    Numbers and arrays become constant tensors. Float inputs must share their dtype (float32 next to float64
    is a mistake worth an error, not a silent float64 result); integer and bool inputs next to a float one,
    and numbers, are converted to it, so `x32 * int_labels` is float32 as in PyTorch.
    """
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    if not tensors:
        raise TypeError(f"{op_name} needs at least one Tensor input")
    like = tensors[0]
    device = like.device
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(
                f"{op_name} got tensors on different devices: {device} and {t.device}. "
                "Move them to one device with .to(...)."
            )
    out: list[Tensor | None] = []
    for x in inputs:
        if isinstance(x, Tensor):
            out.append(x)
        elif _is_number(x):
            out.append(None)  # converted below, once the op's float dtype is known
        else:
            xdev = backend.device_of(x)
            if xdev != device:
                raise ValueError(f"{op_name} got an array on {xdev} and tensors on {device}")
            out.append(Tensor(x))
    float_dtypes = {t.dtype for t in out if t is not None and _is_float(t.dtype)}
    if len(float_dtypes) > 1:
        names = " and ".join(sorted(map(str, float_dtypes)))
        raise TypeError(f"{op_name.lower()}: dtypes differ ({names}); convert one with .astype(...)")
    float_dtype = float_dtypes.pop() if float_dtypes else None
    if float_dtype is None and any(isinstance(x, (float, np.floating)) for x in inputs if _is_number(x)):
        float_dtype = backend.DEFAULT_DTYPE  # integer tensors times a float number: the default float dtype
    result = []
    for x, t in zip(inputs, out):
        if t is None:
            t = Tensor(like.xp.asarray(x, dtype=_number_dtype(x, like.dtype, float_dtype)))
        elif float_dtype is not None and not _is_float(t.dtype):
            t = Tensor(t.data.astype(float_dtype))  # a constant: integer tensors never require grad
        result.append(t)
    return tuple(result)


# ----------------------------------------------------------------------------- factories


def tensor(data: Any, dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """Make a tensor from a list, a number or an array. The data is always copied.

    (`Tensor(array)` wraps an array without copying; `tensor(array)` never shares memory with the caller,
    so an optimizer step on the tensor cannot change the caller's array.)
    """
    if isinstance(data, Tensor):
        data = data.data
    if backend.get_array_module(data) is not np or isinstance(data, np.ndarray):
        data = data.copy()
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def zeros(shape: Sequence[int], dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    xp = Device(device).xp
    return Tensor(xp.zeros(tuple(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def ones(shape: Sequence[int], dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    xp = Device(device).xp
    return Tensor(xp.ones(tuple(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def randn(shape: Sequence[int], dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's seeded generator."""
    gen = backend.rng(device)
    return Tensor(gen.standard_normal(tuple(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def rand(shape: Sequence[int], dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator."""
    gen = backend.rng(device)
    return Tensor(gen.random(tuple(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


from minigrad import functional as _F  # noqa: E402  (functional builds on Tensor and Function)
