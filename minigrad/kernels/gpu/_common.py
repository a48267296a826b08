"""What every GPU kernel needs: numba.cuda (or why not), one thread per element, the launch, shape checks.

The kernels are written with `numba.cuda`: Python functions compiled to GPU code on their first call (one
compiled version per argument dtype). numba.cuda takes CuPy arrays as they are, through the CUDA array
interface (`__cuda_array_interface__`), so this folder never imports CuPy; the wrappers allocate their
outputs with the input's array module (`get_array_module`), and they are CuPy arrays on a GPU.

With the environment variable NUMBA_ENABLE_CUDASIM=1 set before Numba is imported, `numba.cuda` is Numba's
CUDA simulator: every thread of a kernel runs as Python on the CPU, on NumPy arrays. That is how the test
suite checks the kernels' index arithmetic on machines without a GPU (tests/test_gpu_kernels.py).

Every kernel here runs one thread per output element (or, for the gathers, per input element): thread t
works out its (n, c, h, w) from t, reads what it needs and writes its own element. No two threads write
the same place, so there are no atomics and every run gives the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from minigrad import backend

try:
    from numba import cuda
    from numba.core import config as _numba_config
except Exception as exc:  # not installed, or a broken llvmlite: the kernels cannot be used
    cuda = None
    _import_failure: str | None = f"numba.cuda could not be imported ({type(exc).__name__}: {exc})"
else:
    _import_failure = None

# Threads per block: a multiple of the warp (32) that keeps enough blocks per multiprocessor in flight.
THREADS_PER_BLOCK = 256

_probe_failure: str | None = None  # why the kernels cannot run on this machine's GPU ("" once they ran)
_streams: dict[int, Any] = {}  # numba's wrappers of CuPy streams, by stream pointer


class GpuKernelsUnavailable(RuntimeError):
    """A GPU kernel was asked for but numba.cuda cannot run it here (the reason is in the message)."""


def simulated() -> bool:
    """True when numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels take NumPy arrays."""
    return cuda is not None and bool(_numba_config.ENABLE_CUDASIM)


def kernel(function: Callable[..., None]) -> Callable[..., None]:
    """`cuda.jit` for a kernel, compiled lazily on its first launch; the bare function without numba.cuda
    (launching then fails first, in `launch`, with the reason)."""
    return function if cuda is None else cuda.jit(function)


def device_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """`cuda.jit(device=True)`: a helper that kernels call (inlined into them)."""
    return function if cuda is None else cuda.jit(device=True)(function)


@device_function
def element_of_thread3(shape):  # pragma: no cover (compiled)
    """(i0, i1, i2): the element of a C-ordered (d0, d1, d2) array that this thread works on (thread t takes
    flat element t); i0 >= d0 for the threads past the last element, which have nothing to do."""
    t = cuda.grid(1)
    i2 = t % shape[2]
    t //= shape[2]
    return t // shape[1], t % shape[1], i2


@device_function
def element_of_thread4(shape):  # pragma: no cover (compiled)
    """(i0, i1, i2, i3): as element_of_thread3, for a (d0, d1, d2, d3) array."""
    t = cuda.grid(1)
    i3 = t % shape[3]
    t //= shape[3]
    i2 = t % shape[2]
    t //= shape[2]
    return t // shape[1], t % shape[1], i2, i3


@device_function
def window_reading(position, offset, pad, stride, n_windows):  # pragma: no cover (compiled)
    """The window whose kernel offset `offset` reads input `position`, or -1 if none does.

    Window o reads position o * stride + offset - pad; so o = (position + pad - offset) / stride when that
    divides exactly and lands in [0, n_windows). The gathers (col2im, the max-pool gradient) use it.
    """
    shifted = position + pad - offset
    if shifted >= 0 and shifted % stride == 0 and shifted // stride < n_windows:
        return shifted // stride
    return -1


# ----------------------------------------------------------------------------- can the kernels run here?


@kernel
def _probe_kernel(out):  # pragma: no cover (runs on a GPU)
    t = cuda.grid(1)
    if t < out.size:
        out[t] = t


def _probe() -> str | None:
    """Run a tiny kernel on a GPU array; the reason it fails, or None."""
    if not backend.gpu_available():
        return f"no GPU is usable: {backend.gpu_unavailable_reason()}"
    if not cuda.is_available():
        return "numba.cuda finds no usable CUDA driver or device (install the GPU extra: pip install -e '.[gpu]')"
    xp = backend.Device("gpu").xp
    out = xp.zeros(8, dtype=xp.float32)
    if not hasattr(out, "__cuda_array_interface__"):
        return "the GPU arrays in use (a test stand-in?) are not CUDA arrays"
    try:
        _launch_here(_probe_kernel, out.size, out)
        if float(out.sum()) != 28.0:
            return "a test kernel ran but wrote wrong values"
    except Exception as exc:  # compiler (NVVM) or driver failures
        return f"a test kernel failed to compile or run ({type(exc).__name__}: {exc})"
    return None


def gpu_kernels_unavailable_reason() -> str | None:
    """Why the kernels cannot run on this machine's GPU, in words; None when they can (or are simulated)."""
    global _probe_failure
    if cuda is None:
        return _import_failure
    if simulated():
        return None
    if _probe_failure is None:
        _probe_failure = _probe() or ""
    return _probe_failure or None


