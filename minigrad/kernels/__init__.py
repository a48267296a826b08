"""The fast paths on raw arrays, and their plain xp-generic twins. No autograd here: `minigrad.functional`
calls these.

One idea per file, each read top-down: the plain version (xp calls only, NumPy or CuPy) first, then the
compiled Numba loop for NumPy float32/float64 on the CPU beside its wrapper, then the function that picks one.
- `shapes.py`: window geometry shared by every layer (`pair`, `output_size`, `IntPair`);
- `dispatch.py`: whether Numba may run (`fastest`, `force_generic`, the compile notice); the only Numba import;
- `im2col.py`: im2col / col2im, and `ChunkedIm2col`, which unfolds one input block by block;
- `pooling.py`: max pooling forward (with the winners) and backward;
- `lrn.py`: local response normalisation forward and backward;
- `sgd.py`: the SGD-with-momentum update, in place;
- `cpu_threads.py`: `split_over_cores`, minigrad's own CPU threads: the parts of a loop one per core, the
  BLAS on one thread meanwhile (every product and compiled loop of the CPU ops runs on them);
- `matmul_cpu.py`: `matmul2d`, a @ b cut into one block per core (what `F.linear` and `F.matmul` call);
- `conv_cpu.py`: conv2d tuned for the CPU (chunks of images, the bias row, its products split over the
  cores), equal to the plain `Conv2d` in `minigrad/functional/conv.py`.

May import: NumPy, `minigrad.backend`, and (optionally) Numba and threadpoolctl; never `minigrad.functional`.
"""

from .conv_cpu import ChunkedConv2d
from .cpu_threads import cpu_cores, cpu_gemm_threads, split_over_cores
from .dispatch import NumbaUnavailable, fastest, force_generic, numba_available, show_compile_notice
from .im2col import (
    ChunkedIm2col,
    col2im,
    col2im_generic,
    col2im_numba,
    im2col,
    im2col_generic,
    im2col_numba,
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
from .matmul_cpu import matmul2d, matmul_split
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
from .shapes import IntPair, output_size, pair

__all__ = [
    "ARGMAX_DTYPE",
    "ChunkedConv2d",
    "ChunkedIm2col",
    "IntPair",
    "NumbaUnavailable",
    "col2im",
    "col2im_generic",
    "col2im_numba",
    "cpu_cores",
    "cpu_gemm_threads",
    "fastest",
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
    "matmul2d",
    "matmul_split",
    "max_pool2d_backward",
    "max_pool2d_backward_generic",
    "max_pool2d_backward_numba",
    "max_pool2d_forward",
    "max_pool2d_forward_generic",
    "max_pool2d_forward_numba",
    "numba_available",
    "output_size",
    "pair",
    "sgd_momentum_step",
    "sgd_momentum_step_generic",
    "sgd_momentum_step_numba",
    "show_compile_notice",
    "split_over_cores",
    "window_view",
]
