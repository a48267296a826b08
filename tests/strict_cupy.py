"""A strict stand-in for the `cupy` module, backed by NumPy, to test the GPU code path without a GPU.

Install it with `minigrad.backend.use_gpu_module(strict_cupy)`: the engine then treats
`strict_cupy.ndarray` as GPU arrays and this module as CuPy. It behaves like CuPy where dual-backend
code usually breaks, and is stricter than CuPy on purpose in a few places:

- Implicit conversion to NumPy raises TypeError (`np.asarray(a)`), as in CuPy.
- Any NumPy ufunc or function called on a device array raises TypeError. (CuPy would run `np.exp(a)`
  on the GPU through `__array_ufunc__`; our rule is "no `np.` calls on tensor data inside an op".)
- A host `numpy.ndarray` (even 0-d) mixed with device arrays in an operator, an index, an assignment or
  a module function raises TypeError. (CuPy accepts host index arrays; we do not.)
- Only names real CuPy has are reachable on the module (`CUPY_NAMES`); `add.at` is not, and
  `random.default_rng()` gives a Generator with only random/standard_normal/integers/uniform.
- `float(a)`/`int(a)` need a 0-d array, and there is no `__index__`: CuPy 14 behaves so too.

Python scalars and NumPy scalar objects (`np.float32(2)`) are fine, as in CuPy.
"""

from __future__ import annotations

import operator
import sys
import types
from typing import Any

import numpy as np

# Names of real CuPy's top-level namespace that the stand-in offers (checked against CuPy 14 by
# test_strict_cupy.py when a GPU is present). Each one not defined below wraps NumPy's namesake.
CUPY_NAMES = frozenset(
    """
    ndarray asarray asanyarray array asnumpy get_array_module is_available cuda random lib
    e euler_gamma inf nan newaxis pi
    bool bool_ complex64 complex128 dtype float16 float32 float64 int8 int16 int32 int64 intp
    uint8 uint16 uint32 uint64 uintp number integer signedinteger unsignedinteger floating inexact
    complexfloating generic finfo iinfo can_cast promote_types result_type issubdtype isdtype min_scalar_type
    arange empty empty_like eye full full_like identity linspace logspace meshgrid ones ones_like
    zeros zeros_like tri tril triu diag diagflat indices copy copyto ascontiguousarray asfortranarray astype
    append atleast_1d atleast_2d atleast_3d broadcast_arrays broadcast_shapes broadcast_to column_stack
    concat concatenate delete dsplit dstack expand_dims flip fliplr flipud hsplit hstack matrix_transpose
    moveaxis pad permute_dims ravel repeat reshape resize roll rollaxis rot90 shape ndim size split
    array_split squeeze stack swapaxes tile transpose vsplit vstack
    argwhere choose compress diagonal extract fill_diagonal flatnonzero nonzero place put put_along_axis
    putmask ravel_multi_index select take take_along_axis unravel_index where ix_
    diag_indices tril_indices triu_indices
    abs absolute add angle arccos arccosh arcsin arcsinh arctan arctan2 arctanh acos acosh asin asinh atan
    atan2 atanh around cbrt ceil clip conj conjugate copysign cos cosh deg2rad degrees divide divmod exp
    exp2 expm1 fabs fix float_power floor floor_divide fmax fmin fmod frexp gcd heaviside hypot imag lcm
    ldexp log log10 log1p log2 logaddexp logaddexp2 maximum minimum mod modf multiply nan_to_num negative
    nextafter positive pow power rad2deg radians real reciprocal remainder rint round sign signbit sin
    sinh sqrt square subtract tan tanh true_divide trunc
    all allclose any array_equal array_equiv equal greater greater_equal isclose iscomplex isfinite isin
    isinf isnan isneginf isposinf isreal isscalar less less_equal logical_and logical_not logical_or
    logical_xor may_share_memory not_equal shares_memory
    bitwise_and bitwise_invert bitwise_not bitwise_or bitwise_xor invert left_shift right_shift
    amax amin argmax argmin average bincount count_nonzero cumprod cumsum cumulative_prod cumulative_sum
    diff digitize histogram max mean median min nanargmax nanargmin nancumsum nanmax nanmean nanmin
    nanprod nanstd nansum nanvar percentile prod ptp quantile std sum var
    argpartition argsort lexsort partition searchsorted sort unique unique_all unique_counts
    unique_inverse unique_values intersect1d setdiff1d setxor1d union1d
    cross dot einsum inner kron matmul outer tensordot trace vdot
    """.split()
)

