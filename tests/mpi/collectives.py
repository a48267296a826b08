"""Run under `mpiexec -n 2`: reduces made-up gradients and broadcasts weights; writes what each rank saw.

    mpiexec -n 2 python tests/mpi/collectives.py OUT_DIR   ->   OUT_DIR/rank0.npz, OUT_DIR/rank1.npz

Each rank's gradients are seeded by its rank; `p_none_on_rank1` has no gradient on rank 1, `p_none` on no
rank, and `p_float64` has its own dtype (a second bucket). Keys: `in/NAME` (this rank's gradient),
`flat/NAME` and `plain/NAME` (after `all_reduce_gradients` and `all_reduce_gradients_plain`; absent where
.grad stayed None), `summed/NAME` (average=False), `weights/NAME` (after `broadcast_parameters`; each rank
starts from weights seeded by its rank), `counts` (all_reduce_sum of [rank + 1, 10]) and `world`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from minigrad import distributed as dist
from minigrad.nn import Parameter
from minigrad.tensor import Tensor

SHAPES = {"w": (3, 4), "b": (4,), "p_none_on_rank1": (2, 5), "p_none": (6,), "p_float64": (2, 2)}


def make_parameters(seed: int) -> dict[str, Parameter]:
    rng = np.random.default_rng(seed)
    dtype = {"p_float64": np.float64}
    return {n: Parameter(rng.standard_normal(s).astype(dtype.get(n, np.float32))) for n, s in SHAPES.items()}


def give_gradients(params: dict[str, Parameter], rank: int) -> None:
    rng = np.random.default_rng(100 + rank)
    for name, p in params.items():
        missing = name == "p_none" or (name == "p_none_on_rank1" and rank == 1)
        p.grad = None if missing else Tensor(rng.standard_normal(p.shape).astype(p.dtype))


def main(out: Path) -> None:
    world = dist.world()
    results: dict[str, np.ndarray] = {"world": np.array([world.rank, world.size, world.local_rank, world.local_size])}
    runs = {"flat": dist.all_reduce_gradients, "plain": dist.all_reduce_gradients_plain}
    for kind, reduce in runs.items():
        params = make_parameters(0)
        give_gradients(params, world.rank)
        results.update({f"in/{n}": p.grad.numpy() for n, p in params.items() if p.grad is not None})
        reduce(list(params.values()))
        results.update({f"{kind}/{n}": p.grad.numpy() for n, p in params.items() if p.grad is not None})
    params = make_parameters(0)
    give_gradients(params, world.rank)
    dist.all_reduce_gradients(list(params.values()), average=False)
    results.update({f"summed/{n}": p.grad.numpy() for n, p in params.items() if p.grad is not None})

    weights = make_parameters(seed=world.rank)
    dist.broadcast_parameters(list(weights.values()))
    results.update({f"weights/{n}": p.numpy() for n, p in weights.items()})
    results["counts"] = dist.all_reduce_sum(np.array([world.rank + 1, 10], dtype=np.int64))
    dist.barrier()
    np.savez(out / f"rank{world.rank}.npz", **results)


if __name__ == "__main__":
    with dist.abort_on_error():
        main(Path(sys.argv[1]))
