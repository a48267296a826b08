"""Checks of lesson 7 (training): the paper's SGD step against minigrad.optim.SGD, and a memorised batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import minigrad as mg
import minigrad.functional as F
from lesson_checks import relative_error, report, report_below
from minigrad import nn, optim

STEPS, DROP_AT, LR = 100, 60, 0.1


def _small_model() -> nn.Module:
    """A seeded float64 MLP, plus a parameter that never gets a gradient (the step must skip it)."""
    mg.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model.unused = nn.Parameter(np.ones(4))
    return model.astype(np.float64)


def check_sgd_paper_step(sgd_paper_step: Callable) -> None:
    """STEPS steps of the learner's rule and of optim.SGD on two copies of one model, lr / 10 after DROP_AT.

    Compares the weights and the velocities (float64, so only the order of the roundings may differ).
    """
    rng = np.random.default_rng(7)
    x = mg.tensor(rng.standard_normal((16, 6)), dtype="float64")
    y = rng.integers(0, 3, size=16)
    reference, yours = _small_model(), _small_model()
    optimizer = optim.SGD(reference.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    params = yours.parameters()
    velocities = [p.xp.zeros_like(p.data) for p in params]
    for step in range(STEPS):
        lr = LR if step < DROP_AT else LR / 10
        optimizer.lr = lr
        for model in (reference, yours):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        optimizer.step()
        sgd_paper_step(params, velocities, lr)
    weights = max(relative_error(a.data, b.data) for a, b in zip(reference.parameters(), params))
    speeds = max(relative_error(v, velocities[i]) for i, v in enumerate(optimizer.velocity) if v is not None)
    report(f"weights after {STEPS} steps (lr / 10 after step {DROP_AT}) vs optim.SGD", weights, 1e-10)
    report("velocities vs optim.SGD's", speeds, 1e-10)


def check_overfits_small_batch(losses: Sequence[float]) -> None:
    """The loss on the memorised batch ends below 0.1."""
    last = float(losses[-1]) if len(losses) else float("nan")
    report_below(f"loss on the small batch after {len(losses)} steps", last, 0.1)