_SCALARS = (bool, int, float, complex, np.generic)  # what CuPy accepts next to device arrays


def _host_error(context: str) -> TypeError:
    return TypeError(
        f"{context}: a host numpy.ndarray was mixed with device arrays (strict_cupy.ndarray), which CuPy "
        "refuses. Copy it to the device explicitly with xp.asarray(...), or bring the device array "
        "to the host with .get() / xp.asnumpy()"
    )


def _unwrap(obj: Any, context: str, owners: dict | None = None, host_ok: bool = False) -> Any:
    """Replace device arrays by their NumPy data, inside lists, tuples and dicts too; refuse host arrays.

    `owners` collects {id(numpy data): device array}, so that a result which *is* one of the inputs
    (`out=`, `astype(copy=False)`) comes back as the same device array object, as in CuPy.
    """
    if isinstance(obj, ndarray):
        if owners is not None:
            owners[id(obj._a)] = obj
        return obj._a
    if isinstance(obj, np.ndarray):
        if host_ok:
            return obj
        raise _host_error(context)
    if isinstance(obj, list):
        return [_unwrap(x, context, owners, host_ok) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_unwrap(x, context, owners, host_ok) for x in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, context, owners, host_ok) for k, v in obj.items()}
    return obj


def _wrap(result: Any, owners: dict | None = None) -> Any:
    """Turn NumPy results into device arrays. NumPy scalars become 0-d arrays, as CuPy returns them."""
    if isinstance(result, np.ndarray):
        if owners and id(result) in owners:
            return owners[id(result)]
        return ndarray._from_numpy(result)
    if isinstance(result, np.generic):
        return ndarray._from_numpy(np.asarray(result))
    if isinstance(result, list):
        return [_wrap(x, owners) for x in result]
    if isinstance(result, tuple):
        items = [_wrap(x, owners) for x in result]
        return type(result)(*items) if hasattr(result, "_fields") else tuple(items)  # namedtuple or tuple
    return result


def _call_numpy(func: Any, args: tuple, kwargs: dict, context: str, owners: dict | None = None) -> Any:
    """Run a NumPy callable on the NumPy data of device arguments, and wrap what it returns."""
    owners = {} if owners is None else owners
    args = _unwrap(args, context, owners)
    kwargs = _unwrap(kwargs, context, owners)
    return _wrap(func(*args, **kwargs), owners)


# ----------------------------------------------------------------------------- the array


