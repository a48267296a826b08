"""An opt-in allocator setting for applications: `keep_freed_memory`.

Importing minigrad changes nothing in the process's environment or its libraries' settings. Thread pools
need no setting either: minigrad's CPU ops run their matrix products and compiled loops on threads of
their own (minigrad/kernels/cpu_threads.py), whatever was imported first.
"""

import ctypes
import os
import platform

# glibc's malloc settings that keep_freed_memory makes (mallopt parameter numbers from <malloc.h>)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation instead of handing it back (process-wide).

    By default glibc gives every allocation above its mmap threshold (32 MB at most) fresh pages from the
    kernel and returns them on free, so the first write to each 4 KB page of a large NumPy array is a page
    fault. A training step allocates the same large arrays every time; kept, they are reused without those
    faults, at the same peak memory (benchmarks/README.md has the measurements). Up to KEEP_FREED_BYTES per
    allocation come from the heap and up to that much free memory is kept.

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
