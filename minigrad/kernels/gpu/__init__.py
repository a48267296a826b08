"""GPU kernels for the ops that generic array code does slowly on a GPU, written with numba.cuda.

One file per idea, each kernel the twin of an xp-generic kernel in `minigrad.kernels` (read that one
first: it is the definition), with the same signature and the same results:

- `pooling`: max-pool forward (one thread per output) and backward (a gather: one thread per input pixel);
- `lrn`: local response normalisation forward and backward, each output summing its own channel window;
- `col2im`: the adjoint of im2col as a gather, one thread per input pixel: no atomics, deterministic;
- `im2col`: the columns in one pass, padding included, optionally with the convolution's bias rows;
- `sgd`: the fused SGD-with-momentum update, one pass over memory.

`_common` holds what they share: numba.cuda (or why it is missing), the launch, the checks. This folder never
imports CuPy: numba.cuda takes CuPy arrays through the CUDA array interface, and the outputs come from the
input's array module. `use_gpu_kernels_for(*arrays)` says whether a dispatcher may send arrays here (CuPy
arrays, and numba.cuda runs on this GPU). Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same
kernels run thread by thread on NumPy arrays: that is how the tests check them without a GPU.
"""

from ._common import (
    GpuKernelsUnavailable,
    gpu_kernels_unavailable_reason,
    gpu_kernels_usable,
    simulated,
    use_gpu_kernels_for,
)
from .col2im import col2im_gpu
from .im2col import im2col_bias_rows_gpu, im2col_gpu
from .lrn import lrn_backward_gpu, lrn_forward_gpu
from .pooling import max_pool2d_backward_gpu, max_pool2d_forward_gpu
from .sgd import sgd_momentum_step_gpu

__all__ = [
    "GpuKernelsUnavailable",
    "col2im_gpu",
    "gpu_kernels_unavailable_reason",
    "gpu_kernels_usable",
    "im2col_bias_rows_gpu",
    "im2col_gpu",
    "lrn_backward_gpu",
    "lrn_forward_gpu",
    "max_pool2d_backward_gpu",
    "max_pool2d_forward_gpu",
    "sgd_momentum_step_gpu",
    "simulated",
    "use_gpu_kernels_for",
]
