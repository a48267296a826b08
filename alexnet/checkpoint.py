"""Checkpoints: everything needed to continue a run exactly, in one .npz file, written atomically.

The file holds the model's parameters and the optimizer's buffers as arrays, plus
one JSON document (`meta`) with the model config, optimizer and scheduler state,
random number generator states, epoch, batch and best metric. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the old one:
a crash at any moment leaves either the old checkpoint or the new one, never half.
The run's other files (metrics.jsonl, config.json, test.json) are written the same way.

May import: NumPy, the standard library (a checkpoint is read without minigrad or the model).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

FORMAT = "alexnet-checkpoint"
VERSION = 1


# The process's umask, read once at import (reading it means setting it, which would race with other threads).
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (corrupt, not a checkpoint, or made for another model)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to `path` for writing; on success it replaces `path` in one rename.

    A crash at any moment leaves either the old file or the new one, never half of one (the temporary
    file, named `<name>.<random>.tmp`, may be left behind; an exception removes it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); the result should get the mode any other new file gets.
            os.chmod(tmp, 0o666 & ~_UMASK)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); skipped where directories cannot be opened or synced."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support it; the rename itself has happened
        pass
    finally:
        os.close(fd)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Replace the text file at `path` in one step (see atomic_open). Returns the path."""
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))
    return Path(path)


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write `arrays` and the JSON-able `meta` to `path` atomically. Returns the path."""
    header = {"format": FORMAT, "version": VERSION, **meta}
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["meta"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with atomic_open(path) as f:
        np.savez(f, **payload)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint: (arrays, meta). Raises CheckpointError with the reason for a bad file."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint.npz").exists():
            raise FileNotFoundError(f"{path} is not a run folder (expected {path / 'checkpoint.npz'}: none there)")
        path = path / "checkpoint.npz"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected a run folder or a checkpoint .npz file)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # not a zip (.npz) file at all: e.g. an image given where the run folder goes
        raise CheckpointError(
            f"{path} is not a run folder or a checkpoint (expected a folder holding checkpoint.npz, "
            "or an .npz file written by alexnet train)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files:
                raise CheckpointError(f"{path} is an .npz file but not an AlexNet checkpoint (no 'meta' entry)")
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a/")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an AlexNet checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')}, this code reads {VERSION}")
    return arrays, meta


def split_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries whose names start with `prefix/`, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
