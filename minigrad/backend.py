"""Devices, array modules and random numbers.

This is the only module that imports CuPy. Everything else asks it for the
array module (`xp`) that goes with an array or a device, so the same op code
runs on NumPy (CPU) and CuPy (GPU).

`import cupy` succeeds on machines without a GPU; the first device operation
is what fails. So `gpu_available()` probes: it imports CuPy, asks whether a
device is usable, and runs a tiny matmul and a random draw. The answer (and
the reason when the answer is no) is cached.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.dtype(np.float32)

_gpu_probe: tuple[ModuleType | None, str | None] | None = None  # (cupy or None, why not)
_gpu_override: ModuleType | None = None  # a CuPy stand-in installed by the tests
_seed = 0
_rngs: dict[str, Any] = {}


# ----------------------------------------------------------------------------- GPU probe


def _probe_cupy() -> tuple[ModuleType | None, str | None]:
    try:
        import cupy
    except ImportError as exc:
        return None, (
            f"CuPy is not installed ({exc}). Install the GPU extra: "
            "pip install -e '.[gpu]' (CUDA 13) or pip install cupy-cuda12x (CUDA 12)"
        )
    try:
        if not cupy.is_available():
            return None, "CuPy is installed but finds no usable CUDA device (no GPU, or no driver)"
        a = cupy.arange(16, dtype=cupy.float32).reshape(4, 4)
        r = cupy.random.default_rng(0).random(4, dtype=cupy.float32)
        float((a @ a).sum() + r.sum())
    except Exception as exc:  # any CUDA/driver failure means "no usable GPU"
        return None, f"CuPy is installed but a test operation on the GPU failed: {type(exc).__name__}: {exc}"
    return cupy, None


def _gpu_module() -> ModuleType | None:
    global _gpu_probe
    if _gpu_override is not None:
        return _gpu_override
    if _gpu_probe is None:
        _gpu_probe = _probe_cupy()
    return _gpu_probe[0]


def gpu_available() -> bool:
    """True when a GPU array module is usable (CuPy with a working device, or a test stand-in)."""
    return _gpu_module() is not None


def gpu_unavailable_reason() -> str | None:
    """Why `gpu_available()` is False, in words; None when a GPU is usable."""
    if _gpu_module() is not None:
        return None
    assert _gpu_probe is not None
    return _gpu_probe[1]


@contextlib.contextmanager
def use_gpu_module(module: ModuleType) -> Iterator[ModuleType]:
    """Make `module` play CuPy's part (the tests' strict stand-in). Restores the previous one on exit."""
    global _gpu_override
    previous, _gpu_override = _gpu_override, module
    try:
        yield module
    finally:
        _gpu_override = previous
        _rngs.pop("gpu", None)


def _loaded_gpu_module() -> ModuleType | None:
    """The GPU module if one is in use (cheap; used on every op). Probes only when the program has imported
    CuPy itself, so that CuPy arrays handed straight to an op or kernel are recognised as GPU arrays."""
    if _gpu_override is not None:
        return _gpu_override
    if _gpu_probe is None:
        return _gpu_module() if "cupy" in sys.modules else None
    return _gpu_probe[0]


# ----------------------------------------------------------------------------- devices


class Device:
    """A place where arrays live: `Device('cpu')`, `Device('gpu')`, `Device('cuda')`, `Device('cuda:1')`."""

    __slots__ = ("index", "kind")

    def __init__(self, spec: str | Device = "cpu") -> None:
        if isinstance(spec, Device):
            self.kind, self.index = spec.kind, spec.index
            return
        text = str(spec).strip().lower()
        m = re.fullmatch(r"(cpu|gpu|cuda)(?::(\d+))?", text)
        if m is None:
            raise ValueError(f"unknown device {spec!r}: use 'cpu', 'gpu', 'cuda' or 'cuda:N'")
        kind = "cpu" if m.group(1) == "cpu" else "gpu"
        if kind == "cpu" and m.group(2) is not None:
            raise ValueError(f"unknown device {spec!r}: the CPU has no index")
        self.kind, self.index = kind, int(m.group(2) or 0)

    @property
    def xp(self) -> ModuleType:
        """The array module for this device (NumPy or CuPy). Raises when the GPU is not usable."""
        if self.kind == "cpu":
            return np
        module = _gpu_module()
        if module is None:
            raise RuntimeError(f"device {self} was asked for but no GPU is usable: {gpu_unavailable_reason()}")
        return module

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    def __repr__(self) -> str:
        return f"Device('{self}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except ValueError:
                return False
        return isinstance(other, Device) and (self.kind, self.index) == (other.kind, other.index)

    def __hash__(self) -> int:
        return hash((self.kind, self.index))


_CPU = Device("cpu")  # device_of hands out this one object: ops ask it for every input


def is_gpu_array(array: Any) -> bool:
    module = _loaded_gpu_module()
    return module is not None and isinstance(array, module.ndarray)


def get_array_module(*arrays: Any) -> ModuleType:
    """NumPy, or the GPU module when any argument is a GPU array. Non-arrays are ignored."""
    module = _loaded_gpu_module()
    if module is not None:
        for a in arrays:
            if isinstance(a, module.ndarray):
                return module
    return np


def device_of(array: Any) -> Device:
    """The device an array lives on."""
    if is_gpu_array(array):
        dev = getattr(array, "device", None)
        return Device(f"cuda:{getattr(dev, 'id', 0)}")
    return _CPU


def to_device(array: Any, device: str | Device) -> Any:
    """Copy `array` to `device` (no copy when it is already there)."""
    device = Device(device)
    if device.kind == "cpu":
        if is_gpu_array(array):
            return _loaded_gpu_module().asnumpy(array)
        return np.asarray(array)
    xp = device.xp
    if isinstance(array, xp.ndarray) and device_of(array) == device:
        return array
    with _cuda_device(xp, device.index):
        # cupy.asarray returns an array of another GPU as it is; an explicit copy lands on this one
        return xp.array(array, copy=True) if isinstance(array, xp.ndarray) else xp.asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy (or view) of any array."""
    return to_device(array, "cpu")


