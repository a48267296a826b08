"""Thread settings that must be in place before NumPy and Numba start their thread pools.

`minigrad/__init__.py` imports this module first, so the settings are made before anything loads NumPy.
"""

import os

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
# An explicit setting by the user wins over both.
ENVIRONMENT_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

# The ones minigrad set (not the user): the benchmarks leave them out of PyTorch's process, to time it as-is.
environment_defaults_applied = [name for name in ENVIRONMENT_DEFAULTS if name not in os.environ]
os.environ.update({name: ENVIRONMENT_DEFAULTS[name] for name in environment_defaults_applied})
