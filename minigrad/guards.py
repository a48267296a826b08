"""The checks around the graph, kept out of `tensor.py` so the algorithm there reads in one sitting.

- Dtype promotion of an op's inputs (`promote_inputs`, `number_dtype`): numbers and integer arrays next to a
  float tensor take its dtype, two different float dtypes are an error; never float64 by surprise.
- Checks on gradients (`check_initial_grad`, `check_input_grads`): the right count, shape, device and dtype.
- The aliasing guard (`HeldMemory`): a leaf's `.grad` never shares memory with another leaf's or the caller's.

Works on raw arrays (NumPy or CuPy) and on objects with the Tensor attributes it reads (`shape`, `dtype`,
`device`, `data`); it never imports `minigrad.tensor`. May import: NumPy, `minigrad.backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minigrad import backend

Array = Any  # numpy.ndarray or cupy.ndarray


def is_float(dtype: Any) -> bool:
    """True for floating dtypes (float16/32/64)."""
    return np.dtype(dtype).kind == "f"  # (np.issubdtype says the same, several times slower: this runs per op)


def is_number(value: Any) -> bool:
    """A Python or NumPy scalar (what an op takes as a constant)."""
    return isinstance(value, (int, float, bool, np.number, np.bool_))


# ----------------------------------------------------------------------------- dtype promotion


def number_dtype(number: Any, tensor_dtype: np.dtype, float_dtype: np.dtype | None = None) -> np.dtype:
    """The dtype a Python (or NumPy) number takes next to a tensor, as in PyTorch: never float64 by surprise.

    A float tensor (or `float_dtype`, the float dtype of the op's other inputs) decides: `x32 * 0.5` stays
    float32. Next to integer or bool tensors a float number gives the default float dtype (`ints * 0.5` is
    float32, not the int 0), and an integer number follows NumPy's rules (`int32_tensor + 1` stays int32).
    """
    if float_dtype is None and is_float(tensor_dtype):
        float_dtype = tensor_dtype
    if float_dtype is not None:
        return np.dtype(float_dtype)
    if isinstance(number, (float, np.floating)):
        return backend.DEFAULT_DTYPE
    return np.result_type(tensor_dtype, number)


def _common_float_dtype(op_name: str, arrays: Sequence[Array | None], numbers: Sequence[Any]) -> np.dtype | None:
    """The one float dtype of an op's array inputs; the default float dtype for ints next to a float number."""
    float_dtypes = {a.dtype for a in arrays if a is not None and is_float(a.dtype)}
    if len(float_dtypes) > 1:
        names = " and ".join(sorted(map(str, float_dtypes)))
        raise TypeError(f"{op_name.lower()}: dtypes differ ({names}); convert one with .astype(...)")
    if float_dtypes:
        return float_dtypes.pop()
    if any(isinstance(x, (float, np.floating)) for x in numbers):
        return backend.DEFAULT_DTYPE  # integer tensors times a float number: the default float dtype
    return None


def promote_inputs(op_name: str, values: Sequence[Any], is_tensor: Sequence[bool]) -> list[Array]:
    """The raw arrays an op runs on, one per input, on one device and with one float dtype.

    values: each input's array (for tensors, their `.data`), or a number. Numbers and arrays are constants.
    Float inputs must share their dtype (float32 next to float64 is a mistake worth an error, not a silent
    float64 result); integer and bool inputs next to a float one, and numbers, are converted to it, so
    `x32 * int_labels` is float32 as in PyTorch. A tensor's array is returned as the same object when it
    needs no conversion (the caller then keeps the tensor itself, and with it the graph).
    """
    tensor_arrays = [v for v, t in zip(values, is_tensor) if t]
    if not tensor_arrays:
        raise TypeError(f"{op_name} needs at least one Tensor input")
    like = tensor_arrays[0]
    device = backend.device_of(like)
    for v, t in zip(values, is_tensor):
        if is_number(v):
            continue
        v_device = backend.device_of(v)
        if v_device != device and t:
            raise ValueError(
                f"{op_name} got tensors on different devices: {device} and {v_device}. "
                "Move them to one device with .to(...)."
            )
        if v_device != device:
            raise ValueError(f"{op_name} got an array on {v_device} and tensors on {device}")
    arrays = [None if is_number(v) else v for v in values]
    float_dtype = _common_float_dtype(op_name, arrays, [v for v in values if is_number(v)])
    xp = backend.get_array_module(like)
    out = []
    for v, a in zip(values, arrays):
        if a is None:
            a = xp.asarray(v, dtype=number_dtype(v, like.dtype, float_dtype))
        elif float_dtype is not None and not is_float(a.dtype):
            a = a.astype(float_dtype)  # a constant: integer tensors never require grad
        out.append(a)
    return out


# ----------------------------------------------------------------------------- gradient checks


def check_initial_grad(tensor: Any, grad_data: Array | None) -> Array:
    """The gradient `backward()` starts from: ones for a one-element tensor, else `grad`, checked."""
    if not tensor.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
    if grad_data is None:
        if tensor.size != 1:
            raise RuntimeError(
                f"backward() without grad works only on a one-element tensor; this one has shape {tensor.shape}. "
                "Pass grad= with the same shape, or reduce it first (e.g. .sum())."
            )
        return tensor.xp.ones_like(tensor.data)
    if tuple(grad_data.shape) != tensor.shape:
        raise ValueError(f"grad has shape {tuple(grad_data.shape)} but the tensor has shape {tensor.shape}")
    if backend.device_of(grad_data) != tensor.device:
        raise ValueError(f"grad is on {backend.device_of(grad_data)} but the tensor is on {tensor.device}")
    if grad_data.dtype != tensor.dtype:  # np.ones(shape) is float64: every op would then make float64 too
        raise TypeError(
            f"grad has dtype {grad_data.dtype} but the tensor is {tensor.dtype}; pass grad.astype({tensor.dtype})"
        )
    return grad_data


def check_not_freed(node: Any) -> None:
    """A tensor whose op an earlier `backward()` released cannot pass a gradient on."""
    if node._freed:
        raise RuntimeError(
            "backward() reached a tensor whose graph an earlier backward() already freed; "
            "pass retain_graph=True to the first backward() to go through the graph twice"
        )


def check_input_grads(fn: Any, input_grads: Any) -> tuple[Array | None, ...]:
    """`fn.backward`'s result as a tuple with one gradient per input, each of its input's shape and device."""
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    op = type(fn).__name__
    if len(input_grads) != len(fn.inputs):
        raise RuntimeError(f"{op}.backward returned {len(input_grads)} gradients for {len(fn.inputs)} inputs")
    for inp, ig in zip(fn.inputs, input_grads):
        if ig is None or not inp.requires_grad:
            continue
        if tuple(ig.shape) != inp.shape:
            raise RuntimeError(
                f"{op}.backward gave a gradient of shape {tuple(ig.shape)} for an input of shape {inp.shape}"
            )
        if backend.is_gpu_array(ig) != backend.is_gpu_array(inp.data):
            raise RuntimeError(f"{op}.backward gave a gradient on {backend.device_of(ig)} for an input on {inp.device}")
    return input_grads


def check_forward_device(fn: Any, out_data: Array, first_input: Array) -> None:
    """A forward that went through the host (e.g. `backend.to_numpy`) would quietly leave the GPU."""
    if backend.is_gpu_array(out_data) != backend.is_gpu_array(first_input):
        raise RuntimeError(
            f"{type(fn).__name__}.forward returned an array on {backend.device_of(out_data)} "
            f"for inputs on {backend.device_of(first_input)}"
        )


# ----------------------------------------------------------------------------- the aliasing guard


class HeldMemory:
    """The memory of arrays already handed out as gradients (or given by the caller), for `backward`.

    An op may pass a gradient on unchanged or as a view (Add hands the same g to both inputs, reshape a view
    of it), so a leaf whose gradient shares memory with one of these gets a copy: changing one leaf's .grad in
    place (clipping, scaling) must not change another's, nor the caller's array.

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

    def own_copy(self, array: Array) -> Array:
        """`array`, or a copy of it when it shares memory with one already handed out; remembered either way."""
        if self.shares_memory(array):
            array = array.copy()
        self.add(array)
        return array