def _cuda_device(xp: ModuleType, index: int) -> contextlib.AbstractContextManager:
    cuda = getattr(xp, "cuda", None)
    if cuda is None or not hasattr(cuda, "Device"):
        return contextlib.nullcontext()
    return cuda.Device(index)


def synchronize(device: str | Device = "gpu") -> None:
    """Wait for queued GPU work (so timings mean something). No-op on the CPU."""
    device = Device(device)
    if device.kind == "gpu":
        xp = device.xp
        cuda = getattr(xp, "cuda", None)
        if cuda is not None and hasattr(cuda, "Device"):
            cuda.Device(device.index).synchronize()


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """`target[index] += values` where repeated indices add up (NumPy's `add.at`), in place.

    NumPy has `np.add.at`; so does CuPy since version 12 (older ones only `cupyx.scatter_add`, which
    CuPy 14 deprecates). Any other array module (the tests' stand-in) gets a portable version built on
    `bincount`.
    """
    if isinstance(target, np.ndarray):
        np.add.at(target, index, values)
        return
    module = get_array_module(target)
    if _gpu_probe is not None and module is _gpu_probe[0]:
        add_at = getattr(module.add, "at", None)
        if add_at is not None:
            add_at(target, index, values)
        else:
            import cupyx

            cupyx.scatter_add(target, index, values)
        return
    # Which flat positions does `index` select? Index an array of positions the same way.
    positions = module.arange(target.size).reshape(target.shape)[index]
    values = module.broadcast_to(values, positions.shape)
    # bincount accumulates in float64; the sum is cast back explicitly to the target's dtype.
    summed = module.bincount(positions.ravel(), weights=values.ravel(), minlength=target.size)
    target += summed.reshape(target.shape).astype(target.dtype)


# ----------------------------------------------------------------------------- random numbers


def manual_seed(seed: int) -> None:
    """Seed every device's random source (weights init, dropout masks, data shuffling)."""
    global _seed
    _seed = int(seed)
    _rngs.clear()


def rng(device: str | Device = "cpu") -> Any:
    """The seeded random Generator of a device (`numpy.random.Generator` or CuPy's).

    CuPy's Generator has no `normal`, `permutation` or `choice`: use
    `standard_normal(size, dtype=...)`, `random(size, dtype=...)`, and shuffle on the host.
    """
    device = Device(device)
    key = device.kind
    if key not in _rngs:
        # Different streams per device, so a CPU and a GPU run are not secretly correlated.
        _rngs[key] = device.xp.random.default_rng(_seed if key == "cpu" else _seed + 7919)
    return _rngs[key]


def get_rng_state() -> dict[str, Any]:
    """The CPU generator's state and the seed (enough to resume a CPU run exactly)."""
    return {"seed": _seed, "cpu": rng("cpu").bit_generator.state}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned. The GPU stream restarts from the seed."""
    manual_seed(state["seed"])
    rng("cpu").bit_generator.state = state["cpu"]


# ----------------------------------------------------------------------------- what the GPU is (selfcheck, benchmarks)


def _attempt(function: Any, default: Any = None) -> Any:
    """function() or `default` when it raises: each fact about the GPU is gathered on its own, so that one
    the driver cannot tell (or a stand-in lacks) does not hide the others."""
    try:
        return function()
    except Exception:
        return default


def _cuda_version(number: int | None) -> str | None:
    """CUDA's integer versions (13000, 12040) as text ('13.0', '12.4')."""
    return None if number is None else f"{number // 1000}.{number % 1000 // 10}"


