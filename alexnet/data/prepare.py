"""`alexnet prepare SRC OUT`: decode a data set once into a prepared store (see `alexnet.data.store`).

The paper's recipe (Krizhevsky et al. 2012, section 2): down-sample every image once to 256 x 256 (shorter
side to 256, then the centre square) and train on crops of that. Decoding JPEGs is the expensive part of
reading ImageNet, so it is done once here, by N worker processes, and training then reads uint8 rows of a
memory map.

In steps (`prepare` calls them in this order):

1. List SRC (`alexnet.data.layout`): classes, and the files of train/ and val/ in store order.
2. Open OUT: create the store's arrays (sparse files, filled as rows are decoded), or, when OUT holds an
   unfinished preparation of the same listing, reopen them to resume.
3. Decode: the workers decode rows (`alexnet.data.decode.decode_image`) and write them into the images file
   with one positioned write per row. The caller records each finished row in a done mask, flushed to disk
   every few seconds after the images themselves are: an interrupted run (Ctrl-C, a killed process, a power
   cut) loses at most the rows of the last few seconds, and the next run decodes only the rows not done.
   Unreadable files are skipped with a warning that names each; more than `max_bad` of a split is an error.
4. Finish: the training statistics (mean image, channel mean/std, RGB eigen-pairs) from the store, then
   meta.json, which marks the store complete.

May import: NumPy, Pillow, tqdm, the standard library, alexnet.data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from alexnet.data.decode import decode_image
from alexnet.data.layout import LayoutError, SplitListing, fingerprint, list_source
from alexnet.data.store import (
    BAD,
    DONE,
    FORMAT,
    FORMAT_VERSION,
    PENDING,
    SPLITS,
    StoreError,
    _path,
    finish_store,
    npy_data_offset,
    read_meta,
    write_json,
)
from alexnet.data.workers import WorkerDied, WorkerError, WorkerPool, usable_cores

# Rows per task: enough to make the cost of a message negligible, few enough to spread the work evenly.
ROWS_PER_TASK = 16
# The done mask is written at most this often (and at the end); rows finished since are redone after a crash.
FLUSH_SECONDS = 5.0
# Files of a store, removed by `overwrite` (nothing else in OUT is ever deleted).
_STORE_FILES = [
    "plan.json",
    "meta.json",
    "classes.json",
    "mean_image.npy",
    "bad_files.txt",
    *(f"{s}_{w}" for s in SPLITS for w in ("images.npy", "labels.npy", "done.npy", "files.txt")),
]


class PrepareError(ValueError):
    """A preparation cannot go on (too many unreadable files, OUT holds something else, no disk space)."""


@dataclass
class PrepareReport:
    """What one call of `prepare` did."""

    out: Path
    images: dict[str, int]  # readable images per split in the store
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) found by this call
    decoded: int = 0  # files this call decoded (readable or not)
    seconds: float = 0.0  # wall time of the decoding step (workers started, statistics not included)
    workers: int = 0
    complete: bool = False  # meta.json written: the store is ready
    start_method: str | None = None  # how the workers were started (None: the default)

    @property
    def images_per_second(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0


def _log_default(message: str) -> None:
    # tqdm.write keeps a running progress bar intact; warnings and interruptions go to stderr, the rest to stdout.
    to_stderr = message.startswith(("warning", "interrupted"))
    tqdm.write(message, file=sys.stderr if to_stderr else sys.stdout)


# ----------------------------------------------------------------------------- step 2: open OUT


def _make_plan(src: Path, classes: list[str], splits: dict[str, SplitListing], size: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "size": size,
        "source": str(src.resolve()),
        "fingerprint": fingerprint(classes, splits, size),
        "rows": {name: len(listing) for name, listing in splits.items()},
    }


def _check_out(out: Path, plan: dict[str, Any], overwrite: bool) -> str:
    """What OUT holds: "new" (nothing of ours), "resume" or "complete"; a PrepareError when something else."""
    plan_file = out / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text(encoding="utf-8"))
        same = {k: old.get(k) for k in ("fingerprint", "size", "version")} == {
            k: plan[k] for k in ("fingerprint", "size", "version")
        }
        if same:
            return "complete" if (out / "meta.json").is_file() else "resume"
        if not overwrite:
            raise PrepareError(
                f"{out} holds a preparation of other files or another size (from {old.get('source')}, "
                f"size {old.get('size')}): use another folder, or --overwrite to replace it"
            )
    elif out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in _STORE_FILES)
        if others:
            raise PrepareError(f"{out} is not empty and holds no preparation ({', '.join(others[:3])}, ...)")
    for name in _STORE_FILES:
        (out / name).unlink(missing_ok=True)
    return "new"


def _create_store(out: Path, classes: list[str], splits: dict[str, SplitListing], plan: dict[str, Any]) -> None:
    """Create the store's files; plan.json comes last, so a half-created folder is simply created again."""
    size = plan["size"]
    out.mkdir(parents=True, exist_ok=True)
    need = sum(len(listing) for listing in splits.values()) * 3 * size * size
    free = shutil.disk_usage(out).free
    if need > free:
        raise PrepareError(f"{out}: the store needs {need / 1e9:,.1f} GB, the disk has {free / 1e9:,.1f} GB free")
    write_json(out / "classes.json", classes)
    for name, listing in splits.items():
        # open_memmap writes the header and sizes the file; its pages stay unwritten (sparse) until decoded.
        images = np.lib.format.open_memmap(
            _path(out, name, "images"), mode="w+", dtype=np.uint8, shape=(len(listing), 3, size, size)
        )
        del images
        np.save(_path(out, name, "labels"), listing.labels.astype(np.int64))
        np.save(_path(out, name, "done"), np.zeros(len(listing), dtype=np.uint8))
        _path(out, name, "files").write_text("".join(f"{f}\n" for f in listing.files), encoding="utf-8")
    write_json(out / "plan.json", plan)


