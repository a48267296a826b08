"""Checks of lesson 5: the learner's LRN backward pass against minigrad's F.local_response_norm."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import minigrad as mg
import minigrad.functional as F

from . import check_close

# (x shape, size, alpha, beta, k, activation scale): the paper's constants on activations large enough that
# the neighbours' term matters, and other constants (an even window, another beta) to catch a wrong window
CASES = [
    ((2, 8, 3, 3), 5, 1e-4, 0.75, 2.0, 60.0),
    ((1, 7, 2, 4), 3, 1e-2, 0.5, 1.0, 5.0),
    ((2, 6, 2, 2), 4, 5e-3, 0.75, 2.0, 8.0),
]


def check_lrn_backward(lrn_backward_numpy: Callable, bound: float = 1e-6) -> None:
    """lrn_backward_numpy(grad, x, size, alpha, beta, k) equals the backward pass of F.local_response_norm."""
    rng = np.random.default_rng(5)
    for shape, size, alpha, beta, k, scale in CASES:
        x = mg.tensor(rng.standard_normal(shape) * scale, dtype="float64", requires_grad=True)
        grad = rng.standard_normal(shape)
        F.local_response_norm(x, size=size, alpha=alpha, beta=beta, k=k).backward(mg.tensor(grad, dtype="float64"))
        dx = lrn_backward_numpy(grad, x.numpy(), size, alpha, beta, k)
        check_close(f"LRN dx (size {size}, alpha {alpha:g}, beta {beta:g}, k {k:g})", dx, x.grad.numpy(), bound)