def gpu_info(device: str | Device = "gpu") -> dict[str, Any]:
    """What the GPU path would run on, for `minigrad selfcheck` and the benchmarks' headers.

    Keys: usable (bool), reason (why not, or None), cupy (version or None), cuda_runtime, cuda_driver
    (versions as 'major.minor'), name, compute_capability ('9.0'), memory_total and memory_free (bytes).
    A fact that cannot be read is None. Never raises: with no GPU it says why in `reason`.
    """
    module = _gpu_module()
    cupy = module if module is not None else sys.modules.get("cupy")  # imported even when no device works
    info: dict[str, Any] = {
        "usable": module is not None,
        "reason": gpu_unavailable_reason(),
        "cupy": getattr(cupy, "__version__", None),
        "cuda_runtime": None,
        "cuda_driver": None,
        "name": None,
        "compute_capability": None,
        "memory_total": None,
        "memory_free": None,
    }
    runtime = getattr(getattr(cupy, "cuda", None), "runtime", None)
    if runtime is not None:
        info["cuda_runtime"] = _cuda_version(_attempt(runtime.runtimeGetVersion))
        info["cuda_driver"] = _cuda_version(_attempt(runtime.driverGetVersion))
    if module is None:
        return info
    index = Device(device).index
    if runtime is not None:
        name = _attempt(lambda: runtime.getDeviceProperties(index)["name"])
        info["name"] = name.decode() if isinstance(name, bytes) else name
    cuda_device = _attempt(lambda: module.cuda.Device(index))
    capability = getattr(cuda_device, "compute_capability", None)  # '90'
    if isinstance(capability, str) and len(capability) >= 2:
        info["compute_capability"] = f"{capability[:-1]}.{capability[-1]}"
    memory = _attempt(lambda: cuda_device.mem_info)  # (free, total)
    if memory is not None:
        info["memory_free"], info["memory_total"] = int(memory[0]), int(memory[1])
    return info


def _memory_pool(device: Device) -> Any:
    """CuPy's default device memory pool, or None (no GPU, or the tests' stand-in, which has none)."""
    if device.kind != "gpu" or _gpu_probe is None or _gpu_probe[0] is None or _gpu_override is not None:
        return None
    return _attempt(_gpu_probe[0].get_default_memory_pool)


def reset_peak_gpu_memory(device: str | Device = "gpu") -> None:
    """Start measuring `peak_gpu_memory` from here: CuPy's pool gives its unused blocks back to the driver,
    so it holds only the arrays alive now. No-op on the CPU."""
    device = Device(device)
    pool = _memory_pool(device)
    if pool is not None:
        synchronize(device)
        with _cuda_device(_gpu_probe[0], device.index):
            pool.free_all_blocks()


def peak_gpu_memory(device: str | Device = "gpu") -> int | None:
    """Bytes of device memory CuPy's pool holds: since `reset_peak_gpu_memory` the pool only grows (it keeps
    freed blocks for reuse), so this is the most it needed at any moment since then, fragmentation included.
    None on the CPU and with the tests' stand-in."""
    device = Device(device)
    pool = _memory_pool(device)
    if pool is None:
        return None
    with _cuda_device(_gpu_probe[0], device.index):
        return int(pool.total_bytes())


# ----------------------------------------------------------------------------- GEMM precision (amp)


def _cupy_linalg() -> Any:
    """CuPy's matmul internals (where its cuBLAS compute type is chosen), or None without real CuPy."""
    if _gpu_override is not None or _gpu_module() is None:
        return None
    import importlib

    return _attempt(lambda: importlib.import_module("cupy._core._routines_linalg"))


def gemm_compute_type(dtype: Any = DEFAULT_DTYPE) -> str:
    """How CuPy's matrix products of `dtype` compute, e.g. 'COMPUTE_TYPE_DEFAULT' or 'COMPUTE_TYPE_TF32';
    'numpy' when no real CuPy runs them. (CuPy multiplies float16 with cuBLAS's CUBLAS_COMPUTE_32F: fp32
    accumulation, whatever this says.)"""
    linalg = _cupy_linalg()
    if linalg is None:
        return "numpy"
    return str(_attempt(lambda: linalg.compute_type_to_str(linalg.get_compute_type(np.dtype(dtype))), "unknown"))


