"""Checks of lesson 3: the learner's conv_backward_naive against the backward pass of minigrad's F.conv2d."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import minigrad as mg
import minigrad.functional as F

from . import check_close

# (x shape, w shape, stride, pad): a strided padded case and a stride-1 case with a wide kernel
CASES = [((2, 3, 7, 7), (4, 3, 3, 3), 2, 1), ((1, 2, 6, 5), (3, 2, 5, 5), 1, 2)]


def check_conv_backward(conv_backward_naive: Callable, bound: float = 1e-9) -> None:
    """dx, dw, db of conv_backward_naive(dout, x, w, stride, pad) equal F.conv2d's, in float64."""
    rng = np.random.default_rng(3)
    for x_shape, w_shape, stride, pad in CASES:
        x = mg.tensor(rng.standard_normal(x_shape), dtype="float64", requires_grad=True)
        w = mg.tensor(rng.standard_normal(w_shape), dtype="float64", requires_grad=True)
        b = mg.tensor(rng.standard_normal(w_shape[0]), dtype="float64", requires_grad=True)
        y = F.conv2d(x, w, b, stride=stride, padding=pad)
        dout = rng.standard_normal(y.shape)
        y.backward(mg.tensor(dout, dtype="float64"))
        dx, dw, db = conv_backward_naive(dout, x.numpy(), w.numpy(), stride, pad)
        where = f"stride {stride}, pad {pad}"
        check_close(f"dx ({where})", dx, x.grad.numpy(), bound)
        check_close(f"dw ({where})", dw, w.grad.numpy(), bound)
        check_close(f"db ({where})", db, b.grad.numpy(), bound)
