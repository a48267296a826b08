"""minigrad: a small NumPy/CuPy tensor library with reverse-mode autograd.

import minigrad as mg
x = mg.tensor([[1.0, 2.0]], requires_grad=True)
y = (x * x).sum()
y.backward()          # x.grad == 2 * x
"""

from minigrad import backend, functional, nn, optim
from minigrad._environment import keep_freed_memory
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
    "keep_freed_memory",
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