def set_tf32(enabled: bool) -> bool:
    """Let CuPy's float32 matrix products use TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation),
    or stop them. Takes effect from the next product. Returns True when the setting holds.

    CuPy reads the environment variable CUPY_TF32 once, at its first float32 product (the GPU probe already
    runs one), and keeps the answer; its compute-type setter changes it at any time, so that is used. Where
    the setter is missing, CUPY_TF32 is set instead, which holds only if no float32 product has run yet: the
    return value is then False. On the CPU (NumPy has no TF32) this does nothing and returns False.
    """
    if _gpu_override is not None or _gpu_module() is None:
        return False
    linalg = _cupy_linalg()
    setter = getattr(linalg, "set_compute_type", None)
    if setter is not None:
        mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
        return _attempt(lambda: setter(np.dtype(np.float32), mode) or True, False)
    import os

    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    return False


# ----------------------------------------------------------------------------- NCCL


def nccl() -> ModuleType:
    """CuPy's NCCL bindings (`cupy.cuda.nccl`), which `minigrad.distributed` uses to sum gradients across GPUs.

    Imported on first use. Raises RuntimeError saying why when no GPU is usable or NCCL is missing.
    """
    if _gpu_module() is None:
        raise RuntimeError(f"NCCL needs a usable GPU: {gpu_unavailable_reason()}")
    try:
        from cupy.cuda import nccl as module
    except ImportError as exc:
        raise RuntimeError(f"CuPy's NCCL bindings cannot be imported ({exc})") from exc
    if not getattr(module, "available", False):
        raise RuntimeError(
            "CuPy finds no NCCL library: install the one for your CUDA (pip install nvidia-nccl-cu13, or "
            "nvidia-nccl-cu12 for CUDA 12), or see CuPy's installation guide"
        )
    return module


# ----------------------------------------------------------------------------- host-to-device overlap

_copy_streams: dict[int, Any] = {}  # device index -> the side stream that copies batches to it


def _real_cupy() -> ModuleType | None:
    """CuPy when a GPU is usable; None on the CPU and with the tests' stand-in (no streams, no pinned memory)."""
    if _gpu_override is not None:
        return None
    return _gpu_module()


def pinned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised NumPy array in page-locked ("pinned") host memory: the GPU's copy engine reads it
    directly, so a copy from it (`to_device_async`) runs while the GPU computes. A plain `np.empty` when no
    real GPU is usable."""
    cupy = _real_cupy()
    if cupy is None:
        return np.empty(shape, dtype)
    import cupyx

    return cupyx.empty_pinned(shape, dtype)


class CopyEvent:
    """The end of a copy started by `to_device_async` (a CUDA event on its device), or of a copy that was done
    at once (event None: both waits return at once)."""

    def __init__(self, event: Any = None, index: int = 0) -> None:
        self.event, self.index = event, index

    def wait_on_device(self) -> None:
        """Work queued on the device's current stream from now on starts after the copy (the host does not
        wait): call it before using the copied array."""
        if self.event is not None:
            cupy = _real_cupy()
            with _cuda_device(cupy, self.index):
                cupy.cuda.get_current_stream().wait_event(self.event)

    def wait_on_host(self) -> None:
        """Block until the copy has read its host array (before that array is written again)."""
        if self.event is not None:
            self.event.synchronize()


def _copy_stream(cupy: ModuleType, index: int) -> Any:
    if index not in _copy_streams:
        with _cuda_device(cupy, index):
            _copy_streams[index] = cupy.cuda.Stream(non_blocking=True)
    return _copy_streams[index]


def to_device_async(host_array: np.ndarray, device: str | Device) -> tuple[Any, CopyEvent]:
    """Start copying `host_array` to `device` on a side stream, so the copy overlaps the work already queued
    on the current stream. Returns (the device array, the copy's `CopyEvent`): call `wait_on_device()` before
    using the array and `wait_on_host()` before writing `host_array` again. Only a pinned `host_array`
    (`pinned_empty`) is copied asynchronously; CUDA copies pageable memory synchronously.

    On the CPU and with the tests' stand-in this is `to_device` (a copy that is complete on return).
    """
    device = Device(device)
    cupy = _real_cupy()
    if device.kind == "cpu" or cupy is None:
        return to_device(host_array, device), CopyEvent()
    with _cuda_device(cupy, device.index):
        current = cupy.cuda.get_current_stream()
        # Allocated on the current stream, so that when it is freed CuPy's pool hands its block to that stream
        # only, which runs in order. The block may be one freed by work still queued there: the copy waits
        # for that work first.
        out = cupy.empty(host_array.shape, host_array.dtype)
        side = _copy_stream(cupy, device.index)
        side.wait_event(current.record())
        out.set(host_array, stream=side)
        return out, CopyEvent(side.record(), device.index)
