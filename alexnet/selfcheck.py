"""alexnet's model checks for `minigrad selfcheck`.

minigrad never imports alexnet (the layers point one way), so alexnet offers these through the entry-point
group `minigrad.selfcheck` in pyproject.toml (`alexnet = "alexnet.selfcheck:checks"`), which
`minigrad selfcheck` reads; in a checkout that is not pip-installed, pass `--plugin alexnet.selfcheck:checks`.

- alexnet-tiny trains: a few hundred SGD steps on the bundled Fashion-MNIST subset; the loss must fall.
- the paper's net at batch 128: a few training steps; images/s and peak device memory.
- fp16 and TF32 training of alexnet-tiny from the same start and batches as fp32: the losses must agree.

On the CPU (`context.quick`) each check does a few steps on small batches: enough to run every line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alexnet.data import load_fashion_mnist_subset
from alexnet.model import build_model
from minigrad import backend, manual_seed, optim
from minigrad import functional as F
from minigrad.amp import MixedPrecision
from minigrad.backend import Device
from minigrad.selfcheck import Context, Outcome, SelfCheck
from minigrad.tensor import Tensor


@dataclass(frozen=True)
class Run:
    """How much a check trains: steps (and of them the timed ones), batch size, learning rate."""

    steps: int
    batch: int
    lr: float = 0.01


TINY_TRAINING = {False: Run(300, 128), True: Run(40, 32)}  # by context.quick
PAPER_THROUGHPUT = {False: Run(7, 128), True: Run(2, 2)}  # the first two steps (one when quick) warm up
PRECISION_RUN = {False: Run(100, 128), True: Run(4, 8, lr=0.002)}
LOSS_FALLS_TO = {False: 0.5, True: 0.8}  # the last steps' mean loss, as a fraction of the first steps'
# fp16 and TF32 against fp32, in nats. The first step runs the same weights on the same batch: its loss differs
# by the forward pass's rounding only. Later the runs drift apart: a ReLU whose input lies within rounding of 0
# flips, and its unit's whole gradient comes or goes (a few such units move a layer's gradient by percents),
# so the trajectories part like two runs with different seeds. The end of the run must still agree closely.
FIRST_STEP_TOLERANCE = 0.01
END_TOLERANCE = 0.1  # mean loss over the last tenth of the steps (at least 2)


def _fashion(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n bundled training images, normalised to mean 0 and standard deviation 1, and their labels."""
    data = load_fashion_mnist_subset().train
    x = data.images[:n].astype(np.float32) / np.float32(255)
    x -= x.mean()
    x /= x.std()
    return x, data.labels[:n]


def train_losses(
    model_name: str, precision: str, device: Device, run: Run, seed: int = 0
) -> tuple[list[float], float, int]:
    """Train a fresh model for run.steps steps on the bundled data (batches in a fixed order, seeded dropout).

    Returns (the loss of every step, seconds of the steps after the first, steps skipped by fp16's scaler).
    """
    x_all, y_all = _fashion(4096)
    manual_seed(seed)
    model = build_model(model_name).to(device).train()
    mp = MixedPrecision(model, precision)
    opt = optim.SGD(mp.parameters(), lr=run.lr, momentum=0.9, weight_decay=5e-4)
    order = np.random.default_rng(seed).permutation(len(y_all))
    losses: list[float] = []
    start = 0.0
    for step in range(run.steps):
        if step == 1:  # the first step compiles kernels and fills the memory pool
            backend.synchronize(device)
            start = time.perf_counter()
        rows = order[np.arange(step * run.batch, (step + 1) * run.batch) % len(order)]
        x = Tensor(backend.to_device(x_all[rows], device))
        y = backend.to_device(y_all[rows], device)
        manual_seed(seed + 1 + step)  # the same dropout masks in every precision
        mp.zero_grad()
        loss = F.cross_entropy(mp(x), y)
        mp.backward(loss)
        mp.step(opt)
        losses.append(float(loss.item()))
    backend.synchronize(device)
    mp.restore()
    return losses, time.perf_counter() - start, mp.skipped_steps


