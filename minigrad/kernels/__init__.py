"""Convolution, pooling and local response normalisation kernels on raw arrays, and the SGD update.

No autograd here: the ops in `minigrad.functional` call these.

Every public kernel dispatches: NumPy float32/float64 input goes to a compiled Numba loop when Numba is
usable, anything else (CuPy arrays, float16, no Numba) to an `xp`-generic version that runs on any backend.
Both versions are exported too, so they can be compared. `split_over_cores` runs independent CPU matrix
products side by side, one core each (conv2d does, image by image, for large output planes).
"""

from ._numba import NumbaUnavailable, force_generic, numba_available
from .cpu_threads import cpu_gemm_threads, split_over_cores
from .im2col import (
    ChunkedIm2col,
    col2im,
    col2im_generic,
    col2im_numba,
    im2col,
    im2col_generic,
    im2col_numba,
    output_size,
    window_view,
)
from .lrn import (
    lrn_backward,
    lrn_backward_generic,
    lrn_backward_numba,
    lrn_forward,
    lrn_forward_generic,
    lrn_forward_numba,
)
from .pooling import (
    ARGMAX_DTYPE,
    max_pool2d_backward,
    max_pool2d_backward_generic,
    max_pool2d_backward_numba,
    max_pool2d_forward,
    max_pool2d_forward_generic,
    max_pool2d_forward_numba,
)
from .sgd import sgd_momentum_step, sgd_momentum_step_generic, sgd_momentum_step_numba

__all__ = [
    "ARGMAX_DTYPE",
    "ChunkedIm2col",
    "NumbaUnavailable",
    "col2im",
    "col2im_generic",
    "col2im_numba",
    "cpu_gemm_threads",
    "force_generic",
    "im2col",
    "im2col_generic",
    "im2col_numba",
    "lrn_backward",
    "lrn_backward_generic",
    "lrn_backward_numba",
    "lrn_forward",
    "lrn_forward_generic",
    "lrn_forward_numba",
    "max_pool2d_backward",
    "max_pool2d_backward_generic",
    "max_pool2d_backward_numba",
    "max_pool2d_forward",
    "max_pool2d_forward_generic",
    "max_pool2d_forward_numba",
    "numba_available",
    "output_size",
    "sgd_momentum_step",
    "sgd_momentum_step_generic",
    "sgd_momentum_step_numba",
    "split_over_cores",
    "window_view",
]
