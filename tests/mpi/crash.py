"""Rank 1 fails in one of several ways while rank 0 waits in an all-reduce: the whole job must end.

    mpiexec -n 2 python tests/mpi/crash.py MODE     MODE: raise | uncaught | exit | sigint | sigkill

raise: an exception inside `abort_on_error`; uncaught: an exception at the top level with
`install_abort_on_error`; exit: sys.exit(3) inside `abort_on_error`; sigint: Ctrl-C on that rank alone;
sigkill: the process is killed. Rank 0 all-reduces gradients until the job is ended: without the abort it
would wait forever.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from minigrad import distributed as dist
from minigrad import nn
from minigrad.tensor import Tensor


def fail(mode: str) -> None:
    time.sleep(0.2)  # rank 0 is in its all-reduce by now
    if mode in ("raise", "uncaught"):
        raise RuntimeError("rank 1 failed on purpose")
    if mode == "exit":
        sys.exit(3)
    if mode == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(1.0)  # a signal lands within this wait
    raise AssertionError(f"unknown mode {mode!r}")


def main(mode: str) -> None:
    world = dist.world()
    model = nn.Linear(4, 2)
    if world.rank == 1:
        fail(mode)
    x = Tensor(np.ones((2, 4), dtype=np.float32))
    while True:
        model(x).sum().backward()
        dist.all_reduce_gradients(model)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "uncaught":
        dist.install_abort_on_error()
        main(mode)
    else:
        with dist.abort_on_error():
            main(mode)