# ----------------------------------------------------------------------------- step 3: decode (worker side)

_WORKER: dict[str, Any] = {}  # this worker's open images files: split -> (fd, data offset, bytes per row)


def _init_decode_worker(out: str, splits: Sequence[str], size: int) -> None:
    """Worker initializer: open each split's images file for positioned writes."""
    _WORKER.clear()
    _WORKER["size"] = size
    for split in splits:
        path = _path(Path(out), split, "images")
        offset, _, _ = npy_data_offset(path)
        _WORKER[split] = (os.open(path, os.O_RDWR), offset, 3 * size * size)


def _decode_task(split: str, root: str, rows: Sequence[int], files: Sequence[str]) -> list[tuple[int, str | None]]:
    """Decode some rows of a split and write them into its images file: [(row, None or why it failed)]."""
    fd, offset, row_bytes = _WORKER[split]
    results: list[tuple[int, str | None]] = []
    for row, name in zip(rows, files):
        try:
            image = decode_image(os.path.join(root, name), _WORKER["size"])
        except (ValueError, OSError) as exc:  # unreadable, or gone since it was listed
            results.append((row, str(exc.__cause__ or exc)))
            continue
        os.pwrite(fd, memoryview(image).cast("B"), offset + row * row_bytes)
        results.append((row, None))
    return results


# ----------------------------------------------------------------------------- step 3: decode (caller side)


class _DoneMasks:
    """The done masks of the splits, with the marks of finished rows held back until `flush`.

    `flush` first makes the images written so far durable (fsync), then applies and writes the marks: a mark
    on disk always means its row's pixels are on disk.
    """

    def __init__(self, out: Path, splits: Sequence[str]) -> None:
        self.masks = {s: np.lib.format.open_memmap(_path(out, s, "done"), mode="r+") for s in splits}
        self.images = {s: os.open(_path(out, s, "images"), os.O_RDWR) for s in splits}
        self.marks: list[tuple[str, int, int]] = []
        self.last_flush = time.monotonic()

    def pending(self, split: str) -> np.ndarray:
        """Rows not yet decoded, and rows that failed before (retried: the file may have been fixed)."""
        mask = self.masks[split]
        return np.flatnonzero((mask == PENDING) | (mask == BAD))

    def mark(self, split: str, row: int, state: int) -> None:
        self.marks.append((split, row, state))
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        for fd in self.images.values():
            os.fsync(fd)
        for split, row, state in self.marks:
            self.masks[split][row] = state
        for mask in self.masks.values():
            mask.flush()
        self.marks.clear()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        for fd in self.images.values():
            os.close(fd)


