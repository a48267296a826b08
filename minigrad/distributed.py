"""Data parallelism across processes: every process (a "rank") holds the whole model, computes the gradients of
its own share of each batch, and the ranks average their gradients before the optimizer step, so every rank
takes the same step with the same weights.

    from minigrad import distributed as dist

    world = dist.world()                      # rank 0 of 1 without mpiexec: then every call below does nothing
    dist.broadcast_parameters(model)          # every rank starts from rank 0's weights
    rows = dist.shard(len(x), world.rank, world.size)
    loss = F.cross_entropy(model(x[rows]), y[rows])
    loss.backward()
    dist.all_reduce_gradients(model)          # each .grad is now the mean over the ranks
    optimizer.step()

An MPI launcher starts the processes (`mpiexec -n 2 python train.py`); MPI (through mpi4py) sums arrays in
host memory, and NCCL (through CuPy) sums arrays on GPUs, one rank per GPU, after `setup("gpu")`. Without a
launcher, or with one process, `world()` is rank 0 of 1, mpi4py is never imported and nothing changes.

Two ways to reduce the gradients, with the same result:
- `all_reduce_gradients_plain`: the definition, one all-reduce per parameter (a learner reads this first);
- `all_reduce_gradients`: the parameters' gradients are copied into one flat buffer per dtype, which is
  reduced with a single call (one message instead of one per parameter), and each `.grad` becomes a view
  of its part of the buffer.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from minigrad import backend
from minigrad.backend import Device
from minigrad.nn import Module
from minigrad.tensor import Tensor

# Launchers that say how many processes they started: MPICH's and Intel MPI's hydra (and Slurm's PMI-2) set
# PMI_SIZE, Open MPI sets OMPI_COMM_WORLD_SIZE. Only these make `world()` import mpi4py, which starts MPI.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
INSTALL_HINT = "pip install -e '.[distributed]' (mpi4py and MPICH)"
ABORT_GRACE_S = 0.3  # seconds a failing rank waits, after flushing its output, before it ends the job


# ----------------------------------------------------------------------------- collectives


class Alone:
    """The collectives of a world of one process: a sum or broadcast over one rank leaves the array as it is."""

    def sum_(self, array: Any) -> None:
        """Sum `array` over the ranks, in place."""

    def broadcast_(self, array: Any, root: int = 0) -> None:
        """Overwrite `array` with rank `root`'s, in place."""

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        """Wait until every rank has called it."""

    def abort(self, code: int) -> NoReturn:
        raise SystemExit(code)


class MpiCollective(Alone):
    """Sums and broadcasts host (NumPy) arrays in place with MPI.

    mpi4py's upper-case methods (`Allreduce`, `Bcast`) read and write the arrays' own memory through the buffer
    protocol: no copy into a message, no pickling. Only the one-off `broadcast_object` pickles (a small id).
    """

    def __init__(self, comm: Any, mpi: ModuleType) -> None:
        self.comm, self._mpi = comm, mpi

    def sum_(self, array: Any) -> None:
        self.comm.Allreduce(self._mpi.IN_PLACE, _host_buffer(array), op=self._mpi.SUM)

    def broadcast_(self, array: Any, root: int = 0) -> None:
        self.comm.Bcast(_host_buffer(array), root=root)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int) -> NoReturn:
        # The launcher forwards each rank's output through a pipe and tears the job down on MPI_Abort, dropping
        # what it has not read yet: flush, and give it a moment, so the traceback and the reason reach the user.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)  # ends every rank of the job; it does not return
        raise SystemExit(code)


def _host_buffer(array: Any) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"MPI here reduces host (NumPy) arrays, not {type(array).__name__}: for GPU arrays call "
            "minigrad.distributed.setup('gpu') first, which reduces them with NCCL"
        )
    if not array.flags.c_contiguous:
        raise ValueError("MPI reduces arrays in place: pass a C-contiguous array (np.ascontiguousarray)")
    return array


