"""Tensor, Function, and the reverse-mode graph walk: the heart of minigrad, in reading order.

1. `Tensor` wraps one array (NumPy or CuPy) and remembers the `Function` that computed it.
2. `Function` is one differentiable operation, with two methods on raw arrays:

       forward(*arrays)  -> array
       backward(grad)    -> one gradient per input (or None where no gradient is needed)

   `Function.apply(*inputs)` runs `forward` and, when gradients are wanted, records the function as the
   output's creator.
3. `topological_order` lists the recorded graph so every tensor comes after its inputs (an explicit stack,
   not recursion, so a chain of 100,000 ops cannot overflow).
4. `Tensor.backward()` walks that order from the output back to the leaves, calling each creator's
   `backward` once and adding up the gradients of tensors used more than once.

The arithmetic operators (`+`, `*`, `@`, ...) and methods such as `sum` and `reshape` are ops like any other;
`minigrad.functional` installs them on Tensor (functional/methods.py), so this file does not import the ops.
The checks around the algorithm (dtype promotion, gradient shapes and devices, the aliasing guard) live in
`guards.py`. May import: NumPy, `minigrad.backend`, `minigrad.guards`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from minigrad import backend, guards
from minigrad.backend import Device

Array = Any  # numpy.ndarray or cupy.ndarray


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
        self._ctx: Function | None = None  # the op that computed this tensor; None for a leaf
        self._freed = False  # True once backward() released the op that made this tensor
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -------------------------------------------------------------- autograd
    def backward(self, grad: Tensor | Array | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`.

        Args:
            grad: the upstream gradient, same shape as self. May be omitted for a one-element tensor.
            retain_graph: keep the graph so backward can run through it again.
        """
        grad_data = grad.data if isinstance(grad, Tensor) else grad
        grads: dict[int, Array] = {id(self): guards.check_initial_grad(self, grad_data)}
        handed_out = guards.HeldMemory()  # memory someone else holds: the caller's grad, earlier leaves' grads
        if grad_data is not None:
            handed_out.add(grad_data)

        for node in reversed(topological_order(self)):  # from the output back to the leaves
            g = grads.pop(id(node), None)
            if g is None:
                continue
            guards.check_not_freed(node)
            fn = node._ctx
            if fn is None:  # a leaf: accumulate into .grad
                if node.grad is None:
                    node.grad = Tensor(handed_out.own_copy(g))
                else:
                    node.grad = Tensor(node.grad.data + g)
                continue
            input_grads = guards.check_input_grads(fn, fn.backward(g))
            for inp, ig in zip(fn.inputs, input_grads):
                if ig is None or not inp.requires_grad:
                    continue
                previous = grads.get(id(inp))  # an input used twice collects both gradients
                grads[id(inp)] = ig if previous is None else previous + ig
            if not retain_graph:
                node._release_graph()

    def _release_graph(self) -> None:
        """Drop the op that made this tensor and what it saved (after backward has used it)."""
        fn, self._ctx, self._freed = self._ctx, None, True
        fn.inputs = ()
        fn.release()

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not guards.is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
        self.requires_grad = flag
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def creator(self) -> Function | None:
        """The op that computed this tensor (its `inputs` lead further back); None for a leaf."""
        return self._ctx

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
        """The number of elements (NumPy's meaning; `numel()` says the same)."""
        return int(self.data.size)

    def numel(self) -> int:
        return self.size

    def dim(self) -> int:
        return self.ndim

    @property
    def device(self) -> Device:
        return backend.device_of(self.data)

    @property
    def xp(self) -> Any:
        """The array module of the data (numpy or cupy)."""
        return backend.get_array_module(self.data)

    # -------------------------------------------------------------- devices and conversion
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
        """The one element as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def tolist(self) -> Any:
        """The data as (nested) Python lists of numbers; a number for a 0-d tensor."""
        return self.numpy().tolist()

    # -------------------------------------------------------------- Python's protocols
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="Tensor(")
        extra = f", dtype={self.dtype}, device={self.device}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    def _one_element(self, what: str) -> float | int | bool:
        if self.size != 1:
            raise ValueError(
                f"{what} of a tensor with {self.size} elements is ambiguous (shape {self.shape}); "
                "use .any() / .all() for truth values, or index one element"
            )
        return self.data.item()

    def __bool__(self) -> bool:
        """`if x < 0:` works for one element and raises for more, as in NumPy and PyTorch."""
        return bool(self._one_element("the truth value"))

    def __float__(self) -> float:
        return float(self._one_element("float()"))

    def __int__(self) -> int:
        return int(self._one_element("int()"))

    def __index__(self) -> int:
        """Lets a one-element integer tensor be a list index or a range bound."""
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors can be used as an index, this one is {self.dtype}")
        return int(self._one_element("an index"))

    def __format__(self, spec: str) -> str:
        """`f"{loss:.3f}"` formats the number of a one-element tensor; an empty spec gives repr for any."""
        if not spec:
            return repr(self)
        return format(self._one_element("formatting"), spec)

    def __round__(self, ndigits: int | None = None) -> Tensor:
        """Element-wise rounding to `ndigits` decimals, as PyTorch's round(t, n): a tensor, not in the graph."""
        return Tensor(self.xp.round(self.data, ndigits or 0))

    # Comparisons give boolean tensors with no graph (masks, accuracy), element-wise like NumPy and PyTorch.
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data == _raw(other, self))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data != _raw(other, self))

    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _raw(other, self))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _raw(other, self))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _raw(other, self))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _raw(other, self))

    # Tensors stay hashable by identity (they are graph nodes: dicts keyed by tensor, sets of parameters).
    __hash__ = object.__hash__