def _tasks(
    splits: dict[str, SplitListing], masks: _DoneMasks, workers: int
) -> list[tuple[str, str, list[int], list[str]]]:
    """The decode tasks: (split, root, rows, files), ROWS_PER_TASK rows each, fewer for small jobs (so that
    every worker gets several tasks)."""
    pending = {name: masks.pending(name).tolist() for name in splits}
    total = sum(len(rows) for rows in pending.values())
    step = max(1, min(ROWS_PER_TASK, total // (4 * max(1, workers))))
    tasks = []
    for name, listing in splits.items():
        rows = pending[name]
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            tasks.append((name, str(listing.root), part, [listing.files[r] for r in part]))
    return tasks


@dataclass
class _Progress:
    """Counts of the decoding step, checked against `max_bad` as results come in."""

    splits: dict[str, SplitListing]
    max_bad: float
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    bad_per_split: dict[str, int] = field(default_factory=dict)
    decoded: int = 0

    def record(self, split: str, results: list[tuple[int, str | None]], masks: _DoneMasks, log: Any) -> None:
        for row, reason in results:
            self.decoded += 1
            if reason is None:
                masks.mark(split, row, DONE)
                continue
            masks.mark(split, row, BAD)
            path = str(self.splits[split].root / self.splits[split].files[row])
            self.bad.append((path, reason))
            self.bad_per_split[split] = self.bad_per_split.get(split, 0) + 1
            log(f"warning: skipped unreadable image {path}: {reason}")

    def too_many_bad(self) -> str | None:
        for split, count in self.bad_per_split.items():
            rows = len(self.splits[split])
            if count > self.max_bad * rows:
                return (
                    f"{count:,} of the {rows:,} {split} images ({100 * count / rows:.2f}%) could not be read: more "
                    f"than max_bad = {100 * self.max_bad:g}% (--max-bad). They are listed in bad_files.txt; fix or "
                    "remove them and run again (the images already decoded are kept)"
                )
        return None


def _run_decoding(
    tasks: list[tuple[str, str, list[int], list[str]]],
    pool: WorkerPool | None,
    progress: _Progress,
    masks: _DoneMasks,
    bar: Any,
    log: Any,
    stop_after: int | None,
) -> bool:
    """Run the decode tasks on the pool (or here, one by one, when None).

    Returns False when `stop_after` stopped it before the end. It also returns, early, as soon as a split has
    too many unreadable files (the caller checks `progress.too_many_bad()`).
    """
    queue = deque(tasks)
    in_flight: dict[int, str] = {}  # ticket -> split
    while progress.too_many_bad() is None:
        stopping = stop_after is not None and progress.decoded >= stop_after
        if pool is None:
            if not queue or stopping:
                break
            split, root, rows, files = queue.popleft()
            results = _decode_task(split, root, rows, files)
        else:
            while queue and not stopping and len(in_flight) < 2 * len(pool):
                task = queue.popleft()
                in_flight[pool.submit(_decode_task, *task)] = task[0]
            if not in_flight:
                break
            ticket, results = pool.next_result()
            split = in_flight.pop(ticket)
        progress.record(split, results, masks, log)
        bar.update(len(results))
    return not queue


# ----------------------------------------------------------------------------- the whole preparation


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 256,
    workers: int | None = None,
    *,
    class_index: str | os.PathLike | None = None,
    val_labels: str | os.PathLike | None = None,
    max_bad: float = 0.01,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
    start_method: str | None = None,
) -> PrepareReport:
    """Decode SRC/train and SRC/val once into a prepared store in OUT (steps in the module docstring).

    size: the side of the stored images (shorter side scaled to it, centre square).
    workers: decoding processes (default: every usable core); 0 decodes in this process.
    class_index, val_labels: see `alexnet.data.layout.list_source`.
    max_bad: the fraction of a split's files that may be unreadable (skipped) before it is an error.
    overwrite: replace a preparation of other files or another size in OUT (other files are never touched).
    stop_after: stop after about this many files, as if interrupted (for tests); the report says incomplete.
    start_method: how worker processes start (`alexnet.data.workers.get_context`).
    Ctrl-C stops the same way, then raises KeyboardInterrupt; running again resumes. Returns a PrepareReport.
    """
    log = log or _log_default
    src, out = Path(src), Path(out)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 <= max_bad <= 1:
        raise ValueError(f"max_bad is a fraction between 0 and 1, got {max_bad}")
    classes, splits = list_source(src, class_index, val_labels)
    plan = _make_plan(src, classes, splits, size)
    state = _check_out(out, plan, overwrite)
    workers = usable_cores() if workers is None else workers
    report = PrepareReport(out, {}, workers=workers, start_method=start_method)
    if state == "complete":
        meta = read_meta(out)
        report.images = {s: c["images"] for s, c in meta["splits"].items()}
        report.complete = True
        log(f"{out} is already prepared from these files: nothing to do")
        return report
    if state == "new":
        _create_store(out, classes, splits, plan)
    else:
        log(f"resuming the preparation in {out}")
    return _decode_and_finish(out, classes, splits, plan, report, max_bad, progress, stop_after, log)


def _decode_and_finish(
    out: Path,
    classes: list[str],
    splits: dict[str, SplitListing],
    plan: dict[str, Any],
    report: PrepareReport,
    max_bad: float,
    progress: bool,
    stop_after: int | None,
    log: Callable[[str], None],
) -> PrepareReport:
    masks = _DoneMasks(out, list(splits))
    tasks = _tasks(splits, masks, report.workers)
    total = sum(len(t[2]) for t in tasks)
    counts = _Progress(splits, max_bad)
    pool = None
    try:
        if report.workers > 0 and tasks:
            initargs = (str(out), list(splits), plan["size"])
            pool = WorkerPool(report.workers, _init_decode_worker, initargs, report.start_method)
        else:
            _init_decode_worker(str(out), list(splits), plan["size"])
        start = time.perf_counter()  # the decoding rate, from the moment every worker is ready
        with tqdm(total=total, unit="img", desc="prepare", disable=not progress, smoothing=0.05) as bar:
            finished = _run_decoding(tasks, pool, counts, masks, bar, log, stop_after)
        report.seconds = time.perf_counter() - start
        report.decoded, report.bad = counts.decoded, counts.bad
        masks.flush()
        _write_bad_files(out, counts.bad)
        problem = counts.too_many_bad()
        if problem is not None:
            raise PrepareError(problem)
        if not finished:
            log(f"stopped after {counts.decoded:,} of {total:,} files; run again to resume")
            return report
        meta = finish_store(out, classes, plan["size"], pool, extra={"source": plan["source"]})
    except KeyboardInterrupt:
        if pool is not None:
            pool.close(now=True)
        log(f"interrupted after {counts.decoded:,} of {total:,} files; run the same command again to resume")
        raise
    finally:
        if pool is not None:
            pool.close()
        masks.close()
    report.images = {s: c["images"] for s, c in meta["splits"].items()}
    report.complete = True
    _log_summary(report, counts, log)
    return report


def _write_bad_files(out: Path, bad: list[tuple[str, str]]) -> None:
    lines = "".join(f"{path}\t{reason}\n" for path, reason in bad)
    (out / "bad_files.txt").write_text(lines, encoding="utf-8")


def _log_summary(report: PrepareReport, counts: _Progress, log: Callable[[str], None]) -> None:
    images = ", ".join(f"{n:,} {split}" for split, n in report.images.items())
    log(
        f"prepared {report.out}: {images} images; decoded {report.decoded:,} files in {report.seconds:.1f} s, "
        f"{report.images_per_second:,.0f} images/s with {report.workers} worker(s)"
    )
    if report.bad:
        log(f"skipped {len(report.bad):,} unreadable file(s), listed in {report.out / 'bad_files.txt'}")


# ----------------------------------------------------------------------------- the command line


def _fraction(text: str) -> float:
    """--max-bad: a fraction (0.01) or a percentage (1%)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.01 or a percentage such as 1%, got {text!r}"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0% and 100%), got {text}")
    return value


_PREPARE_EXAMPLES = """examples:
  alexnet prepare ~/imagenet ~/imagenet-256                 # SRC/train/<wnid>/*.JPEG, SRC/val/ (+ val_labels.csv)
  alexnet prepare ~/imagenet ~/imagenet-256 --workers 8     # the same command again resumes an interrupted run
  alexnet prepare ~/imagenet ~/imagenet-256 --val-labels LOC_val_solution.csv --class-index LOC_synset_mapping.txt
"""


def build_prepare_parser(subparsers: Any = None) -> argparse.ArgumentParser:
    """The `prepare` sub-command's parser, added to `subparsers` (argparse's) or standalone when None.

    It sets `func="prepare"` (the `alexnet` command's dispatch key); `run_prepare(args)` runs it.
    """
    description = (
        "Decode SRC/train and SRC/val once (shorter side to SIZE, centre square) into a memory-mapped uint8 store "
        "in OUT, with the training set's mean image, channel mean/std and RGB eigen-pairs. Interrupt it any time; "
        "the same command resumes. Needs 3 x SIZE^2 bytes per image (197 KB at 256: 252 GB for ImageNet's "
        "training set). Unreadable files are skipped and listed in OUT/bad_files.txt."
    )
    kwargs: dict[str, Any] = {
        "description": textwrap.fill(description, 100),
        "epilog": _PREPARE_EXAMPLES,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    if subparsers is not None:
        p = subparsers.add_parser("prepare", help="decode an image folder once into a memory-mapped store", **kwargs)
    else:
        p = argparse.ArgumentParser(prog="alexnet prepare", **kwargs)
    p.add_argument("src", help="the data set: SRC/train/<class>/<image> and SRC/val/ (class folders, or flat + CSV)")
    p.add_argument("out", help="the folder to write the store to (created; resumed if it holds this preparation)")
    p.add_argument("--size", type=int, default=256, help="side of the stored images (default: 256, the paper's)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: every usable core; 0: decode in this process)",
    )
    p.add_argument(
        "--class-index", default=None, help="class names in index order, one per line or JSON (default: sorted folders)"
    )
    p.add_argument(
        "--val-labels", default=None, help="CSV of filename,class rows for a flat val/ (default: SRC/val_labels.csv)"
    )
    p.add_argument(
        "--max-bad", type=_fraction, default=0.01, help="unreadable files allowed per split: 0.01 or 1%% (default: 1%%)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a preparation of other files in OUT")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func="prepare")
    return p


def run_prepare(args: argparse.Namespace) -> int:
    """Run `alexnet prepare` from parsed arguments; returns the exit status like the other `alexnet` commands:
    0, 2 for unusable input (layout, too many unreadable files, OUT holding something else), 1 when the run
    failed (a worker crashed, the disk is full), 130 after Ctrl-C."""
    try:
        prepare(
            args.src,
            args.out,
            size=args.size,
            workers=args.workers,
            class_index=args.class_index,
            val_labels=args.val_labels,
            max_bad=args.max_bad,
            overwrite=args.overwrite,
            progress=args.progress,
        )
    except (LayoutError, PrepareError, StoreError, FileNotFoundError) as exc:  # the input: fix it, run again
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (WorkerError, WorkerDied, OSError) as exc:  # the run failed (a crashed worker, a full disk)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """`python -m alexnet.data.prepare SRC OUT ...`: the same as `alexnet prepare`."""
    return run_prepare(build_prepare_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(prepare_main())