class NcclCollective(Alone):
    """Sums and broadcasts GPU arrays in place with NCCL, one rank per GPU (ChainerMN's design).

    Rank 0 makes the communicator's unique id, the host collective (MPI) hands it to the other ranks once, and
    every rank joins with its own GPU. The NCCL calls are queued on the current CUDA stream, so the CuPy work
    that follows on that stream sees their result. Host arrays still go through the host collective.
    """

    def __init__(self, host: Alone, rank: int, size: int, device_index: int) -> None:
        self.host = host
        self._nccl = backend.nccl()
        self._xp = Device(f"cuda:{device_index}").xp
        unique_id = self._nccl.get_unique_id() if rank == 0 else None
        unique_id = host.broadcast_object(unique_id, root=0)
        with self._xp.cuda.Device(device_index):
            self._comm = self._nccl.NcclCommunicator(size, unique_id, rank)

    def _call_arguments(self, array: Any) -> tuple[int, int, int]:
        if not array.flags.c_contiguous:
            raise ValueError("NCCL reduces arrays in place: pass a C-contiguous array")
        return array.data.ptr, array.size, nccl_dtype(self._nccl, array.dtype)

    def _stream(self) -> int:
        return self._xp.cuda.get_current_stream().ptr

    def sum_(self, array: Any) -> None:
        if not backend.is_gpu_array(array):
            self.host.sum_(array)
            return
        pointer, count, dtype = self._call_arguments(array)
        self._comm.allReduce(pointer, pointer, count, dtype, self._nccl.NCCL_SUM, self._stream())

    def broadcast_(self, array: Any, root: int = 0) -> None:
        if not backend.is_gpu_array(array):
            self.host.broadcast_(array, root)
            return
        pointer, count, dtype = self._call_arguments(array)
        self._comm.broadcast(pointer, pointer, count, dtype, root, self._stream())

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.host.broadcast_object(obj, root)

    def barrier(self) -> None:
        self._xp.cuda.get_current_stream().synchronize()
        self.host.barrier()

    def abort(self, code: int) -> NoReturn:
        self.host.abort(code)


def nccl_dtype(nccl: Any, dtype: Any) -> int:
    """NCCL's code for a NumPy dtype: float32 -> nccl.NCCL_FLOAT32, int64 -> nccl.NCCL_INT64, ..."""
    name = f"NCCL_{np.dtype(dtype).name.upper()}"
    if not hasattr(nccl, name):
        raise TypeError(f"NCCL cannot reduce arrays of dtype {np.dtype(dtype)}")
    return getattr(nccl, name)


# ----------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """The processes of this job as this one sees them.

    rank: this process's number, 0 .. size-1 (rank 0 is the root, which prints and writes files).
    local_rank, local_size: the same on this machine (local_rank picks the GPU).
    backend: "mpi" (host arrays over MPI), "nccl" (GPU arrays over NCCL) or None (one process: no-ops).
    device: where this rank's model lives (`setup` chooses it).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None
    device: Device = field(default_factory=lambda: Device("cpu"))
    collective: Alone = field(default_factory=Alone, repr=False, compare=False)

    @property
    def is_root(self) -> bool:
        return self.rank == 0


_world: World | None = None


def launcher_size(environ: Mapping[str, str] | None = None) -> int | None:
    """How many processes an MPI launcher started (from its environment variables); None without one."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARIABLES:
        if name in environ:
            return int(environ[name])
    return None


def detect_world(environ: Mapping[str, str] | None = None) -> World:
    """The world of this process, found from the launcher's environment and MPI (see `world`)."""
    expected = launcher_size(environ)
    if expected is None or expected <= 1:
        return World()
    try:
        from mpi4py import MPI  # starts MPI: done only under a launcher that started several processes
    except ImportError as exc:
        raise RuntimeError(
            f"an MPI launcher started {expected} processes but mpi4py is missing ({exc}), so each would train "
            f"alone: {INSTALL_HINT}"
        ) from exc
    comm = MPI.COMM_WORLD
    if comm.Get_size() != expected:
        raise RuntimeError(
            f"the launcher started {expected} processes but MPI sees {comm.Get_size()}: the mpiexec used belongs "
            f"to another MPI than mpi4py's ({MPI.Get_library_version().splitlines()[0].strip()}); use the one "
            f"next to this Python: {os.path.join(os.path.dirname(sys.executable), 'mpiexec')}"
        )
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())  # the ranks on this machine
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    return World(comm.Get_rank(), comm.Get_size(), local_rank, local_size, "mpi", collective=MpiCollective(comm, MPI))