def _raw(value: Any, like: Tensor) -> Array:
    """Raw array for a Tensor or a Python number (on `like`'s device, typed by `guards.number_dtype`)."""
    if isinstance(value, Tensor):
        return value.data
    if guards.is_number(value):
        return like.xp.asarray(value, dtype=guards.number_dtype(value, like.dtype))
    return like.xp.asarray(value)


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
        guards.check_forward_device(fn, out_data, tensors[0].data)
        out = Tensor(out_data)
        if record:
            out.requires_grad = True
            out._ctx = fn
        return out


def _as_tensors(op_name: str, inputs: Sequence[Any]) -> tuple[Tensor, ...]:
    """The inputs of an op as tensors on one device with one float dtype (see `guards.promote_inputs`)."""
    is_tensor = [isinstance(x, Tensor) for x in inputs]
    # Arrays and lists are constants, typed as Tensor(...) types them; numbers wait for the op's dtype.
    values = [x.data if t else x if guards.is_number(x) else Tensor(x).data for x, t in zip(inputs, is_tensor)]
    arrays = guards.promote_inputs(op_name, values, is_tensor)
    return tuple(x if t and x.data is a else Tensor(a) for x, t, a in zip(inputs, is_tensor, arrays))


def topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from `root` through recorded ops, each after all of its inputs.

    A node is pushed twice: once to visit its inputs, once (marked done) to be emitted after them.
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


# ----------------------------------------------------------------------------- recording on and off

_grad_enabled = True


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Inside this block no graph is recorded (evaluation, optimizer steps)."""
    return _recording(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Record the graph again inside a `no_grad` block."""
    return _recording(True)


@contextlib.contextmanager
def _recording(enabled: bool) -> Iterator[None]:
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, enabled
    try:
        yield
    finally:
        _grad_enabled = previous


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


def _shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """`f((2, 3))` and `f(2, 3)` (PyTorch's style) name the same shape."""
    if len(shape) == 1 and isinstance(shape[0], Sequence):
        shape = tuple(shape[0])
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise TypeError(f"a shape is non-negative ints, given as (2, 3) or as 2, 3; got {shape!r}")
    return tuple(int(n) for n in shape)


def zeros(*shape: Any, dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """A tensor of zeros: `zeros(2, 3)` or `zeros((2, 3))`; float32 unless `dtype` says otherwise."""
    xp = Device(device).xp
    return Tensor(xp.zeros(_shape(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def ones(*shape: Any, dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """A tensor of ones: `ones(2, 3)` or `ones((2, 3))`; float32 unless `dtype` says otherwise."""
    xp = Device(device).xp
    return Tensor(xp.ones(_shape(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)


def randn(*shape: Any, dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's seeded generator: `randn(2, 3)` or `randn((2, 3))`."""
    gen = backend.rng(device)
    data = gen.standard_normal(_shape(shape), dtype=dtype or backend.DEFAULT_DTYPE)
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape: Any, dtype: Any = None, device: str | Device = "cpu", requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator: `rand(2, 3)` or `rand((2, 3))`."""
    gen = backend.rng(device)
    return Tensor(gen.random(_shape(shape), dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=requires_grad)