class ndarray:  # lower case: CuPy's name
    """A device array: NumPy data that refuses to be mixed with host arrays or used by NumPy functions."""

    __slots__ = ("_a",)
    __hash__ = None  # arrays are unhashable, as in NumPy and CuPy

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C") -> None:
        self._a = np.empty(shape, dtype=dtype, order=order)  # CuPy's constructor also leaves it uninitialised

    @classmethod
    def _from_numpy(cls, data: np.ndarray) -> ndarray:
        obj = cls.__new__(cls)
        obj._a = data
        return obj

    # --- the strictness: NumPy must not see the data implicitly

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            "implicit conversion of a device array (strict_cupy.ndarray) to NumPy is not allowed, as in "
            "CuPy: use .get() or xp.asnumpy() for an explicit copy to the host"
        )

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        operands = inputs + tuple(kwargs.get("out", ()))
        hosts = [x for x in operands if isinstance(x, np.ndarray)]
        if hosts:
            hint = ""
            if any(h.ndim == 0 for h in hosts):
                hint = " (a NumPy scalar left of a comparison arrives as a 0-d host array: put the device array first)"
            raise _host_error(f"numpy.{ufunc.__name__}{hint}")
        # `np.float32(2) * a` reaches here through the NumPy scalar's operator, and works on CuPy: allow it.
        if method == "__call__" and not kwargs and ufunc in _OPERATOR_UFUNCS:
            if all(isinstance(x, (ndarray, np.generic)) for x in inputs):
                return _call_numpy(ufunc, inputs, {}, ufunc.__name__)
        raise TypeError(
            f"NumPy ufunc numpy.{ufunc.__name__} was called on a device array (strict_cupy.ndarray): inside "
            f"ops use xp.{ufunc.__name__} with xp = backend.get_array_module(...), or copy with .get() first"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = func.__name__
        raise TypeError(
            f"NumPy function numpy.{name}() was called on a device array (strict_cupy.ndarray): inside "
            f"ops use xp.{name}() with xp = backend.get_array_module(...), or copy with .get() first"
        )

    # --- attributes

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(self._a.mT))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))
    device = property(lambda self: cuda.Device(0))

    # --- indexing

    def __getitem__(self, key: Any) -> ndarray:
        key = _unwrap(key, "indexing a device array")
        parts = key if isinstance(key, tuple) else (key,)
        # a[i] on CuPy is a 0-d *view*; NumPy would give a scalar copy. A trailing `...` makes it a view.
        if not any(k is Ellipsis for k in parts):
            parts = (*parts, Ellipsis)
        return _wrap(self._a[parts])

    def __setitem__(self, key: Any, value: Any) -> None:
        if not isinstance(value, (ndarray, np.ndarray, *_SCALARS)):
            raise TypeError(f"assigning a {type(value).__name__} to a device array: convert it with xp.asarray() first")
        self._a[_unwrap(key, "indexing a device array")] = _unwrap(value, "assigning to a device array")

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # --- conversions (each one is an implicit device-to-host copy on CuPy)

    def _python_scalar(self, convert: type) -> Any:
        if self._a.ndim != 0:
            raise TypeError("only 0-dimensional arrays can be converted to Python scalars (as in CuPy 14)")
        return convert(self._a.item())

    def __float__(self) -> float:
        return self._python_scalar(float)

    def __int__(self) -> int:
        return self._python_scalar(int)

    def __complex__(self) -> complex:
        return self._python_scalar(complex)

    def __bool__(self) -> bool:
        return bool(self._a)

    def item(self, *args: Any) -> Any:
        return self._a.item(*args)

    def tolist(self) -> Any:
        return self._a.tolist()

    def get(self, stream: Any = None) -> np.ndarray:
        """The explicit device-to-host copy: a new NumPy array."""
        return self._a.copy()

    def set(self, arr: np.ndarray) -> None:
        """The explicit host-to-device copy into this array (CuPy's `ndarray.set`: same shape and dtype)."""
        arr = np.asarray(arr)
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError(
                f"strict_cupy.ndarray.set: got shape {arr.shape} and dtype {arr.dtype} for an array of "
                f"shape {self._a.shape} and dtype {self._a.dtype} (CuPy neither broadcasts nor casts here)"
            )
        self._a[...] = arr

    def __repr__(self) -> str:
        return f"strict_cupy.{self._a!r}"

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a, spec)

    def __copy__(self) -> ndarray:
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo: dict) -> ndarray:
        return _wrap(self._a.copy())

    def __reduce__(self) -> tuple:
        return (asarray, (self._a.copy(),))


def _array_method(name: str):
    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        # `a.astype(a.dtype, copy=False)` gives back `a` itself, as in CuPy
        return _call_numpy(getattr(self._a, name), args, kwargs, f"ndarray.{name}()", {id(self._a): self})

    method.__name__ = method.__qualname__ = name
    return method


