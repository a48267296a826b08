"""Data-parallel training on several processes of one machine: the all-reduce, and whole steps for 1 and N ranks.

    python benchmarks/distributed.py                                        # alexnet-tiny, global batch 128
    python benchmarks/distributed.py --model alexnet --batch-size 32 --steps 4
    python benchmarks/distributed.py --ranks 2 --repeats 5 --skip-steps     # only the 61M-parameter all-reduce

It starts its own workers (with the mpiexec next to this Python: `pip install -e '.[distributed]'`) and prints:

1. The all-reduce of the paper AlexNet's 60,965,224 float32 gradients (244 MB) between `--ranks` processes:
   the bare `Allreduce(IN_PLACE)` of one flat buffer, and `all_reduce_gradients` on the model (copying the
   16 gradients into the buffer, reducing, averaging, handing back views), each `--repeats` times.
2. A data-parallel training step of `--model` with the global batch `--batch-size` (zero_grad, forward on
   this rank's share, cross-entropy, backward, all_reduce_gradients, the paper's SGD) on a fixed random
   batch: one process on one thread, one process on the BLAS's default threads (what `alexnet train`
   does), and `--ranks` processes on one thread each. Two warm-up steps, then `--steps` timed steps;
   img/s = global batch / median step time. Speed-up is against one process on one thread, scaling
   efficiency = speed-up / cores used (N for N ranks); "implied" is what the all-reduce alone would leave of
   it, T1 / (T1 + N x all-reduce), with T1 the one-thread step time and the all-reduce timed on its own.

Each worker limits its BLAS and OpenMP pools to one thread with threadpoolctl and Numba with
`numba.set_num_threads(1)` (printed in the header; no environment variable is changed), and calls
`minigrad.keep_freed_memory()` as the `alexnet` command does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import minigrad  # noqa: E402  (before NumPy: see "Threads" in benchmarks/README.md)

# isort: split
import numpy as np  # noqa: E402

from alexnet.model import build_model  # noqa: E402
from minigrad import distributed as dist  # noqa: E402
from minigrad import functional as F  # noqa: E402
from minigrad import optim  # noqa: E402
from minigrad.tensor import Tensor  # noqa: E402

MPIEXEC = Path(sys.executable).parent / "mpiexec"
_thread_limits: Any = None  # threadpoolctl's limits, held for the life of a worker


# ----------------------------------------------------------------------------- workers (one per rank)


def limit_threads(threads: int) -> str:
    """Limit the BLAS, OpenMP and Numba pools of this process to `threads` (0: leave them); says what it did."""
    if threads == 0:
        return "default threads"
    global _thread_limits
    import numba
    from threadpoolctl import threadpool_limits

    _thread_limits = threadpool_limits(limits=threads)
    numba.set_num_threads(threads)
    return f"{threads} thread(s): threadpoolctl limits BLAS/OpenMP, numba.set_num_threads({threads})"


def timed(function: Any, repeats: int, world: dist.World) -> list[float]:
    """Seconds of `repeats` calls, each started together on every rank (a barrier before each)."""
    seconds = []
    for _ in range(repeats):
        dist.barrier(world)
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def allreduce_worker(args: argparse.Namespace) -> dict[str, Any]:
    world = dist.world()
    model = build_model("alexnet")
    rng = np.random.default_rng(world.rank)
    grads = [rng.standard_normal(p.shape, dtype=np.float32) for p in model.parameters()]
    flat = np.concatenate([g.ravel() for g in grads])  # the buffer all_reduce_gradients would make

    def bare() -> None:
        world.collective.sum_(flat)

    def whole() -> None:
        for p, g in zip(model.parameters(), grads):
            p.grad = Tensor(g)
        dist.all_reduce_gradients(model)

    bare()  # the first call sets up MPI's connections
    return {
        "parameters": int(flat.size),
        "megabytes": flat.nbytes / 1e6,
        "bare": timed(bare, args.repeats, world),
        "all_reduce_gradients": timed(whole, args.repeats, world),
    }


def step_worker(args: argparse.Namespace) -> dict[str, Any]:
    world = dist.world()
    minigrad.manual_seed(0)
    model = build_model(args.model).train()
    dist.broadcast_parameters(model)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    cfg = model.config
    gen = np.random.default_rng(1)
    x = gen.standard_normal((args.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size), dtype=np.float32)
    y = gen.integers(0, cfg.num_classes, size=args.batch_size)
    rows = dist.shard(args.batch_size, world.rank, world.size)
    x_share, y_share = Tensor(x[rows]), y[rows]
    reduce_seconds: list[float] = []

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x_share), y_share).backward()
        start = time.perf_counter()
        dist.all_reduce_gradients(model)
        reduce_seconds.append(time.perf_counter() - start)
        opt.step()

    for _ in range(2):
        step()
    reduce_seconds.clear()
    steps = timed(step, args.steps, world)
    return {
        "parameters": model.num_parameters(),
        "step": steps,
        "reduce_in_step": reduce_seconds,  # waiting for the slowest rank's backward included
        "reduce_alone": timed(lambda: dist.all_reduce_gradients(model), args.repeats, world),
    }


def worker(args: argparse.Namespace) -> None:
    minigrad.keep_freed_memory()
    threads = limit_threads(args.threads)
    with dist.abort_on_error():
        result = allreduce_worker(args) if args.worker == "allreduce" else step_worker(args)
        world = dist.world()
    if world.is_root:
        result.update(ranks=world.size, threads=threads)
        print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- the driver


def launch(args: argparse.Namespace, kind: str, ranks: int, threads: int) -> dict[str, Any]:
    """Run one worker configuration (ranks=1: a plain process, no mpiexec) and return rank 0's result."""
    command = [sys.executable, __file__, "--worker", kind, "--threads", str(threads)]
    command += ["--model", args.model, "--batch-size", str(args.batch_size)]
    command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    if ranks > 1:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    proc = subprocess.run(command, text=True, capture_output=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker failed ({proc.returncode}): {' '.join(command)}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def spread(seconds: list[float]) -> str:
    ms = [s * 1e3 for s in seconds]
    return f"{statistics.median(ms):8.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


def report_allreduce(args: argparse.Namespace) -> None:
    r = launch(args, "allreduce", args.ranks, 1)
    bare = statistics.median(r["bare"])
    print(f"\nAll-reduce of the paper AlexNet's gradients: {r['parameters']:,} float32 ({r['megabytes']:.1f} MB)")
    print(f"between {r['ranks']} processes on this machine, {args.repeats} times each (median, min-max):")
    print(f"  Allreduce(IN_PLACE) of one flat buffer   {spread(r['bare'])}   {r['megabytes'] / 1e3 / bare:.2f} GB/s")
    print(f"  all_reduce_gradients(model)              {spread(r['all_reduce_gradients'])}   (copies included)")


def report_steps(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = [  # (name, cores it may use, rank 0's result)
        ("1 process, 1 thread", 1, launch(args, "step", 1, 1)),
        (f"1 process, {cores} threads (default)", cores, launch(args, "step", 1, 0)),
        (f"{args.ranks} processes, 1 thread each", args.ranks, launch(args, "step", args.ranks, 1)),
    ]
    base = statistics.median(runs[0][2]["step"])
    parameters = runs[0][2]["parameters"]
    print(f"\nTraining step of {args.model} ({parameters:,} parameters), global batch {args.batch_size}:")
    print(
        f"  {'configuration':<30} {'step: median (min-max)':>30} {'img/s':>8} {'speed-up':>8} {'efficiency':>10}"
        "  all-reduce"
    )
    for name, used, r in runs:
        step = statistics.median(r["step"])
        reduce_ms = statistics.median(r["reduce_in_step"]) * 1e3
        where = f"{reduce_ms:.1f} ms of the step (waiting included)" if r["ranks"] > 1 else "-"
        speed_up = base / step
        print(
            f"  {name:<30} {spread(r['step']):>30} {args.batch_size / step:8.1f} {speed_up:7.2f}x "
            f"{speed_up / used:10.0%}  {where}"
        )
    print("  (speed-up: against 1 process on 1 thread; efficiency: speed-up / cores used)")
    n, alone = runs[2][2]["ranks"], statistics.median(runs[2][2]["reduce_alone"])
    print(f"  all_reduce_gradients alone, {n} ranks: {spread(runs[2][2]['reduce_alone'])}")
    print(f"  efficiency implied by it: T1 / (T1 + {n} x all-reduce) = {base / (base + n * alone):.0%} (T1: 1 thread)")


def header(args: argparse.Namespace) -> None:
    from layers import machine_lines

    from minigrad.backend import Device

    print("Data-parallel training on one machine (benchmarks/distributed.py)")
    for line in machine_lines(Device("cpu"), None):
        print(line)
    version = subprocess.run([str(MPIEXEC), "--version"], text=True, capture_output=True).stdout
    numbers = [line.split(":", 1)[1].strip() for line in version.splitlines() if line.strip().startswith("Version:")]
    print(f"MPI: {MPIEXEC} (hydra {numbers[0] if numbers else 'version unknown'})")
    print(
        "Workers: BLAS/OpenMP/Numba threads limited in-process (threadpoolctl, numba.set_num_threads), "
        "minigrad.keep_freed_memory() on"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="alexnet-tiny", help="alexnet | alexnet-small | alexnet-tiny")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, shared by the ranks")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    parser.add_argument("--repeats", type=int, default=5, help="timed all-reduces")
    parser.add_argument("--ranks", type=int, default=2, help="processes of the data-parallel runs")
    parser.add_argument("--skip-allreduce", action="store_true", help="only the training steps")
    parser.add_argument("--skip-steps", action="store_true", help="only the all-reduce")
    parser.add_argument("--worker", choices=["allreduce", "step"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    if not MPIEXEC.exists():
        raise SystemExit(f"no mpiexec next to {sys.executable}: pip install -e '.[distributed]'")
    header(args)
    if not args.skip_allreduce:
        report_allreduce(args)
    if not args.skip_steps:
        report_steps(args)


if __name__ == "__main__":
    main()
