"""A few SGD steps of a small network with dropout, data parallel: `mpiexec -n N` or one process alike.

    [mpiexec -n 2] python tests/mpi/sgd_steps.py OUT_DIR   ->   OUT_DIR/weights_<size>.npz (written by rank 0)

Every rank starts from weights seeded by its rank (so `broadcast_parameters` must make them rank 0's), draws
each step's global batch and the dropout mask of the whole global batch from the same seed, and computes
only its rows (`shard`). Two runs of steps, each from a fresh model: "mean" (global batch 12, mean loss per
rank, gradients averaged) and "sum" (global batch 13, which 2 ranks share unevenly: the loss is the sum over
the rank's rows divided by 13, gradients summed). One process must end with the same weights as N.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from minigrad import backend, nn, optim
from minigrad import distributed as dist
from minigrad import functional as F
from minigrad.tensor import Tensor

STEPS, FEATURES, CLASSES, DROP = 4, 8, 3, 0.5


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask is drawn for the whole global batch, of which this rank keeps its rows."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.rows, self.n_global = p, slice(None), 0

    def forward(self, x: Tensor) -> Tensor:
        draws = backend.rng("cpu").random((self.n_global, *x.shape[1:]), dtype=np.float32)[self.rows]
        mask = (draws >= np.float32(self.p)) * np.float32(1.0 / (1.0 - self.p))
        return x * Tensor(mask, device=x.device)


def train(world: dist.World, n_global: int, loss_kind: str, device: str = "cpu") -> dict[str, np.ndarray]:
    """STEPS steps from rank 0's starting weights; returns the final weights by name ("mean/0.weight", ...)."""
    backend.manual_seed(world.rank)  # different starting weights on every rank, until the broadcast
    dropout = GlobalBatchDropout(DROP)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), dropout, nn.Linear(16, CLASSES)).to(device)
    dist.broadcast_parameters(model, world=world)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    backend.manual_seed(1234)  # the dropout stream: the same on every rank
    data = np.random.default_rng(7)
    rows = dist.shard(n_global, world.rank, world.size)
    dropout.rows, dropout.n_global = rows, n_global
    for _ in range(STEPS):
        x = data.standard_normal((n_global, FEATURES), dtype=np.float32)  # the whole global batch
        y = data.integers(0, CLASSES, n_global)
        opt.zero_grad()
        logits = model(Tensor(x[rows], device=device))
        if loss_kind == "mean":
            loss = F.cross_entropy(logits, Tensor(y[rows]))
        else:
            loss = F.cross_entropy(logits, Tensor(y[rows])) * float((rows.stop - rows.start) / n_global)
        loss.backward()
        dist.all_reduce_gradients(model, average=loss_kind == "mean", world=world)
        opt.step()
    return {f"{loss_kind}/{name}": value for name, value in model.state_dict().items()}


def main(out: Path) -> None:
    world = dist.world()
    weights = {**train(world, 12, "mean"), **train(world, 13, "sum")}
    if world.is_root:
        np.savez(out / f"weights_{world.size}.npz", **weights)


if __name__ == "__main__":
    with dist.abort_on_error():
        main(Path(sys.argv[1]))