# Methods that both NumPy's and CuPy's ndarray have, run on the NumPy data.
for _name in (
    "all any argmax argmin argsort astype clip conj copy cumprod cumsum diagonal dot fill flatten max mean "
    "min nonzero prod ravel repeat reshape round sort squeeze std sum swapaxes take trace transpose var view"
).split():
    setattr(ndarray, _name, _array_method(_name))


def _binary(symbol: str, op: Any, reflected: bool = False, inplace: bool = False):
    """An operator method: device arrays and scalars are fine, host arrays raise, other types defer."""

    def method(self: ndarray, other: Any) -> Any:
        if isinstance(other, ndarray):
            data = other._a
        elif isinstance(other, np.ndarray):
            raise _host_error(f"operator {symbol}")
        elif isinstance(other, _SCALARS):
            data = other
        else:
            return NotImplemented  # lets the other operand's reflected method (or Python's TypeError) decide
        if inplace:
            op(self._a, data)
            return self
        return _wrap(op(data, self._a) if reflected else op(self._a, data))

    return method


for _name, _symbol, _op, _iop in (
    ("add", "+", operator.add, operator.iadd),
    ("sub", "-", operator.sub, operator.isub),
    ("mul", "*", operator.mul, operator.imul),
    ("truediv", "/", operator.truediv, operator.itruediv),
    ("floordiv", "//", operator.floordiv, operator.ifloordiv),
    ("mod", "%", operator.mod, operator.imod),
    ("pow", "**", operator.pow, operator.ipow),
    ("and", "&", operator.and_, operator.iand),
    ("or", "|", operator.or_, operator.ior),
    ("xor", "^", operator.xor, operator.ixor),
    ("lshift", "<<", operator.lshift, operator.ilshift),
    ("rshift", ">>", operator.rshift, operator.irshift),
    ("matmul", "@", operator.matmul, None),  # CuPy has no in-place @=
    ("divmod", "divmod", divmod, None),
):
    setattr(ndarray, f"__{_name}__", _binary(_symbol, _op))
    setattr(ndarray, f"__r{_name}__", _binary(_symbol, _op, reflected=True))
    if _iop is not None:
        setattr(ndarray, f"__i{_name}__", _binary(_symbol + "=", _iop, inplace=True))

for _name, _symbol in (("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")):
    setattr(ndarray, f"__{_name}__", _binary(_symbol, getattr(operator, _name)))


def _unary(op: Any):
    return lambda self: _wrap(op(self._a))


for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(getattr(operator, _name)))

# The ufuncs a NumPy scalar calls for `np_scalar <op> device_array` (see __array_ufunc__).
_OPERATOR_UFUNCS = frozenset(
    [np.add, np.subtract, np.multiply, np.true_divide, np.floor_divide, np.remainder, np.power, np.divmod,
     np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.left_shift, np.right_shift]
)  # fmt: skip


# ----------------------------------------------------------------------------- module functions


class _Ufunc:
    """A NumPy ufunc behind CuPy's ufunc interface: call (with `out=`), reduce, accumulate, outer."""

    def __init__(self, np_ufunc: np.ufunc) -> None:
        self._ufunc = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs, self.types = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs, np_ufunc.types

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        for x in inputs:  # CuPy ufuncs take arrays and scalars, not lists
            if not isinstance(x, (ndarray, np.ndarray, *_SCALARS)):
                raise TypeError(f"strict_cupy.{self.__name__}(): unsupported type {type(x).__name__}")
        return _call_numpy(self._ufunc, inputs, kwargs, f"strict_cupy.{self.__name__}()")

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        return _call_numpy(self._ufunc.reduce, args, kwargs, f"strict_cupy.{self.__name__}.reduce()")

    def accumulate(self, *args: Any, **kwargs: Any) -> Any:
        return _call_numpy(self._ufunc.accumulate, args, kwargs, f"strict_cupy.{self.__name__}.accumulate()")

    def outer(self, *args: Any, **kwargs: Any) -> Any:
        return _call_numpy(self._ufunc.outer, args, kwargs, f"strict_cupy.{self.__name__}.outer()")

    @property
    def at(self) -> Any:
        # Unbuffered scatter (np.add.at) is slow on NumPy and limited on CuPy: the engine must scatter in
        # a way that works on both (bincount, or a loop of slice-adds), so the stand-in offers no `.at`.
        raise AttributeError(f"strict_cupy.{self.__name__}.at is not available: scatter without ufunc.at")

    def __repr__(self) -> str:
        return f"<strict_cupy ufunc {self.__name__!r}>"