def world() -> World:
    """This job's world: rank, size, local rank, backend. Rank 0 of 1 unless an MPI launcher started several
    processes and mpi4py is installed (then the first call, which every rank makes, joins MPI)."""
    global _world
    if _world is None:
        _world = detect_world()
    return _world


def gpu_index(local_rank: int, local_size: int, gpu_count: int) -> int:
    """The GPU of a rank: one rank per GPU, in local-rank order. Raises when the machine has too few GPUs."""
    if gpu_count < local_size:
        raise RuntimeError(
            f"{local_size} ranks run on this machine but it shows {gpu_count} GPU(s): start one rank per GPU "
            "(mpiexec -n <GPUs per machine> per machine), or give each rank an explicit device 'cuda:K'"
        )
    return local_rank


def setup(device: str | Device = "cpu") -> World:
    """Join the job (as `world()`) and choose this rank's device; returns the world, whose `.device` is where
    the model goes. 'gpu' or 'cuda' means cuda:<local rank> (one rank per GPU), an explicit 'cuda:K' is kept.
    With several ranks on GPUs, gradients and `all_reduce_sum` of GPU arrays then go through NCCL."""
    global _world
    current = world()
    wanted = Device(device)
    if wanted.kind == "gpu" and isinstance(device, str) and ":" not in device and current.size > 1:
        count = wanted.xp.cuda.runtime.getDeviceCount()
        wanted = Device(f"cuda:{gpu_index(current.local_rank, current.local_size, count)}")
    if wanted == current.device:
        return current
    if wanted.kind == "cpu":
        raise RuntimeError(f"this rank already set up {current.device}; call setup once, with one device")
    xp = wanted.xp  # raises, saying why, when no GPU is usable
    xp.cuda.Device(wanted.index).use()
    if current.backend is None:
        _world = replace(current, device=wanted)
    else:
        collective = NcclCollective(current.collective, current.rank, current.size, wanted.index)
        _world = replace(current, backend="nccl", device=wanted, collective=collective)
    return _world


def _resolve(given: World | None) -> World:
    return world() if given is None else given


# ----------------------------------------------------------------------------- gradients: the definition


def trainable_parameters(model_or_params: Module | Iterable[Tensor]) -> list[Tensor]:
    """The parameters whose gradients are reduced, in the model's order (the same on every rank)."""
    params = model_or_params.parameters() if isinstance(model_or_params, Module) else list(model_or_params)
    return [p for p in params if p.requires_grad]


def all_reduce_gradients_plain(
    model_or_params: Module | Iterable[Tensor], average: bool = True, world: World | None = None
) -> None:
    """The definition of `all_reduce_gradients`: one all-reduce per parameter (two, with its flag).

    Every rank ends with the same `.grad` for each parameter (same shape as the parameter): the sum over the
    ranks of their gradients, each first multiplied by 1/N when `average` (N ranks), which makes the sum
    their mean. A rank without a gradient for a parameter adds zeros; a parameter that no rank has a
    gradient for keeps `.grad = None`, as in one process.
    """
    w = _resolve(world)
    if w.backend is None:
        return
    scale = 1.0 / w.size if average else 1.0
    for p in trainable_parameters(model_or_params):
        have = np.array([p.grad is not None], dtype=np.int64)
        w.collective.sum_(have)  # how many ranks have a gradient for p
        if have[0] == 0:
            continue
        # a new C-ordered array: the collective writes the sum into it, in place
        g = p.xp.zeros(p.shape, dtype=p.dtype) if p.grad is None else p.grad.data * p.dtype.type(scale)
        w.collective.sum_(g)
        p.grad = Tensor(g)


