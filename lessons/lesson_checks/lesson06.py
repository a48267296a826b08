"""Checks of lesson 6 (the whole AlexNet): the parameter count by hand against the built models."""

from __future__ import annotations

from collections.abc import Callable

from alexnet.model import CONFIGS, AlexNetConfig, build_model
from lesson_checks import report

# (model, switches): the three members of the family, each with other groups, pools and widths. The paper's
# network is built twice only (61 million weights each); the small ones cover the other switches.
VARIANTS: tuple[tuple[str, dict], ...] = (
    ("alexnet", {}),
    ("alexnet", {"groups": 1}),
    ("alexnet-small", {}),
    ("alexnet-small", {"groups": 1}),
    ("alexnet-small", {"groups": 4}),
    ("alexnet-small", {"overlap": False}),
    ("alexnet-small", {"width": 0.5}),
    ("alexnet-tiny", {}),
    ("alexnet-tiny", {"groups": 1}),
    ("alexnet-tiny", {"groups": 4}),
    ("alexnet-tiny", {"overlap": False}),
    ("alexnet-tiny", {"lrn": False}),
    ("alexnet-tiny", {"width": 0.5}),
    ("alexnet-tiny", {"width": 2.0, "groups": 1, "overlap": False}),
)


def _label(name: str, switches: dict) -> str:
    return name + "".join(f", {key}={value}" for key, value in switches.items())


def check_count_parameters(count_parameters: Callable[[AlexNetConfig], int]) -> None:
    """count_parameters(config) against build_model(...).num_parameters() for every variant in VARIANTS.

    The learner's function runs on every config first (a stub fails at once, before any model is built).
    """
    configs = [CONFIGS[name].with_options(**switches) for name, switches in VARIANTS]
    yours = [int(count_parameters(config)) for config in configs]
    worst = 0.0
    for (name, switches), count in zip(VARIANTS, yours):
        expected = build_model(name, **switches).num_parameters()
        error = abs(count - expected) / expected
        worst = max(worst, error)
        mark = "" if count == expected else "   <-- differs"
        print(f"{_label(name, switches):48} yours {count:>12,} | num_parameters() {expected:>12,}{mark}")
    report(f"count_parameters over {len(VARIANTS)} variants", worst, 1e-12)
