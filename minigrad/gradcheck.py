"""Finite-difference gradient checking.

`gradcheck(fn, *inputs)` compares the gradients that backward() computes with
central differences (f(x + eps) - f(x - eps)) / 2 eps, in float64, under a random
upstream gradient u: the scalar checked is L = sum(fn(*inputs) * u), so every
output element matters and no cancellation hides an error.

Small inputs are checked element by element. For large ones that would take too
many evaluations, random directions d are checked instead: the directional
derivative (L(x + eps d) - L(x - eps d)) / 2 eps must equal <grad, d>.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigrad import backend
from minigrad.tensor import Tensor, no_grad


@dataclass
class InputCheck:
    """How one input's gradient compared with finite differences."""

    index: int
    shape: tuple[int, ...]
    mode: str  # "elements" (every entry) or "directions" (random directional derivatives)
    checked: int  # number of entries or directions compared
    max_abs_error: float
    max_rel_error: float
    passed: bool


@dataclass
class GradcheckReport:
    """The result of one `gradcheck` call. `passed` is True when every input passed."""

    name: str
    inputs: list[InputCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.inputs)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.inputs), default=0.0)

    @property
    def max_abs_error(self) -> float:
        return max((c.max_abs_error for c in self.inputs), default=0.0)

    def table(self) -> str:
        lines = [f"gradcheck {self.name}: {'PASS' if self.passed else 'FAIL'} ({self.seconds:.2f} s)"]
        lines.append(f"  {'input':>5}  {'shape':<20} {'mode':<10} {'n':>5}  {'max abs err':>11}  {'max rel err':>11}")
        for c in self.inputs:
            lines.append(
                f"  {c.index:>5}  {c.shape!s:<20} {c.mode:<10} {c.checked:>5}  {c.max_abs_error:>11.2e}  "
                f"{c.max_rel_error:>11.2e}  {'ok' if c.passed else 'FAIL'}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _scalar_loss(fn: Callable[..., Tensor], inputs: Sequence[Any], upstream: Any) -> float:
    with no_grad():
        out = fn(*inputs)
    return float((out.data * upstream).sum())


def _relative_errors(analytic: np.ndarray, numeric: np.ndarray, atol: float) -> np.ndarray:
    # Relative to the larger magnitude; entries where both are below atol count as exact. A NaN stays NaN
    # (NaN > atol is False: it would otherwise be reported as an exact match).
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    err = np.abs(analytic - numeric)
    return np.where((scale > atol) | np.isnan(err), err / np.maximum(scale, 1e-300), 0.0)


def _check_inputs(inputs: Sequence[Any]) -> list[tuple[int, Tensor]]:
    """The (position, tensor) of every input that requires grad; each must be a float64 leaf."""
    checked = [(i, x) for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i, x in checked:
        if x.dtype != np.float64:
            raise TypeError(
                f"gradcheck needs float64 inputs (float32 round-off swamps finite differences); "
                f"input {i} of shape {x.shape} is {x.dtype}. Use x.detach().astype('float64').requires_grad_()."
            )
        if not x.is_leaf:
            raise ValueError(
                f"gradcheck: input {i} of shape {x.shape} is the result of an op, so its .grad is never filled; "
                "pass a leaf: x.detach().requires_grad_()"
            )
    return checked


def _numeric_by_elements(
    fn: Callable[..., Tensor], inputs: Sequence[Any], x: Tensor, upstream: Any, eps: float
) -> np.ndarray:
    """dL/dx by central differences, one entry of x at a time: (L(x + eps e_k) - L(x - eps e_k)) / 2 eps."""
    flat = x.data.reshape(-1)  # a view: writing into it perturbs the input in place
    numeric = np.empty(x.size)
    for k in range(x.size):
        original = float(flat[k])
        flat[k] = original + eps
        plus = _scalar_loss(fn, inputs, upstream)
        flat[k] = original - eps
        minus = _scalar_loss(fn, inputs, upstream)
        flat[k] = original
        numeric[k] = (plus - minus) / (2 * eps)
    return numeric


def _directional(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    x: Tensor,
    upstream: Any,
    eps: float,
    analytic: np.ndarray,
    n_directions: int,
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """<grad, d> and its finite-difference twin along `n_directions` random unit directions d."""
    a, n = np.empty(n_directions), np.empty(n_directions)
    original = x.data.copy()
    for k in range(n_directions):
        d_host = gen.standard_normal(x.shape)
        d_host /= np.linalg.norm(d_host)
        d = backend.to_device(d_host, x.device)
        x.data[...] = original + eps * d
        plus = _scalar_loss(fn, inputs, upstream)
        x.data[...] = original - eps * d
        minus = _scalar_loss(fn, inputs, upstream)
        n[k] = (plus - minus) / (2 * eps)
        a[k] = float((analytic * d_host).sum())
    x.data[...] = original
    return a, n


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    max_elements: int = 256,
    n_directions: int = 8,
    seed: int = 0,
    name: str | None = None,
) -> GradcheckReport:
    """Compare fn's analytic gradients with float64 central differences.

    Args:
        fn: takes `inputs` and returns a Tensor (any shape).
        inputs: Tensors (those with requires_grad are checked; they must be float64) or other arguments.
        eps: the finite-difference step.
        atol, rtol: a gradient entry passes when |analytic - numeric| <= atol + rtol * |numeric|.
        max_elements: inputs with more entries are checked along `n_directions` random directions.
        seed: seeds the upstream gradient and the directions.

    Returns:
        A report with, per checked input, the largest absolute and relative errors and whether it passed.
    """
    checked = _check_inputs(inputs)
    gen = np.random.default_rng(seed)
    start = time.perf_counter()
    report = GradcheckReport(name=name or getattr(fn, "__name__", "fn"))

    # 1. The analytic gradients, under a random upstream gradient u (L = sum(fn(inputs) * u)).
    for _, x in checked:
        x.grad = None
    out = fn(*inputs)
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype} from float64 inputs (a silent dtype change)")
    upstream = backend.to_device(gen.standard_normal(out.shape), out.device)
    out.backward(upstream)

    # 2. Each input against finite differences: every entry when small, random directions when large.
    for i, x in checked:
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.numpy().astype(np.float64)
        x.data = x.xp.ascontiguousarray(x.data)
        if x.size <= max_elements:
            a, n, mode = analytic.reshape(-1), _numeric_by_elements(fn, inputs, x, upstream, eps), "elements"
        else:
            a, n = _directional(fn, inputs, x, upstream, eps, analytic, n_directions, gen)
            mode = "directions"
        abs_err = np.abs(a - n)
        report.inputs.append(
            InputCheck(
                index=i,
                shape=x.shape,
                mode=mode,
                checked=len(n),
                max_abs_error=float(abs_err.max(initial=0.0)),
                max_rel_error=float(_relative_errors(a, n, atol).max(initial=0.0)),
                passed=bool(np.all(abs_err <= atol + rtol * np.abs(n))),
            )
        )
    report.seconds = time.perf_counter() - start
    return report


def format_table(reports: Sequence[GradcheckReport], kinds: Sequence[str] | None = None) -> str:
    """One row per check: name, max relative error, max absolute error, time, PASS/FAIL."""
    kinds = kinds or [""] * len(reports)
    width = max([len(r.name) for r in reports] + [10])
    lines = [f"{'check':<{width}}  {'kind':<5}  {'max rel err':>11}  {'max abs err':>11}  {'time':>8}  result"]
    lines.append("-" * len(lines[0]))
    for r, kind in zip(reports, kinds):
        lines.append(
            f"{r.name:<{width}}  {kind:<5}  {r.max_rel_error:>11.2e}  {r.max_abs_error:>11.2e}  "
            f"{r.seconds * 1000:>6.1f}ms  {'PASS' if r.passed else 'FAIL'}"
        )
    return "\n".join(lines)
