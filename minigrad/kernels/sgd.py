"""The SGD-with-momentum update on raw arrays, in place (the paper's rule; `minigrad.optim.SGD` calls it).

    v <- momentum * v - decay * w - lr * grad          (decay = weight_decay * lr)
    w <- w + v

Read `sgd_momentum_step_generic` first: four in-place xp statements (NumPy or CuPy), which make six
passes over memory and two temporaries the size of the parameter. The Numba version does the same
operations in one pass, split over the cores, with the same roundings: bit-identical. `sgd_momentum_step` picks one.
"""

from __future__ import annotations

from typing import Any

from .dispatch import check_dtype, cpu_kernel, fastest, run


def sgd_momentum_step_generic(w: Any, grad: Any, velocity: Any, momentum: float, decay: float, lr: float) -> None:
    """The update with xp operations (NumPy or CuPy); w, grad, velocity: same shape and dtype."""
    t = w.dtype.type
    velocity *= t(momentum)
    velocity -= t(decay) * w
    velocity -= t(lr) * grad
    w += velocity


def sgd_momentum_step_numba(w: Any, grad: Any, velocity: Any, momentum: float, decay: float, lr: float) -> None:
    """The update as one compiled loop on all cores (C-contiguous NumPy float32/float64 arrays of one dtype).

    Raises NumbaUnavailable (a RuntimeError) when Numba cannot be used.
    """
    arrays = (w, grad, velocity)
    if len({a.shape for a in arrays}) > 1 or len({a.dtype for a in arrays}) > 1:
        raise ValueError(
            "sgd_momentum_step: w, grad and velocity must have one shape and dtype, got "
            + ", ".join(f"{a.shape} {a.dtype}" for a in arrays)
        )
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError("sgd_momentum_step_numba: the arrays must be C-contiguous")
    check_dtype(w)
    t = w.dtype.type
    flat = [a.reshape(-1) for a in arrays]  # views: the kernel writes w and velocity in place
    run(sgd_momentum_kernel, *flat, t(momentum), t(decay), t(lr), over=w.size)


@cpu_kernel("the SGD update")
def sgd_momentum_kernel(w, grad, velocity, momentum, decay, lr, start, stop):  # pragma: no cover (compiled)
    """One SGD step on the elements start .. stop-1 of flat arrays, in place: v = momentum*v - decay*w - lr*grad;
    w = w + v.

    The scalars have the arrays' dtype and every operation rounds to it in the generic version's order
    (no fused multiply-adds without fastmath), so the result is bit-identical to it. One pass over the
    memory instead of the generic version's six with their temporaries.
    """
    w, grad, velocity = w[start:stop], grad[start:stop], velocity[start:stop]
    for q in range(w.shape[0]):  # from 0: the compiler knows q >= 0 and vectorises the loop
        v = velocity[q] * momentum
        v = v - decay * w[q]
        v = v - lr * grad[q]
        velocity[q] = v
        w[q] = w[q] + v


def sgd_momentum_step(w: Any, grad: Any, velocity: Any, momentum: float, decay: float, lr: float) -> None:
    """In place: velocity <- momentum*velocity - decay*w - lr*grad, then w <- w + velocity.

    w, grad, velocity: arrays of one shape on one device. NumPy float32/float64 arrays of one dtype, all
    C-contiguous, take the Numba loop when Numba is usable, CuPy arrays so laid out the one-pass GPU kernel
    when numba.cuda runs on the GPU; anything else the generic version.
    """
    arrays = (w, grad, velocity)
    fits_the_loop = all(a.dtype == w.dtype and a.shape == w.shape and a.flags.c_contiguous for a in arrays)
    numba_version, gpu = (sgd_momentum_step_numba, "sgd_momentum_step_gpu") if fits_the_loop else (None, None)
    args = (w, grad, velocity, momentum, decay, lr)
    fastest(numba_version, sgd_momentum_step_generic, *args, arrays=arrays, gpu=gpu)
