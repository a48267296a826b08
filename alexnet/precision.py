"""`alexnet train --precision fp32|tf32|fp16`: what a run adds around `minigrad.amp.MixedPrecision`.

- The checkpoint holds the float32 master weights (`master_weights`), so `alexnet eval`, `predict`, `plot`
  and a resume read an ordinary float32 model whatever the run's precision; the loss scaler's state rides in
  the run's state (`PrecisionState`), so a resumed fp16 run continues with the same scale.
- Validation runs on the master weights too: the numbers of every epoch are float32 numbers.
- In fp16 an inf or NaN loss or gradient is part of dynamic loss scaling, not a divergence: the step is
  skipped and the scale halves. `skip_verdict` says when skipping has stopped being the cure.

May import: `alexnet.runs`, minigrad's public API, the standard library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from alexnet.runs import RunState
from minigrad.amp import MixedPrecision

# Skipped steps in a row after which an fp16 run counts as diverged. Each skip halves the scale, so a healthy
# run finds a scale that fits within a few skips; this many means the gradients are not finite at any scale.
MAX_SKIPS_IN_A_ROW = 20


@dataclass
class PrecisionState(RunState):
    """A run's position (`RunState`) plus, in fp16, the loss scaler's state and the skips in a row so far:
    {"precision", "scaler", "skips_in_a_row"} (None for fp32 and tf32, which have no such state)."""

    amp: dict[str, Any] | None = None

    def record(self, mp: MixedPrecision, skips_in_a_row: int) -> None:
        """Copy `mp`'s scaler state in (before a checkpoint is written)."""
        self.amp = {**mp.state_dict(), "skips_in_a_row": skips_in_a_row} if mp.precision == "fp16" else None

    def restore(self, mp: MixedPrecision) -> int:
        """Give `mp` the saved scaler state; returns the skips in a row it had (0 when nothing was saved)."""
        if self.amp is None or mp.precision != "fp16":
            return 0
        mp.load_state_dict(self.amp)
        return int(self.amp.get("skips_in_a_row", 0))


@contextlib.contextmanager
def master_weights(mp: MixedPrecision) -> Iterator[None]:
    """Inside the block the model's parameters hold the float32 master weights (the same arrays, not copies:
    nothing inside may change them); afterwards their float16 copies again. A no-op unless fp16.

    An fp16 model's layers that run in float32 cast their float32 input to float32: a no-op, so the model is a
    plain float32 model here.
    """
    if mp.precision != "fp16":
        yield
        return
    params = mp.model.parameters()
    compute = [p.data for p in params]
    try:
        for p, master in zip(params, mp.parameters()):
            p.data = master.data
        yield
    finally:
        for p, data in zip(params, compute):
            p.data = data


def skip_verdict(mp: MixedPrecision, skips_in_a_row: int) -> str | None:
    """After a skipped fp16 step: None while skipping is still loss scaling at work, else why the run has
    diverged (the scale is at its minimum, or too many steps in a row were skipped)."""
    if mp.loss_scale is not None and mp.loss_scale <= mp.scaler.min_scale:
        return f"the fp16 gradients stayed inf or NaN down to the smallest loss scale ({mp.scaler.min_scale:g})"
    if skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
        return f"{skips_in_a_row} fp16 steps in a row were skipped for inf or NaN gradients"
    return None


def precision_notes(mp: MixedPrecision, device_kind: str) -> list[str]:
    """What a user should know about the precision they asked for on this device."""
    if mp.precision == "tf32" and not mp.tf32:
        where = "NumPy has no TF32" if device_kind == "cpu" else "CuPy could not switch its products to TF32"
        return [f"--precision tf32 runs as fp32 here: {where}"]
    if mp.precision == "fp16" and device_kind == "cpu":
        return ["--precision fp16 on the CPU computes in NumPy float16: correct, but slower than fp32"]
    return []