# Functions whose array arguments CuPy will not take as Python lists (cupy.sum([1., 2.]) is a TypeError,
# cupy.concatenate([[1.], [2.]]) too): the first argument of the reductions and sorts, every argument of
# `where`, and each item of the sequence that the joins take.
_NO_LIST_FIRST = frozenset(
    """
    amax amin argmax argmin average count_nonzero cumprod cumsum diff max mean median min prod ptp std sum var
    all any argsort sort unique clip take take_along_axis flip ravel squeeze expand_dims swapaxes moveaxis
    """.split()
)
_JOINS = frozenset("concatenate concat stack hstack vstack dstack column_stack".split())


def _refuse_lists(name: str, args: tuple) -> None:
    def listy(x: Any) -> bool:
        return isinstance(x, (list, tuple))

    bad = (
        (name in _NO_LIST_FIRST and args and listy(args[0]))
        or (name == "where" and any(listy(a) for a in args))
        or (name in _JOINS and args and listy(args[0]) and any(listy(item) for item in args[0]))
    )
    if bad:
        raise TypeError(
            f"strict_cupy.{name}(): CuPy does not take Python lists as arrays here; "
            "make a device array with xp.asarray(...) first"
        )


def _device_function(name: str, func: Any):
    """CuPy's `name`, run by NumPy's: device arrays in and out, host arrays refused."""

    def call(*args: Any, **kwargs: Any) -> Any:
        _refuse_lists(name, args)
        return _call_numpy(func, args, kwargs, f"strict_cupy.{name}()")

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Stand-in for cupy.{name} (runs numpy.{name} on the arrays' data)."
    return call


_resolved: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Resolve the other CuPy names (module-level __getattr__, PEP 562) from NumPy's, if CuPy has them."""
    if name in _resolved:
        return _resolved[name]
    if name not in CUPY_NAMES:
        raise AttributeError(
            f"module 'cupy' has no attribute {name!r} (strict_cupy: only names that real CuPy has "
            "are reachable, and only those listed in strict_cupy.CUPY_NAMES are emulated)"
        )
    value = getattr(np, name)
    if isinstance(value, np.ufunc):
        value = _Ufunc(value)
    elif callable(value) and not isinstance(value, type):  # types (float32, dtype, finfo) are shared with NumPy
        value = _device_function(name, value)
    # Cached in a dict, not in globals(): names like `any`, `all`, `sum` must not shadow this module's builtins.
    _resolved[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | CUPY_NAMES)


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", ndmin: int = 0) -> ndarray:
    """The explicit host-to-device copy: NumPy arrays, (nested) lists, scalars and device arrays."""
    if isinstance(obj, ndarray) and not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    data = np.array(_unwrap(obj, "strict_cupy.array()", host_ok=True), dtype=dtype, order=order, ndmin=ndmin)
    if data.dtype.kind in "OUSV":
        raise TypeError(f"CuPy has no arrays of dtype {data.dtype} (from {type(obj).__name__})")
    return ndarray._from_numpy(data)


def asarray(a: Any, dtype: Any = None, order: str | None = None) -> ndarray:
    """Like `array`, but a device array of the right dtype comes back as it is."""
    return array(a, dtype=dtype, copy=False, order=order or "K")


asanyarray = asarray


def asnumpy(a: Any, stream: Any = None) -> np.ndarray:
    """The explicit device-to-host copy. Host data passes through."""
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*args: Any) -> types.ModuleType:
    """This module when any argument is a device array, else NumPy."""
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def is_available() -> bool:
    return True


