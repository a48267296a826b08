"""A small pool of worker processes for the data pipeline (`prepare` and the background loader).

Why not `multiprocessing.Pool` or `concurrent.futures`: the pipeline needs four guarantees that are easiest to
see in a few lines written for them.

- Every worker starts (and runs its initializer) before the first task, so a caller can hand out something
  all workers must open first (the loader's shared batch buffers) and then remove its name.
- A worker that dies (killed, out of memory, a crash in a C library) is an exception in the caller within one
  `wait`, never a hang: the caller waits on the workers' pipes and on their process sentinels together.
- An exception inside a task comes back to the caller with the worker's traceback.
- `close()` ends and reaps every worker; the workers ignore Ctrl-C (the caller decides when they stop) and exit
  by themselves when the caller's process disappears.

Each worker has its own duplex pipe: tasks go down, results come up. The caller bounds the tasks in flight
(a few per worker), so the pipes never fill up with tasks while a worker is blocked sending a large result.

Workers are started with the "forkserver" method where the platform has it (else "spawn"): a fresh process
forks the workers, not the caller, which may hold a GPU context, MPI state or threads that a forked child must
not inherit. Everything a worker gets travels by pickle, so sources and settings are small, re-openable objects.

May import: the standard library.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any

# How long `close()` waits for a worker to finish its current task and exit before it is terminated.
_JOIN_SECONDS = 5.0
# How often a worker checks that the process that started it is still there.
_PARENT_POLL_SECONDS = 1.0


class WorkerError(RuntimeError):
    """A task raised an exception in a worker process; the message holds the worker's traceback.

    `ticket` is the task's ticket (None for a worker that failed to start).
    """

    def __init__(self, message: str, ticket: int | None = None) -> None:
        super().__init__(message)
        self.ticket = ticket


class WorkerDied(RuntimeError):
    """A worker process ended without being asked to (killed by a signal, out of memory, a crash)."""


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# Modules the fork server imports once, so that each worker it forks starts with them loaded.
PRELOAD = ["__main__", "alexnet.data.loader", "alexnet.data.prepare"]


def get_context(start_method: str | None = None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for data workers: `start_method`, else forkserver where the platform has it
    (Linux, macOS), else spawn.

    With forkserver and spawn a worker imports the caller's script as a module first, so a script must start
    workers under `if __name__ == "__main__":`; "fork" has no such need but copies the caller as it is (its
    threads' locks, a GPU context), which is why it is not the default. The fork server is shared by the whole
    process: this asks it to preload the data modules (and `__main__`, its default), which takes effect if the
    server has not started yet.
    """
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker once the process that started it is gone (its parent pid changes).

    The parent is the caller with "spawn", the fork server with "forkserver" (which exits when the caller does).
    """
    while True:
        threading.Event().wait(_PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_main(conn: Any, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """The loop each worker runs: initialize, say "ready", then run tasks until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it then closes the pool
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException:
        conn.send(("init-error", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the caller closed its end or died
            return
        if message is None:
            return
        ticket, fn, args = message
        try:
            reply = (ticket, True, fn(*args))
        except Exception:
            reply = (ticket, False, traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the caller closed the pool while this task ran: nobody wants the result
            return


class WorkerPool:
    """`workers` processes that run module-level functions: `submit(fn, *args)`, then `next_result()`.

    initializer(*initargs) runs once in each worker before it takes tasks (open files, build caches; keep its
    state in module globals). The constructor returns once every worker is ready. start_method: see
    `get_context`.
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
        start_method: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, got {workers}")
        ctx = get_context(start_method)
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._load: list[int] = []  # tasks in flight per worker
        self._owner: dict[int, int] = {}  # ticket -> worker index
        self._next_ticket = 0
        self.broken = False
        # The finalizer ends the workers when the pool is garbage-collected or the interpreter exits without
        # close(): no worker outlives its caller.
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)
        for _ in range(workers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(child_end, initializer, initargs), daemon=True)
            proc.start()
            child_end.close()
            self._conns.append(parent_end)
            self._procs.append(proc)
            self._load.append(0)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        waiting = set(range(len(self._procs)))
        while waiting:
            self._check_alive(waiting)
            ready = multiprocessing.connection.wait(
                [self._conns[i] for i in waiting] + [self._procs[i].sentinel for i in waiting]
            )
            for i in list(waiting):
                if self._conns[i] in ready:
                    try:
                        status, detail = self._conns[i].recv()
                    except EOFError:
                        self._procs[i].join(_JOIN_SECONDS)
                        raise WorkerDied(
                            f"a data worker exited while starting (exit code {self._procs[i].exitcode}). A script "
                            "that starts workers (prepare, the loader) must do so under "
                            '`if __name__ == "__main__":`, as multiprocessing needs: each worker imports the '
                            "script first (or pass start_method='fork' on Linux)"
                        ) from None
                    if status == "init-error":
                        raise WorkerError(f"a data worker failed to start:\n{detail}")
                    waiting.discard(i)

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers (for tests and monitoring)."""
        return [p.pid for p in self._procs]

    def __len__(self) -> int:
        return len(self._procs)

    @property
    def in_flight(self) -> int:
        """Tasks submitted whose results have not been read yet."""
        return len(self._owner)

    def submit(self, fn: Callable[..., Any], *args: Any, worker: int | None = None) -> int:
        """Send `fn(*args)` to worker number `worker`, by default the least busy one; returns the ticket its
        result will come back with."""
        if self.broken:
            raise RuntimeError("this worker pool is closed or broken")
        if worker is None:
            worker = min(range(len(self._procs)), key=self._load.__getitem__)
        ticket = self._next_ticket
        self._next_ticket += 1
        self._conns[worker].send((ticket, fn, args))
        self._load[worker] += 1
        self._owner[ticket] = worker
        return ticket

    def next_result(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """The next finished task as (ticket, result), in completion order; None after `timeout` seconds.

        A task's exception is raised here as WorkerError; a worker that died, as WorkerDied (the pool is then
        broken: close it).
        """
        if not self._owner:
            raise RuntimeError("next_result() with no task in flight")
        busy = sorted(set(self._owner.values()))
        while True:
            # Results first: a worker may have sent its last result and then died.
            ready = multiprocessing.connection.wait([self._conns[i] for i in busy], timeout=0)
            if not ready:
                self._check_alive(range(len(self._procs)))
                sentinels = [p.sentinel for p in self._procs]
                ready = multiprocessing.connection.wait([self._conns[i] for i in busy] + sentinels, timeout)
                if not ready:
                    return None
                ready = [c for c in ready if c in self._conns]
                if not ready:
                    continue  # a sentinel: _check_alive raises on the next pass
            conn = ready[0]
            try:
                ticket, ok, payload = conn.recv()
            except (EOFError, OSError):  # the worker is gone: wait for its exit status to say how
                worker = self._conns.index(conn)
                self._procs[worker].join(_JOIN_SECONDS)
                self._check_alive([worker])
                raise WorkerDied(f"data worker process {self._procs[worker].pid} closed its pipe") from None
            self._load[self._owner.pop(ticket)] -= 1
            if not ok:
                raise WorkerError(f"a data worker raised an exception:\n{payload}", ticket)
            return ticket, payload

    def _check_alive(self, indices: Sequence[int] | set[int] | range) -> None:
        for i in indices:
            code = self._procs[i].exitcode
            if code is not None:
                self.broken = True
                how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                raise WorkerDied(
                    f"data worker process {self._procs[i].pid} died ({how}); its batch is lost. "
                    "Out of memory is the usual cause of SIGKILL: fewer workers or a smaller batch/prefetch help."
                )

    def close(self, now: bool = False) -> None:
        """Stop every worker and reap it; idempotent. Each worker finishes its current task first, unless `now`
        (after Ctrl-C: a task's result is no longer wanted, and it may be stuck, e.g. reading a hung file)."""
        self.broken = True
        if now and self._finalizer.alive:
            for proc in self._procs:
                if proc.exitcode is None:
                    proc.terminate()
        self._finalizer()


def _shutdown(procs: list[Any], conns: list[Any]) -> None:
    """Ask each worker to stop, wait for it, terminate the ones that do not, and close the pipes.

    The pipes are closed right after the stop message: a worker still reads the message (it is already in the
    socket), and one that is sending a result nobody will read gets an error at once instead of blocking.
    """
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
        conn.close()
    for proc in procs:
        proc.join(_JOIN_SECONDS)
        if proc.exitcode is None:
            proc.terminate()
            proc.join(_JOIN_SECONDS)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    for proc in procs:
        proc.close()