def _tiny_training(context: Context) -> Outcome:
    run = TINY_TRAINING[context.quick]
    losses, seconds, _ = train_losses("alexnet-tiny", "fp32", context.device, run)
    window = max(5, run.steps // 10)
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-window:]))
    rate = run.batch * (run.steps - 1) / seconds
    target = LOSS_FALLS_TO[context.quick]
    detail = (
        f"{run.steps} steps of {run.batch}: loss {first:.3f} -> {last:.3f} (must reach {target:.0%} of the start), "
        f"{rate:,.0f} img/s"
    )
    ok = all(math.isfinite(v) for v in losses) and last <= target * first
    return Outcome(ok, detail, {"first_loss": first, "last_loss": last, "images_per_s": rate})


def _paper_throughput(context: Context) -> Outcome:
    run = PAPER_THROUGHPUT[context.quick]
    warmup = 1 if context.quick else 2
    manual_seed(0)
    model = build_model("alexnet").to(context.device).train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    cfg = model.config
    gen = np.random.default_rng(0)
    x = Tensor(
        backend.to_device(
            gen.standard_normal((run.batch, 3, cfg.image_size, cfg.image_size), dtype=np.float32), context.device
        )
    )
    y = backend.to_device(gen.integers(0, cfg.num_classes, run.batch), context.device)
    backend.reset_peak_gpu_memory(context.device)
    times, losses = [], []
    for _ in range(run.steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))  # .item() waits for the GPU
        times.append(time.perf_counter() - start)
    step = float(np.median(times[warmup:]))
    peak = backend.peak_gpu_memory(context.device)
    metrics = {"images_per_s": run.batch / step, "step_ms": 1e3 * step}
    memory = "n/a on the CPU" if peak is None else f"{peak / 2**30:.2f} GiB"
    if peak is not None:
        metrics["peak_memory_bytes"] = float(peak)
    detail = (
        f"batch {run.batch}: {run.batch / step:,.0f} img/s ({1e3 * step:.0f} ms a step), peak device memory {memory}"
    )
    return Outcome(all(math.isfinite(v) for v in losses), detail, metrics)


def _precision_check(precision: str) -> Callable[[Context], Outcome]:
    def run_check(context: Context) -> Outcome:
        if precision == "tf32" and context.device.kind != "gpu":
            return Outcome(None, "TF32 is a GPU mode (NumPy has none): on the CPU tf32 is fp32")
        run = PRECISION_RUN[context.quick]
        reference, ref_seconds, _ = train_losses("alexnet-tiny", "fp32", context.device, run)
        losses, seconds, skipped = train_losses("alexnet-tiny", precision, context.device, run)
        window = max(2, run.steps // 10)
        first_gap = abs(losses[0] - reference[0])
        end_gap = abs(float(np.mean(losses[-window:])) - float(np.mean(reference[-window:])))
        speed = ref_seconds / seconds if seconds > 0 else float("nan")
        detail = (
            f"{run.steps} steps of {run.batch}: first loss {losses[0]:.4f} vs fp32's {reference[0]:.4f} "
            f"(tolerance {FIRST_STEP_TOLERANCE}), last {window} {np.mean(losses[-window:]):.3f} vs "
            f"{np.mean(reference[-window:]):.3f} (tolerance {END_TOLERANCE}), {skipped} skipped, "
            f"{speed:.2f}x fp32's speed"
        )
        ok = (
            all(math.isfinite(v) for v in losses)
            and first_gap <= FIRST_STEP_TOLERANCE
            and end_gap <= END_TOLERANCE
            and skipped <= max(1, run.steps // 10)
        )
        metrics = {"first_loss_gap": first_gap, "end_loss_gap": end_gap, "skipped_steps": float(skipped)}
        return Outcome(ok, detail, {**metrics, "speed_vs_fp32": speed})

    return run_check


def checks() -> list[SelfCheck]:
    """The model checks `minigrad selfcheck` runs (the entry point in pyproject.toml names this function)."""
    return [
        SelfCheck("alexnet-tiny trains", "alexnet", _tiny_training),
        SelfCheck("paper net: speed, memory", "alexnet", _paper_throughput),
        SelfCheck("alexnet-tiny fp16 vs fp32", "alexnet", _precision_check("fp16")),
        SelfCheck("alexnet-tiny tf32 vs fp32", "alexnet", _precision_check("tf32")),
    ]
