"""The SGD-with-momentum update on the GPU: one pass over memory, one thread per parameter element.

    v <- momentum * v - decay * w - lr * grad          (decay = weight_decay * lr)
    w <- w + v

The generic version is four in-place array statements: six passes over the parameters, their gradients
and velocities, and two temporaries the size of the parameter (for the paper's AlexNet, 61M parameters,
244 MB each). Here each thread reads w, grad and v once and writes w and v once. The operations and their
order are the generic version's; the GPU compiler may still fuse a multiply and an add into one rounding,
so on a GPU the result can differ from the generic one in the last bit.
"""

from __future__ import annotations

from typing import Any

from ._common import check_floating, cuda, kernel, launch


@kernel
def sgd_momentum_kernel(w, grad, velocity, momentum, decay, lr):  # pragma: no cover (compiled)
    """One SGD step on flat arrays, in place. The scalars have the arrays' dtype."""
    q = cuda.grid(1)
    if q < w.size:
        v = velocity[q] * momentum
        v = v - decay * w[q]
        v = v - lr * grad[q]
        velocity[q] = v
        w[q] = w[q] + v


def sgd_momentum_step_gpu(w: Any, grad: Any, velocity: Any, momentum: float, decay: float, lr: float) -> None:
    """In place: velocity <- momentum*velocity - decay*w - lr*grad, then w <- w + velocity.

    The twin of `sgd_momentum_step_generic`. w, grad, velocity: C-contiguous arrays of one shape and dtype.
    """
    arrays = (w, grad, velocity)
    if len({tuple(a.shape) for a in arrays}) > 1 or len({a.dtype for a in arrays}) > 1:
        raise ValueError(
            "sgd_momentum_step_gpu: w, grad and velocity must have one shape and dtype, got "
            + ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in arrays)
        )
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError("sgd_momentum_step_gpu: the arrays must be C-contiguous (the update works in place)")
    check_floating("w", w)
    t = w.dtype.type
    flat = [a.reshape(-1) for a in arrays]  # views: the kernel writes w and velocity in place
    launch(sgd_momentum_kernel, w.size, *flat, t(momentum), t(decay), t(lr))
