"""Specification of the SGD-with-momentum update kernel (`minigrad.kernels.sgd_momentum_step`).

    v <- momentum * v - decay * w - lr * grad;   w <- w + v        (in place; decay = weight_decay * lr)

Both versions (the Numba loop and the xp-generic statements) must equal a plain Python loop that does the
same float operations in the same order, and each other: EXACTLY, in float32 and float64, because the
update only ever rounds to the arrays' dtype, in the order the formula is written.
`tests/test_nn_optim.py` checks `optim.SGD` itself against the paper's rule in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import break_numba_kernel, spy_on, to_host

from minigrad import kernels as K

MOMENTUM, DECAY, LR = 0.9, 0.01 * 5e-4, 0.01
needs_numba = pytest.mark.skipif(not K.numba_available(), reason="Numba is not usable here")


def arrays(size, dtype, seed=0):
    """w, grad, velocity: seeded, of one size and dtype."""
    gen = np.random.default_rng(seed)
    return [gen.standard_normal(size).astype(dtype) for _ in range(3)]


def naive_sgd_step(w, grad, velocity, momentum, decay, lr):
    """The update one element at a time, each operation rounded to the dtype (returns new w, velocity)."""
    t = w.dtype.type
    w, velocity = w.copy(), velocity.copy()
    for q in range(w.size):
        v = velocity[q] * t(momentum)
        v = v - t(decay) * w[q]
        v = v - t(lr) * grad[q]
        velocity[q] = v
        w[q] = w[q] + v
    return w, velocity


VERSIONS = {"numba": K.sgd_momentum_step_numba, "generic": K.sgd_momentum_step_generic}


@pytest.mark.parametrize("version", list(VERSIONS))
def test_each_version_equals_the_plain_loop_exactly(version, dtype):
    if version == "numba" and not K.numba_available():
        pytest.skip("Numba is not usable here")
    w, grad, velocity = arrays(11, dtype)
    expected_w, expected_v = naive_sgd_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    VERSIONS[version](w, grad, velocity, MOMENTUM, DECAY, LR)  # in place
    np.testing.assert_array_equal(velocity, expected_v)
    np.testing.assert_array_equal(w, expected_w)


def test_generic_version_runs_on_every_backend(xp, dtype):
    w, grad, velocity = arrays(11, dtype)
    expected_w, expected_v = naive_sgd_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    dw, dg, dv = (xp.asarray(a) for a in (w, grad, velocity))
    K.sgd_momentum_step(dw, dg, dv, MOMENTUM, DECAY, LR)  # the stand-in refuses any host/device mixing
    np.testing.assert_array_equal(to_host(dv), expected_v)
    np.testing.assert_array_equal(to_host(dw), expected_w)


@needs_numba
@pytest.mark.parametrize("shape", [(1,), (3, 5), (40_000,), (257, 511)], ids=["1", "3x5", "40k", "257x511"])
def test_numba_and_generic_are_bit_identical(shape, dtype):
    """Sizes on both sides of the serial threshold (the large ones run on every thread), 1-D and 2-D."""
    size = int(np.prod(shape))
    w, grad, velocity = (a.reshape(shape) for a in arrays(size, dtype, seed=1))
    w2, v2 = w.copy(), velocity.copy()
    for step in range(3):  # several steps: velocity carries over
        K.sgd_momentum_step_numba(w, grad, velocity, MOMENTUM, DECAY, LR)
        K.sgd_momentum_step_generic(w2, grad, v2, MOMENTUM, DECAY, LR)
        np.testing.assert_array_equal(velocity, v2, err_msg=f"step {step}")
        np.testing.assert_array_equal(w, w2, err_msg=f"step {step}")


@needs_numba
def test_dispatch_takes_the_numba_loop_for_contiguous_numpy_arrays_of_one_dtype(monkeypatch):
    calls = spy_on(monkeypatch, "minigrad.kernels.sgd", ["sgd_momentum_step_numba", "sgd_momentum_step_generic"])
    monkeypatch.delenv("MINIGRAD_DISABLE_NUMBA", raising=False)
    w, grad, velocity = arrays(12, np.float32)
    K.sgd_momentum_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    assert calls == ["sgd_momentum_step_numba"]


@pytest.mark.parametrize("case", ["transposed grad", "float64 grad for float32 w", "Numba switched off"])
def test_dispatch_falls_back_to_the_generic_statements(case, monkeypatch):
    """What the Numba loop cannot take (or may not) goes to the generic version: same answer as it."""
    calls = spy_on(monkeypatch, "minigrad.kernels.sgd", ["sgd_momentum_step_numba", "sgd_momentum_step_generic"])
    w, grad, velocity = (a.reshape(4, 6) for a in arrays(24, np.float32, seed=2))
    if case == "transposed grad":
        grad = np.ascontiguousarray(grad.T).T  # same values, Fortran order
    elif case == "float64 grad for float32 w":
        grad = grad.astype(np.float64)
    else:
        monkeypatch.setenv("MINIGRAD_DISABLE_NUMBA", "1")
    w2, v2 = w.copy(), velocity.copy()
    K.sgd_momentum_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    assert calls == ["sgd_momentum_step_generic"]  # what the dispatcher called (K.* below is not spied on)
    K.sgd_momentum_step_generic(w2, grad, v2, MOMENTUM, DECAY, LR)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(velocity, v2)


@needs_numba
def test_numba_version_refuses_mismatched_arrays_with_a_clear_error():
    w, grad, velocity = arrays(6, np.float32)
    with pytest.raises(ValueError, match=r"one shape and dtype, got \(6,\) float32, \(5,\) float32"):
        K.sgd_momentum_step_numba(w, grad[:5], velocity, MOMENTUM, DECAY, LR)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.sgd_momentum_step_numba(w[::2], grad[::2], velocity[::2], MOMENTUM, DECAY, LR)
    assert K.numba_available()  # a caller's mistake is not Numba failing


@needs_numba
def test_a_failing_update_kernel_falls_back_with_one_warning(monkeypatch):
    break_numba_kernel(monkeypatch, "sgd", "sgd_momentum_kernel")
    w, grad, velocity = arrays(9, np.float64)
    expected_w, expected_v = naive_sgd_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    with pytest.warns(RuntimeWarning, match="Numba is unavailable.*pretend the JIT failed"):
        K.sgd_momentum_step(w, grad, velocity, MOMENTUM, DECAY, LR)
    np.testing.assert_array_equal(w, expected_w)
    np.testing.assert_array_equal(velocity, expected_v)