def gpu_kernels_usable() -> bool:
    """True when the kernels run here: on a GPU through numba.cuda, or on NumPy arrays in the simulator."""
    return gpu_kernels_unavailable_reason() is None


def use_gpu_kernels_for(*arrays: Any) -> bool:
    """Whether a dispatcher should send these arrays to the GPU kernels: all are CUDA arrays (CuPy's) and
    numba.cuda runs on this GPU. NumPy arrays never qualify, even in the simulator (they have Numba's CPU
    kernels)."""
    return all(hasattr(a, "__cuda_array_interface__") for a in arrays) and gpu_kernels_usable()


def require() -> None:
    """Raise GpuKernelsUnavailable (with the reason) unless the kernels can run here."""
    reason = gpu_kernels_unavailable_reason()
    if reason is not None:
        raise GpuKernelsUnavailable(reason)


# ----------------------------------------------------------------------------- launching


def _stream_of(array: Any) -> Any:
    """The numba stream to launch on: the one the CuPy array says its work is queued on.

    The CUDA array interface names it: 1 is the legacy default stream (CuPy's default), 2 the per-thread
    default stream, None "no promise", anything else a stream pointer. Launching there keeps the kernel
    in order with CuPy's work without waiting for the GPU.
    """
    ptr = array.__cuda_array_interface__.get("stream")
    if ptr is None or ptr == 1:
        return cuda.legacy_default_stream()
    if ptr == 2:
        return cuda.per_thread_default_stream()
    if ptr not in _streams:
        _streams[ptr] = cuda.external_stream(ptr)
    return _streams[ptr]


def _as_kernel_argument(value: Any) -> Any:
    """CuPy arrays as numba device arrays without synchronising (numba would by default wait for the whole
    stream before every launch); NumPy arrays (the simulator) and scalars as they are."""
    if hasattr(value, "__cuda_array_interface__") and not simulated():
        return cuda.as_cuda_array(value, sync=False)
    return value


def launch(kernel_function: Any, n_threads: int, *args: Any) -> None:
    """Run `kernel_function` with at least `n_threads` threads (it ignores those past the end), after the
    wrapper checked its arguments. Raises GpuKernelsUnavailable (with the reason) when they cannot run here."""
    require()
    _launch_here(kernel_function, n_threads, *args)


def _launch_here(kernel_function: Any, n_threads: int, *args: Any) -> None:
    if n_threads == 0:
        return
    blocks = math.ceil(n_threads / THREADS_PER_BLOCK)
    arrays = [a for a in args if hasattr(a, "__cuda_array_interface__")]
    converted = [_as_kernel_argument(a) for a in args]
    if arrays and not simulated():
        kernel_function[blocks, THREADS_PER_BLOCK, _stream_of(arrays[0])](*converted)
    else:
        kernel_function[blocks, THREADS_PER_BLOCK](*converted)


# ----------------------------------------------------------------------------- shapes


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair."""
    if not isinstance(value, tuple | list):
        return int(value), int(value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair (rows, columns), got {value!r}")
    return int(value[0]), int(value[1])


def window_geometry(
    x_shape: tuple[int, ...], kh: int, kw: int, stride: Any, padding: Any
) -> tuple[int, int, int, int, int, int]:
    """(sh, sw, ph, pw, OH, OW) of KHxKW windows over an (N, C, H, W) input, checked as the generic kernels do."""
    if len(x_shape) != 4:
        raise ValueError(f"expected an (N, C, H, W) input, got shape {tuple(x_shape)}")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"need kernel >= 1, stride >= 1, padding >= 0; got {(kh, kw)}, {(sh, sw)}, {(ph, pw)}")
    oh, ow = (x_shape[2] + 2 * ph - kh) // sh + 1, (x_shape[3] + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel {(kh, kw)} does not fit the input {tuple(x_shape[2:])} padded by {(ph, pw)}")
    return sh, sw, ph, pw, oh, ow


def check_shape(name: str, array: Any, expected: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(expected)}")


def check_floating(name: str, array: Any) -> None:
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float16, float32 or float64), not {array.dtype}")


def contiguous(array: Any) -> Any:
    """A C-contiguous version of `array` (itself when it already is): the kernels index flat memory."""
    return array if array.flags.c_contiguous else backend.get_array_module(array).ascontiguousarray(array)
