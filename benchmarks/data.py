"""Images per second of the ImageNet data pipeline: `prepare` (decode once) and the background loader.

    python benchmarks/data.py                         # prepare and the loader with 1, 2 and N workers
    python benchmarks/data.py --images 600 --batches 8      # a shorter run
    python benchmarks/data.py --memory [--images 20000]     # resident memory over time on a large set

Everything runs on generated data (no ImageNet here): JPEGs like ImageNet's photos in size and weight (about
500x375, quality 90: a random colour per class, a gradient and noise; `--unique` distinct files, hard-linked
to reach `--images`, which costs nothing in decoding: each file is opened and decoded on its own). One real
photo (matplotlib's grace_hopper.jpg, cropped to 500x375 and saved at quality 90) is decoded too, to show how
far the generated files are from a photo.

Throughput mode:
- prepare: `alexnet.data.prepare.prepare(SRC, OUT, size=256, workers=W)` for W in 1, 2, N (N = the usable
  cores). images/s is the decoding step's wall-clock rate (workers started, statistics pass not included).
- loader: `BackgroundLoader(store, 128, crop=227, mean="image", lighting=0.1)` over the store prepare wrote
  (random crops, flips, PCA lighting, mean-image subtraction: the paper's training batches), W in 0 (in this
  process: the cost of the work alone), 1, 2, N. After 4 warm-up batches, `--batches` batches are timed while
  the consumer does nothing else; images/s = batches * 128 / time.
- raw folder: the same loader on `RawFolderSource` (decoding every JPEG every epoch), N workers.
- per core: images per CPU second (user + system time of this process and of every process it starts, from
  /proc), which does not depend on what else the machine runs; wall-clock images/s does.
- cores needed to feed the GPU: its measured training rate, 2,678 images/s (the paper's net, batch 128,
  fp32, one H200; `--gpu-rate`), over the per-core rates.

Memory mode: prepares `--images` generated images with N workers, then runs one loader epoch over them with N
workers, sampling the resident memory (VmRSS) of this process and of every process it started (the fork
server and the workers) every `--interval` seconds; prints the samples and the peaks of the first and the
last quarter of each phase: flat memory means the two are the same while the images done grow tenfold.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import minigrad  # noqa: E402, F401  (before NumPy: see benchmarks/README.md, "Threads")

# isort: split
import numpy as np  # noqa: E402
from layers import cpu_model  # noqa: E402  (benchmarks/layers.py)
from PIL import Image  # noqa: E402

from alexnet.data import make_fake_imagefolder  # noqa: E402
from alexnet.data.decode import decode_image  # noqa: E402
from alexnet.data.loader import BackgroundLoader, RawFolderSource  # noqa: E402
from alexnet.data.prepare import prepare  # noqa: E402
from alexnet.data.store import PreparedStore  # noqa: E402
from alexnet.data.workers import WorkerPool, usable_cores  # noqa: E402

GPU_RATE = 2678  # images/s: the paper's AlexNet training on one H200, batch 128, fp32 (benchmarks/README.md)
SIZES = [(500, 375), (375, 500), (500, 333)]  # ImageNet's usual shapes: landscape, portrait, 3:2
CLASSES = 10


# ----------------------------------------------------------------------------- generated data


def generate_source(root: Path, train: int, val: int, unique: int, seed: int = 0) -> Path:
    """SRC/train/<class>/* (`train` files) and SRC/val/<class>/* (`val`): `unique` distinct generated JPEGs
    per split at most, hard-linked (or copied where links fail) to reach the counts."""
    for split, count, split_seed in (("train", train, seed), ("val", val, seed + 1)):
        distinct = min(count, unique)
        per_class = max(1, -(-distinct // CLASSES))
        originals = root / "originals" / split
        make_fake_imagefolder(originals, classes=CLASSES, per_class=per_class, size=SIZES, seed=split_seed)
        for i in range(count):
            cls = f"n{i % CLASSES:08d}"
            original = originals / cls / f"{cls}_{(i // CLASSES) % per_class:04d}.JPEG"
            target = root / "src" / split / cls / f"{cls}_{i:07d}.JPEG"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(original, target)
            except OSError:
                shutil.copyfile(original, target)
    return root / "src"


def real_photo(folder: Path) -> Path | None:
    """matplotlib's grace_hopper.jpg, centre-cropped to 4:3, resized to 500x375, quality 90 (None if missing)."""
    try:
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except Exception:
        return None
    with Image.open(path) as img:
        w, h = img.size
        crop_h = min(h, w * 3 // 4)
        img = img.convert("RGB").crop((0, (h - crop_h) // 2, w, (h + crop_h) // 2)).resize((500, 375))
        out = folder / "grace_hopper_500x375.jpg"
        img.save(out, quality=90)
    return out


def decode_ms(paths: list[Path], repeat: int = 3) -> float:
    """Median milliseconds of decode_image(path, 256) over the paths (best of `repeat` passes each)."""
    times = []
    for path in paths:
        best = math.inf
        for _ in range(repeat):
            start = time.perf_counter()
            decode_image(path, 256)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return 1e3 * float(np.median(times))


# ----------------------------------------------------------------------------- throughput


class CpuMeter:
    """CPU seconds (user + system) of this process and of every process it starts, while the `with` block runs.

    On a shared machine wall time depends on the other users; CPU time is what the work costs, so images per
    CPU second is the rate one core of our own would give. Children are sampled from /proc every 0.05 s (a
    process that exits loses at most its last 0.05 s).
    """

    def __enter__(self) -> CpuMeter:
        self.me, self.tick = os.getpid(), os.sysconf("SC_CLK_TCK")
        self.before = set(descendants(self.me))
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.own = time.process_time()
        return self

    def _sample(self) -> None:
        for pid in descendants(self.me):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            self.first.setdefault(pid, ticks if pid in self.before else 0)
            self.last[pid] = ticks

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self.own = time.process_time() - self.own
        self._stop.set()
        self._thread.join()
        self._sample()
        self.children = sum(self.last[p] - self.first[p] for p in self.last) / self.tick
        self.seconds = self.own + self.children


def time_prepare(src: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """(decoding images/s, whole prepare() seconds with the statistics pass, its CPU seconds), fresh OUT."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with CpuMeter() as cpu:
        report = prepare(src, out, size=256, workers=workers, progress=False, log=lambda _: None)
    return report.images_per_second, time.perf_counter() - start, cpu.seconds


def time_loader(
    source: object, workers: int, batches: int, batch_size: int = 128, **kwargs: object
) -> tuple[float, float]:
    """(images/s, CPU seconds) of the training loader over `batches` batches (epochs as needed), after 4
    warm-up batches (the first use of each of the 3 batch buffers costs page faults)."""
    with BackgroundLoader(source, batch_size, crop=227, mean="image", workers=workers, seed=0, **kwargs) as loader:
        seen, epoch, cpu = -4, 0, CpuMeter()
        while seen < batches:
            for _ in loader.epoch(epoch):
                seen += 1
                if seen == 0:
                    cpu.__enter__()
                    start = time.perf_counter()
                if seen == batches:
                    break
            epoch += 1
        wall = time.perf_counter() - start
        cpu.__exit__()
        return batches * batch_size / wall, cpu.seconds


def describe_data(work: Path) -> None:
    sample = sorted((work / "originals" / "train").rglob("*.JPEG"))[:20]
    kb = np.mean([p.stat().st_size for p in sample]) / 1e3
    photo = real_photo(work)
    line = f"decode_image(path, 256), median per file: generated {decode_ms(sample):.2f} ms ({kb:.0f} KB files)"
    if photo is not None:
        line += f", real photo {decode_ms([photo], repeat=10):.2f} ms ({photo.stat().st_size / 1e3:.0f} KB)"
    print(line)


def throughput(args: argparse.Namespace, work: Path) -> None:
    n = usable_cores()
    counts = sorted({1, 2, n})
    print(f"generating {args.images:,} training + {args.val:,} validation JPEGs ({args.unique} distinct each) ...")
    src = generate_source(work, args.images, args.val, args.unique)
    describe_data(work)
    total = args.images + args.val
    WorkerPool(1).close()  # starts the fork server (it imports the data modules once), outside the measurements

    print(f"\nprepare {total:,} images to 256x256 (images/CPU-s: the whole call, statistics pass included)")
    print(f"{'workers':>8} {'images/s':>10} {'whole s':>8} {'CPU s':>7} {'images/CPU-s':>13}")
    per_cpu_prepare = []
    out = work / "store"
    for w in counts:
        rate, seconds, cpu = time_prepare(src, out, w)
        per_cpu_prepare.append(total / cpu)
        print(f"{w:>8} {rate:>10,.0f} {seconds:>8.1f} {cpu:>7.1f} {total / cpu:>13,.0f}")

    store = PreparedStore(out)
    images = args.batches * 128
    print(f"\nloader: batch 128, random 227 crops + flips + PCA lighting + mean image, {args.batches} batches timed")
    print(f"{'workers':>8} {'images/s':>10} {'CPU s':>7} {'images/CPU-s':>13}")
    per_cpu_loader = []
    for w in [0, *counts]:
        rate, cpu = time_loader(store, w, args.batches)
        per_cpu_loader.append(images / cpu)
        print(f"{w if w else '0 (here)':>8} {rate:>10,.0f} {cpu:>7.1f} {images / cpu:>13,.0f}")
    raw = RawFolderSource(src, "train", size=256)
    raw_batches = max(2, args.batches // 4)
    raw_rate, raw_cpu = time_loader(raw, n, raw_batches, statistics=store.statistics)
    raw_per_cpu = raw_batches * 128 / raw_cpu
    print(f"raw folder (decoding every JPEG), {n} workers: {raw_rate:,.0f} images/s, {raw_per_cpu:,.0f} images/CPU-s")

    prepare_core, loader_core = min(per_cpu_prepare), min(per_cpu_loader[1:])  # the worker runs, worst case
    print(f"\nper core (images per CPU second, the worst of the worker runs): prepare {prepare_core:,.0f} "
          f"(target >= 150), loader {loader_core:,.0f} (target >= 1,000)")  # fmt: skip
    print(f"cores to feed {args.gpu_rate:,} images/s (the GPU's training rate): "
          f"{math.ceil(args.gpu_rate / loader_core)} from a prepared store, "
          f"{math.ceil(args.gpu_rate / raw_per_cpu)} decoding JPEGs on the fly")  # fmt: skip


# ----------------------------------------------------------------------------- memory over time


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process started (directly or not) by `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Sampler:
    """Samples (seconds, this process's RSS, the largest child RSS, all children's RSS) in KB, in a thread."""

    def __init__(self, interval: float) -> None:
        self.interval, self.samples, self.phase = interval, [], "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval):
            others = [rss_kb(p) for p in descendants(me)]
            self.samples.append((time.perf_counter() - self.start, self.phase, rss_kb(me), max(others, default=0),
                                 sum(others)))  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def memory(args: argparse.Namespace, work: Path) -> None:
    if not Path("/proc/self/status").exists():
        sys.exit("--memory reads /proc: Linux only")
    n = usable_cores()
    print(f"generating {args.images:,} training + {args.val:,} validation JPEGs ({args.unique} distinct each) ...")
    src = generate_source(work, args.images, args.val, args.unique)
    sampler = Sampler(args.interval)
    sampler.phase = "prepare"
    report = prepare(src, work / "store", size=256, workers=n, progress=False, log=lambda _: None)
    sampler.phase = "loader"
    store = PreparedStore(work / "store")
    with BackgroundLoader(store, 128, crop=227, mean="image", workers=n, seed=0) as loader:
        for _ in loader.epoch(0):
            pass
    sampler.stop()
    print(f"prepare: {report.decoded:,} images in {report.seconds:.1f} s ({report.images_per_second:,.0f} images/s, "
          f"{n} workers); loader: one epoch of {len(loader):,} batches of 128, {n} workers")  # fmt: skip
    print(f"\n{'s':>7} {'phase':>8} {'main MB':>8} {'max child MB':>13} {'children MB':>12}")
    step = max(1, len(sampler.samples) // 40)
    for t, phase, main, largest, children in sampler.samples[::step]:
        print(f"{t:>7.1f} {phase:>8} {main / 1024:>8.1f} {largest / 1024:>13.1f} {children / 1024:>12.1f}")
    print("\npeak MB in the first and the last quarter of each phase (main / largest child / all children):")
    for phase in ("prepare", "loader"):
        rows = [s for s in sampler.samples if s[1] == phase]
        if len(rows) < 4:
            print(f"{phase}: too few samples (use a smaller --interval)")
            continue
        quarter = len(rows) // 4
        for name, part in (("first", rows[:quarter]), ("last", rows[-quarter:])):
            peaks = [max(s[i] for s in part) / 1024 for i in (2, 3, 4)]
            print(f"{phase:>8} {name:>5} quarter: {peaks[0]:.1f} / {peaks[1]:.1f} / {peaks[2]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=None, help="training images (default 1,200; --memory 20,000)")
    parser.add_argument("--val", type=int, default=None, help="validation images (default: 1%% of --images, >= 10)")
    parser.add_argument("--unique", type=int, default=400, help="distinct generated JPEGs per split")
    parser.add_argument("--batches", type=int, default=16, help="loader batches timed per run")
    parser.add_argument("--gpu-rate", type=int, default=GPU_RATE, help="the training rate to feed, images/s")
    parser.add_argument("--memory", action="store_true", help="resident memory over time instead of throughput")
    parser.add_argument("--interval", type=float, default=0.5, help="--memory: seconds between samples")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    args.images = args.images or (20_000 if args.memory else 1_200)
    args.val = args.val if args.val is not None else max(10, args.images // 100)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores ({usable_cores()} usable), "
          f"load average {os.getloadavg()[0]:.2f} (1 min); generated data, not ImageNet")  # fmt: skip
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="alexnet-data-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        memory(args, work) if args.memory else throughput(args, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