# Dtypes and constants are NumPy's own objects in CuPy too.
float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
bool_, complex64, complex128, dtype = np.bool_, np.complex64, np.complex128, np.dtype
pi, e, inf, nan, newaxis = np.pi, np.e, np.inf, np.nan, np.newaxis


# ----------------------------------------------------------------------------- cuda and random


class _CudaDevice:
    """`cupy.cuda.Device(i)`: selects a GPU in a `with` block. The stand-in has one GPU, number 0."""

    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)

    def _check(self) -> None:
        if self.id != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: strict_cupy has only device 0, not {self.id}")

    def use(self) -> None:
        self._check()

    def synchronize(self) -> None:
        self._check()  # the stand-in's work is done already

    def __enter__(self) -> _CudaDevice:
        self._check()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CudaDevice) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id} (strict_cupy)>"


cuda = types.SimpleNamespace(Device=_CudaDevice, is_available=is_available)


def _as_strided(x: Any, shape: Any = None, strides: Any = None) -> ndarray:
    """`cupy.lib.stride_tricks.as_strided`: a view of a device array's memory with the given shape and
    byte strides (no copy, no bounds check, as in CuPy). CuPy's takes no `writeable` or `subok`."""
    if not isinstance(x, ndarray):
        raise TypeError(f"strict_cupy.lib.stride_tricks.as_strided() takes a device array, not {type(x).__name__}")
    return _wrap(np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided))

_MISSING_ON_CUPY = {
    "normal": "use standard_normal(size, dtype=...) * std + mean",
    "permutation": "shuffle on the host with NumPy, then copy the indices",
    "choice": "draw on the host with NumPy, or use integers(...)",
    "shuffle": "shuffle on the host with NumPy, then copy the indices",
}


class _Generator:
    """What `cupy.random.default_rng(seed)` returns, limited to the methods the engine may use."""

    def __init__(self, seed: Any = None) -> None:
        self._rng = np.random.default_rng(seed)

    def _draw(self, method: Any, context: str, out: Any = None, **kwargs: Any) -> ndarray:
        if out is not None:
            kwargs["out"] = _unwrap(out, context)
        result = method(**kwargs)
        return out if out is not None else ndarray._from_numpy(np.asarray(result))  # scalars as 0-d arrays

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> ndarray:
        """Uniform in [0, 1). Like NumPy's, only float32 and float64."""
        return self._draw(self._rng.random, "Generator.random()", out, size=size, dtype=dtype)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> ndarray:
        """N(0, 1). Like NumPy's, only float32 and float64."""
        return self._draw(self._rng.standard_normal, "Generator.standard_normal()", out, size=size, dtype=dtype)

    def integers(
        self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64, endpoint: bool = False
    ) -> ndarray:
        low, high = _unwrap((low, high), "Generator.integers()")
        return self._draw(
            self._rng.integers, "Generator.integers()", low=low, high=high, size=size, dtype=dtype, endpoint=endpoint
        )

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None, dtype: Any = np.float64) -> ndarray:
        """Uniform in [low, high). NumPy's has no dtype argument; CuPy's has."""
        low, high = _unwrap((low, high), "Generator.uniform()")
        return _wrap(np.asarray(self._rng.uniform(low, high, size)).astype(dtype, copy=False))

    def __getattr__(self, name: str) -> Any:
        hint = _MISSING_ON_CUPY.get(name)
        if hint is not None:
            raise AttributeError(f"CuPy's random Generator has no {name!r}: {hint}")
        raise AttributeError(
            f"strict_cupy's random Generator has no {name!r} (it emulates random, standard_normal, integers, uniform)"
        )


def _default_rng(seed: Any = None) -> _Generator:
    return _Generator(seed)


random = types.SimpleNamespace(default_rng=_default_rng)
