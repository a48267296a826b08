"""GPU check: gradients summed by NCCL give the weights that the MPI-on-CPU path gives on the same data.

    python tests/mpi/check_nccl.py [OUT_DIR]                 one rank on one GPU (NCCL with one rank)
    mpiexec -n 2 python tests/mpi/check_nccl.py [OUT_DIR]    one rank per GPU, on a machine with 2 GPUs

Needs CuPy with NCCL (`pip install -e '.[gpu]'` and the NCCL wheel for your CUDA, e.g. nvidia-nccl-cu13);
mpi4py is needed for more than one rank. It checks, printing one line each and exiting with 1 on a failure:
1. NCCL's sum and broadcast of a GPU array;
2. the same SGD steps as tests/mpi/sgd_steps.py ("mean" and "sum" runs, dropout on), once on the CPU with
   MPI and once on the GPU with NCCL, end with the same weights (relative 1e-4: GPU sums run in another
   order). With one rank, the world is made by hand so that the NCCL and MPI code paths still run.
Writes OUT_DIR/nccl_check.json (rank 0) when OUT_DIR is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sgd_steps import train  # the same folder

from minigrad import backend
from minigrad import distributed as dist
from minigrad.backend import Device

TOLERANCE = 1e-4


def worlds() -> tuple[dist.World, dist.World]:
    """(the MPI world on the CPU, the NCCL world on this rank's GPU)."""
    cpu = dist.world()
    if cpu.size > 1:
        return cpu, dist.setup("gpu")
    try:
        from mpi4py import MPI

        host: dist.Alone = dist.MpiCollective(MPI.COMM_WORLD, MPI)
    except ImportError:
        host = dist.Alone()  # no MPI here: the CPU run reduces over one process without it
    cpu = dist.World(backend="mpi", collective=host)
    gpu = dist.World(backend="nccl", device=Device("cuda:0"), collective=dist.NcclCollective(host, 0, 1, 0))
    return cpu, gpu


def check_collectives(gpu: dist.World) -> dict[str, bool]:
    xp = gpu.device.xp
    a = xp.arange(6, dtype=xp.float32) * (gpu.rank + 1)
    gpu.collective.sum_(a)
    summed = np.allclose(backend.to_numpy(a), np.arange(6) * sum(r + 1 for r in range(gpu.size)))
    b = xp.full(4, gpu.rank + 5, dtype=xp.float64)
    gpu.collective.broadcast_(b, 0)
    return {"nccl sum": bool(summed), "nccl broadcast": bool(np.all(backend.to_numpy(b) == 5))}


def compare_training(cpu: dist.World, gpu: dist.World) -> tuple[dict[str, bool], float]:
    on_cpu = {**train(cpu, 12, "mean"), **train(cpu, 13, "sum")}
    on_gpu = {**train(gpu, 12, "mean", str(gpu.device)), **train(gpu, 13, "sum", str(gpu.device))}
    worst = max(float(np.abs(on_gpu[k] - on_cpu[k]).max() / np.abs(on_cpu[k]).max()) for k in on_cpu)
    return {"NCCL steps == MPI steps": worst < TOLERANCE}, worst


def main(out: Path | None) -> int:
    cpu, gpu = worlds()
    checks = check_collectives(gpu)
    training, worst = compare_training(cpu, gpu)
    checks.update(training)
    if gpu.is_root:
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        print(f"ranks {gpu.size}, worst relative difference of the weights {worst:.2e} (tolerance {TOLERANCE})")
        if out is not None:
            summary = {"ranks": gpu.size, "worst_relative_difference": worst, "checks": checks}
            (out / "nccl_check.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    with dist.abort_on_error():
        code = main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    sys.exit(code)
