"""Local response normalisation (the paper's Section 3.3) and dropout."""

from __future__ import annotations

import numpy as np

from minigrad import backend
from minigrad.kernels import lrn_backward, lrn_forward
from minigrad.tensor import Array, Function, Tensor


class LocalResponseNorm(Function):
    # The raw-array work lives in `minigrad/kernels/lrn.py`: read its xp-generic version first (window sums
    # through a strided view); the fused Numba loop beside it gives the same result on the CPU. This class
    # only keeps what the backward pass needs: x and scale (k is inside scale).
    def forward(self, x: Array) -> Array:
        # Window for channel i: [i - size//2, i + (size-1)//2] (symmetric for odd sizes, as in the paper).
        y, scale = lrn_forward(x, self.size, self.alpha_eff, self.beta, self.k)
        self.x, self.scale = x, scale
        return y

    def backward(self, grad: Array) -> Array:
        # y_j = x_j * s_j^-b with s_j = k + a * sum_{i in win(j)} x_i^2, so
        # dL/dx_i = g_i s_i^-b - 2ab x_i * sum_{j : i in win(j)} g_j x_j s_j^(-b-1).
        # The set {j : i in win(j)} is the mirrored window (before and after swapped).
        return lrn_backward(grad, self.x, self.scale, self.size, self.alpha_eff, self.beta)


def local_response_norm(
    x: Tensor,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 2.0,
    alpha_over_size: bool = False,
) -> Tensor:
    """Local response normalisation across channels. x: (N, C, H, W) -> same shape.

    b_i = a_i / (k + alpha' * sum_{j in window(i)} a_j^2) ** beta, the window being
    `size` neighbouring channels centred on i. The paper uses alpha' = alpha
    (defaults: size 5, alpha 1e-4, beta 0.75, k 2). Caffe and PyTorch divide alpha by
    the size: pass `alpha_over_size=True` for their convention.
    """
    if x.ndim < 3:
        raise ValueError(f"local_response_norm expects x of shape (N, C, ...), got shape {x.shape}")
    if size < 1:
        raise ValueError(f"local_response_norm: size must be >= 1, got {size}")
    alpha_eff = alpha / size if alpha_over_size else alpha
    return LocalResponseNorm.apply(x, size=int(size), alpha_eff=float(alpha_eff), beta=float(beta), k=float(k))


class Dropout(Function):
    def forward(self, x: Array) -> Array:
        return x * self.mask

    def backward(self, grad: Array) -> Array:
        return grad * self.mask


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, rows: slice | None = None, n_global: int | None = None
) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p).

    Identity when not training (or p == 0), so evaluation needs no rescaling.
    The mask comes from the device's seeded generator (`minigrad.manual_seed`).

    Data parallelism: when x (B, ...) holds rows `rows` of a global batch of `n_global` rows split over
    processes, the mask of the whole global batch (n_global, ...) is drawn and x gets its rows of it, so every
    process draws the same numbers and N processes drop exactly what one process would.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    gen = backend.rng(x.device)
    # Generators draw float32 or float64 only; float16 input compares float32 draws.
    draw = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    shape = x.shape if n_global is None else (n_global, *x.shape[1:])
    keep = gen.random(shape, dtype=draw)[rows if rows is not None else slice(None)] >= draw.type(p)
    if keep.shape != x.shape:
        raise ValueError(f"dropout rows {rows} of a global batch of {n_global} do not fit an input of {x.shape}")
    mask = keep * x.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(x, mask=mask)