# ----------------------------------------------------------------------------- gradients: one buffer


@dataclass(frozen=True)
class Bucket:
    """Where gradients of one dtype sit in one flat buffer of `size` elements.

    members[k] is an index into the parameter list; its gradient fills buffer[offsets[k] : offsets[k] +
    sizes[k]] (shape shapes[k]). After the gradients come one flag per member, 1 where this rank has a
    gradient and 0 where it has none (its part is zeros): summed, a flag counts the ranks that had one.
    """

    dtype: np.dtype
    members: tuple[int, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def flags_at(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    @property
    def size(self) -> int:
        return self.flags_at + len(self.members)


def plan_buckets(params: Sequence[Tensor]) -> list[Bucket]:
    """One bucket per dtype (a buffer has one dtype), in the order the dtypes first appear."""
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(np.dtype(p.dtype), []).append(i)
    buckets = []
    for dtype, members in by_dtype.items():
        sizes = tuple(params[i].size for i in members)
        offsets = (0, *itertools.accumulate(sizes[:-1]))  # each gradient starts where the previous one ends
        shapes = tuple(params[i].shape for i in members)
        buckets.append(Bucket(dtype, tuple(members), offsets, sizes, shapes))
    return buckets


def pack(bucket: Bucket, params: Sequence[Tensor], scale: float = 1.0) -> Any:
    """The bucket's flat buffer, (bucket.size,): every member's gradient times `scale` (zeros for None), then
    the flags."""
    xp = params[bucket.members[0]].xp
    flat = xp.empty(bucket.size, dtype=bucket.dtype)
    flags = np.zeros(len(bucket.members), dtype=bucket.dtype)
    for k, (i, start, n) in enumerate(zip(bucket.members, bucket.offsets, bucket.sizes)):
        grad = params[i].grad
        if grad is None:
            flat[start : start + n] = 0
        else:  # scaled as it is copied: one pass over the gradient
            xp.multiply(grad.data.reshape(-1), bucket.dtype.type(scale), out=flat[start : start + n])
            flags[k] = 1
    flat[bucket.flags_at :] = xp.asarray(flags)
    return flat


def unpack(bucket: Bucket, flat: Any, params: Sequence[Tensor]) -> None:
    """Give each member the view of its part of `flat` as `.grad` (None where the summed flag is 0)."""
    have = backend.to_numpy(flat[bucket.flags_at :])  # one small device-to-host copy
    for k, (i, start, n, shape) in enumerate(zip(bucket.members, bucket.offsets, bucket.sizes, bucket.shapes)):
        params[i].grad = Tensor(flat[start : start + n].reshape(shape)) if have[k] > 0 else None


def all_reduce_gradients(
    model_or_params: Module | Iterable[Tensor], average: bool = True, world: World | None = None
) -> None:
    """Sum every trainable parameter's `.grad` over the ranks (each multiplied by 1/N first when `average`:
    their mean), with one all-reduce per dtype; equal to `all_reduce_gradients_plain`. No-op in a world of
    one process.

    Each `.grad` (the parameter's shape) becomes a view of one flat buffer that is made for this call, so a
    step's gradients never share memory with the next step's. Gradients are copied in (and scaled on the
    way) because backward makes new gradient arrays every step; copying them back out is not needed.

    With `average`, the result is the gradient of the mean loss over the global batch when each rank's loss
    is the mean over an equal share of it. For shares of different sizes (`shard` of a batch that the ranks
    do not divide), make each rank's loss the sum over its share divided by the global batch size and pass
    `average=False`: the sum over the ranks is then the global mean.
    """
    w = _resolve(world)
    if w.backend is None:
        return
    params = trainable_parameters(model_or_params)
    for bucket in plan_buckets(params):
        flat = pack(bucket, params, scale=1.0 / w.size if average else 1.0)
        w.collective.sum_(flat)
        unpack(bucket, flat, params)


# ----------------------------------------------------------------------------- weights, counts, barrier


def broadcast_parameters(model_or_params: Module | Iterable[Tensor], root: int = 0, world: World | None = None) -> None:
    """Overwrite every parameter (trainable or not) with rank `root`'s values, in place: identical start."""
    w = _resolve(world)
    if w.backend is None:
        return
    params = model_or_params.parameters() if isinstance(model_or_params, Module) else list(model_or_params)
    for p in params:
        data = p.xp.ascontiguousarray(p.data)
        w.collective.broadcast_(data, root)
        p.data = data


def all_reduce_sum(array: Any, world: World | None = None) -> Any:
    """The sum over the ranks of `array` (a number, a list or an array; same shape on every rank), as a new
    array on the same device: summed validation counts, losses, a "stop" flag. One process: a copy."""
    w = _resolve(world)
    xp = backend.get_array_module(array)
    total = xp.array(array, copy=True, order="C")
    w.collective.sum_(total)
    return total


def barrier(world: World | None = None) -> None:
    """Wait until every rank has reached this call."""
    _resolve(world).collective.barrier()


# ----------------------------------------------------------------------------- ending the whole job


def abort(message: str, code: int = 1, world: World | None = None) -> NoReturn:
    """Print `message` (with this rank's number) to stderr and end every rank of the job with exit code `code`
    (MPI_Abort). A rank that merely exited would leave the others waiting in their next all-reduce forever.
    In one process this is `sys.exit(code)` after the message."""
    w = _resolve(world)
    prefix = f"[rank {w.rank} of {w.size}] " if w.size > 1 else ""
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    w.collective.abort(code)


def _abort_for(kind: type[BaseException], value: BaseException, w: World) -> NoReturn:
    if issubclass(kind, KeyboardInterrupt):
        abort(f"interrupted (Ctrl-C): ending all {w.size} processes", 130, w)
    abort(f"{kind.__name__}: {value}: ending all {w.size} processes", 1, w)


@contextlib.contextmanager
def abort_on_error(world: World | None = None) -> Iterator[None]:
    """Inside this block, an exception (or Ctrl-C, or sys.exit with an error code) on any rank prints its
    traceback and ends the whole job (`abort`) instead of leaving the other ranks waiting. One process: the
    exception propagates as usual."""
    w = _resolve(world)
    try:
        yield
    except SystemExit as exc:
        if w.size > 1 and exc.code not in (None, 0):
            code = exc.code if isinstance(exc.code, int) else 1  # sys.exit("message") exits with 1
            abort(f"exited with {exc.code!r}: ending all {w.size} processes", code, w)
        raise
    except BaseException as exc:
        if w.size == 1:
            raise
        traceback.print_exc()
        _abort_for(type(exc), exc, w)


def install_abort_on_error(world: World | None = None) -> None:
    """Make an uncaught exception (or Ctrl-C) on this rank end the whole job (see `abort`), after Python prints
    its traceback as usual. Nothing changes in a world of one process."""
    w = _resolve(world)
    if w.size == 1:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        _abort_for(kind, value, w)

    sys.excepthook = hook


# ----------------------------------------------------------------------------- sharding for determinism


def shard(n_global: int, rank: int, size: int) -> slice:
    """The rows of a global batch of `n_global` that rank `rank` of `size` computes: contiguous shares in rank
    order, the first n_global % size ranks one row more (shard(10, r, 3): 0:4, 4:7, 7:10). Shares may be empty.

    Determinism: every rank draws the random numbers of the WHOLE global batch (data order, augmentation,
    dropout masks) from the same seed and keeps its rows, so N ranks take the steps one process would.
    """
    if size < 1 or not 0 <= rank < size or n_global < 0:
        raise ValueError(f"shard: need n_global >= 0 and 0 <= rank < size, got {n_global}, {rank}, {size}")
    base, extra = divmod(n_global, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))
