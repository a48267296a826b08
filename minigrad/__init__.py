"""minigrad: a small NumPy/CuPy tensor library with reverse-mode autograd.

import minigrad as mg
x = mg.tensor([[1.0, 2.0]], requires_grad=True)
y = (x * x).sum()
y.backward()          # x.grad == 2 * x
"""

import os

# OpenBLAS's idle worker threads spin for a while after each matrix product and, on a 2-core machine,
# starve the Numba kernels (im2col, col2im, pooling) that run between the GEMMs: measured 1.4x slower
# training steps. A short timeout puts them to sleep quickly. It must be set before NumPy is imported,
# and an explicit setting by the user wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# The same in the other direction: Numba's OpenMP workers spin after every parallel kernel and take a
# core from the GEMM that follows (conv1's matrix products ran at 171 instead of 225 GFLOP/s on 2 cores).
# PASSIVE makes them sleep at once. It must be set before Numba's OpenMP runtime loads; it applies to
# every OpenMP library in the process, and an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minigrad import backend, functional, nn, optim
from minigrad.backend import Device, gpu_available, manual_seed
from minigrad.gradcheck import GradcheckReport, gradcheck
from minigrad.tensor import Function, Tensor, enable_grad, no_grad, ones, rand, randn, tensor, zeros

__version__ = "0.1.0"

__all__ = [
    "Device",
    "Function",
    "GradcheckReport",
    "Tensor",
    "backend",
    "enable_grad",
    "functional",
    "gpu_available",
    "gradcheck",
    "manual_seed",
    "nn",
    "no_grad",
    "ones",
    "optim",
    "rand",
    "randn",
    "tensor",
    "zeros",
]
