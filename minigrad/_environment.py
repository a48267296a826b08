"""Thread settings that must be in place before NumPy and Numba start their thread pools.

`minigrad/__init__.py` imports this module first, so the settings are made before anything loads NumPy.
"""

import os
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
