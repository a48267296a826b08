"""Checks of lesson 9 (what the network learned): nearest neighbours by hand against alexnet.plots."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from alexnet import plots
from lesson_checks import relative_error, report


def check_nearest_neighbours(
    nearest_neighbours: Callable, query_features: np.ndarray, bank_features: np.ndarray
) -> None:
    """nearest_neighbours(query, bank, k) equals alexnet.plots.nearest_neighbours on random vectors, on fc7
    features (in float64, where rounding cannot swap two neighbours) and when the queries are in the bank."""
    rng = np.random.default_rng(0)
    bank = bank_features[:1000].astype(np.float64)
    cases = {
        "random vectors": (rng.standard_normal((20, 8)), rng.standard_normal((50, 8)), 5),
        "fc7 features": (query_features[:100].astype(np.float64), bank, 6),
        "queries from the bank": (bank[:10], bank, 3),
    }
    worst, differ, total = 0.0, 0, 0
    for name, (query, bank_vectors, k) in cases.items():
        yours = np.asarray(nearest_neighbours(query, bank_vectors, k))
        expected = plots.nearest_neighbours(query, bank_vectors, k)
        if yours.shape != expected.shape:
            line = f"{name}: shape {yours.shape}, should be {expected.shape}"
            print(line)
            raise AssertionError(line)
        differ += int((yours != expected).sum())
        total += expected.size
        worst = max(worst, relative_error(yours, expected))
    print(f"neighbours that differ from alexnet.plots.nearest_neighbours: {differ} of {total}")
    report("nearest_neighbours indices", worst, 1e-12)
