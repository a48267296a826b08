"""Local response normalisation (the paper's Section 3.3) and dropout."""

from __future__ import annotations

from minigrad import backend
from minigrad.backend import get_array_module
from minigrad.tensor import Array, Function, Tensor


def _channel_window_sum(a: Array, before: int, after: int) -> Array:
    """s[:, i] = sum of a[:, j] for j in [i - before, i + after] (clipped to the channels).

    One cumulative sum along the channels, so the cost is O(N*C*H*W) whatever the
    window size, instead of one shifted copy per neighbour.
    """
    xp = get_array_module(a)
    n, c = a.shape[:2]
    padded = xp.zeros((n, c + before + after + 1, *a.shape[2:]), dtype=a.dtype)
    padded[:, before + 1 : before + 1 + c] = a
    csum = xp.cumsum(padded, axis=1)
    size = before + after + 1
    return csum[:, size : size + c] - csum[:, :c]


def _pow_neg_beta(scale: Array, beta: float) -> Array:
    """scale ** -beta; for the paper's beta = 0.75, sqrt(s) * sqrt(sqrt(s)) is several times faster than pow."""
    xp = get_array_module(scale)
    if beta == 0.75:
        root = xp.sqrt(scale)
        return 1 / (root * xp.sqrt(root))
    return scale ** (-beta)


class LocalResponseNorm(Function):
    def forward(self, x: Array) -> Array:
        size = self.size
        # Window for channel i: [i - size//2, i + (size-1)//2] (symmetric for odd sizes, as in the paper).
        self.before, self.after = size // 2, (size - 1) // 2
        scale = _channel_window_sum(x * x, self.before, self.after)
        scale *= x.dtype.type(self.alpha_eff)
        scale += x.dtype.type(self.k)
        self.x, self.scale = x, scale
        self.inv = _pow_neg_beta(scale, self.beta)
        return x * self.inv

    def backward(self, grad: Array) -> Array:
        # y_j = x_j * s_j^-b with s_j = k + a * sum_{i in win(j)} x_i^2, so
        # dL/dx_i = g_i s_i^-b - 2ab x_i * sum_{j : i in win(j)} g_j x_j s_j^(-b-1).
        # The set {j : i in win(j)} is the mirrored window (before and after swapped).
        x, scale, inv = self.x, self.scale, self.inv
        t = grad * x * inv / scale
        back = _channel_window_sum(t, self.after, self.before)
        coef = x.dtype.type(2 * self.alpha_eff * self.beta)
        return grad * inv - coef * x * back


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


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p).

    Identity when not training (or p == 0), so evaluation needs no rescaling.
    The mask comes from the device's seeded generator (`minigrad.manual_seed`).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    gen = backend.rng(x.device)
    keep = gen.random(x.shape, dtype=x.dtype) >= x.dtype.type(p)
    mask = keep * x.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(x, mask=mask)
