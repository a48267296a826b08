"""Thread settings that must be in place before NumPy and Numba start their thread pools, and an opt-in
allocator setting for applications (`keep_freed_memory`).

`minigrad/__init__.py` imports this module first, so the settings are made before anything loads NumPy.
"""

import ctypes
import os
import platform
import sys

# OpenBLAS's idle worker threads spin for a while after each matrix product and, on a 2-core machine,
# starve the Numba kernels (im2col, col2im, pooling) that run between the GEMMs: measured 1.4x slower
# training steps. A short timeout puts them to sleep quickly. OpenBLAS reads it when NumPy loads it.
#
# The same in the other direction: Numba's OpenMP workers spin after every parallel kernel and take a
# core from the GEMM that follows (conv1's matrix products ran at 171 instead of 225 GFLOP/s on 2 cores;
# the paper AlexNet's training step went from 14.8 to 19.7 images/s with this and chunked im2col).
# PASSIVE makes them sleep at once. The OpenMP runtime reads it when it loads, and it is shared: a library
# loaded later in the same process (PyTorch links the same libgomp) gets it too.
#
# An explicit setting by the user wins over both. Both are read once, when the library loads: a script that
# imported NumPy before minigrad keeps OpenBLAS's spinning (conv1's forward + backward: 113-119 ms instead of
# 102-105 ms at batch 32 on 2 cores). `openblas_timeout_too_late` records that case; import minigrad first.
ENVIRONMENT_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

# The ones minigrad set (not the user): the benchmarks leave them out of PyTorch's process, to time it as-is.
environment_defaults_applied = [name for name in ENVIRONMENT_DEFAULTS if name not in os.environ]
os.environ.update({name: ENVIRONMENT_DEFAULTS[name] for name in environment_defaults_applied})

# NumPy (and with it OpenBLAS) was already loaded, so OpenBLAS never saw the timeout minigrad set.
openblas_timeout_too_late = "OPENBLAS_THREAD_TIMEOUT" in environment_defaults_applied and "numpy" in sys.modules

# glibc's malloc settings that keep_freed_memory makes (mallopt parameter numbers from <malloc.h>)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation instead of handing it back (process-wide).

    By default glibc gives every allocation above its mmap threshold (32 MB at most) fresh pages from the
    kernel and returns them on free, so the first write to each 4 KB page of a large NumPy array is a page
    fault: on the 2-core test machine, allocating and filling 37 MB took 5.0 ms instead of 1.6 ms. A training
    step allocates the same large arrays every time; kept, they are reused (paper AlexNet, batch 32, CPU:
    1,178 -> 1,035 ms per step, peak memory the same 1.37 GB). Up to KEEP_FREED_BYTES per allocation come
    from the heap and up to that much free memory is kept.

    This is an application's choice, not a library's: minigrad never calls it on import; the `alexnet`
    command does. Returns True when applied; False without glibc (nothing changes) or when one of
    MALLOC_VARIABLES is set (your own malloc settings win).
    """
    if any(name in os.environ for name in MALLOC_VARIABLES) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
