"""The `alexnet` command: train, prepare, eval, predict, plot, summary, gradcheck (parser: `alexnet.arguments`).

`alexnet train` with no options is the project's demo: it trains alexnet-tiny on
Fashion-MNIST on the CPU in a few minutes, then prints the test accuracy and where
the plots are. Errors go to stderr as one `error: ...` line that says what to do instead; results and the
notes that explain them go to stdout, in order.

May import: every other `alexnet` module (those that import matplotlib, `plots` and `figures`, only inside
the commands that draw), minigrad's public API, NumPy, the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from alexnet.arguments import build_parser
from alexnet.checkpoint import CheckpointError
from alexnet.config import TrainConfig
from alexnet.model import AlexNet, build_model, format_summary
from alexnet.run_data import PreparedData, StreamData, prepare_data
from alexnet.runs import DATA_STATS, load_model, load_statistics
from alexnet.train import TrainingDiverged, train
from minigrad import Tensor, backend, distributed, keep_freed_memory

# The exceptions that mean "this input cannot be used": one line on stderr, exit status 2.
_INPUT_ERRORS = (CheckpointError, FileExistsError, FileNotFoundError, ValueError)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _device_ok(device: str) -> str | None:
    """An error message when `device` can't be used, else None."""
    try:
        dev = backend.Device(device)
    except ValueError as exc:
        return str(exc)
    if dev.kind == "gpu" and not backend.gpu_available():
        return f"--device {device} asked for, but no GPU is usable: {backend.gpu_unavailable_reason()}"
    return None


def _given_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig settings the user gave on the command line (the parser leaves the others None)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _train(args: argparse.Namespace) -> int:
    world = distributed.world()  # under mpiexec: the first call, made on every rank, joins the job
    if world.size == 1:
        return _train_here(args, world)
    # Several ranks: an error on one rank must end them all (an exit would leave the others waiting forever).
    with distributed.abort_on_error(world):
        code = _train_here(args, world)
    if code not in (0, 130):
        distributed.abort(f"ending all {world.size} processes", code, world)
    return code


def _train_here(args: argparse.Namespace, world: distributed.World) -> int:
    given = _given_settings(args)
    root = world.is_root
    try:
        result = train(TrainConfig(**given), resume=args.resume, given=set(given) - {"device"})
    except TrainingDiverged as exc:  # on every rank at the same step: only rank 0 says so
        if root:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except _INPUT_ERRORS as exc:
        return _error(str(exc))
    if result.stopped_early:
        return 130
    if root and not args.no_plots:
        try:
            from alexnet.figures import plot_run

            written = plot_run(result.run_dir, args.device)
        except Exception as exc:  # the run is trained and saved: a figure that fails must not make it a failure
            print(
                f"warning: no plots ({type(exc).__name__}: {exc}); try: alexnet plot {result.run_dir}", file=sys.stderr
            )
        else:
            print("plots: " + ", ".join(str(p) for p in written))
    if root:
        print(f"run folder: {result.run_dir} (checkpoint.npz, best.npz, metrics.jsonl, test.json)")
    return 0


def _eval_data(args: argparse.Namespace, model: AlexNet, meta: dict) -> tuple[TrainConfig, PreparedData | StreamData]:
    """The run's settings and its test data (or --data's), normalised as the run trained."""
    cfg = TrainConfig.from_saved(meta["train_config"])
    if args.data is not None:
        cfg.data = args.data
    if args.workers is not None:
        cfg.workers = args.workers
    stats = None
    if model.config.in_channels == 3:
        folder = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
        stats = load_statistics(folder / DATA_STATS)
    return cfg, prepare_data(cfg, model.config.in_channels, model.config.image_size, statistics=stats)


def _eval(args: argparse.Namespace) -> int:
    from alexnet.evaluate import evaluate, evaluate_batches, ten_crop_notes
    from alexnet.inference import normalization

    try:
        model, meta = load_model(args.checkpoint, args.device, expect_model=args.model)
    except (CheckpointError, FileNotFoundError) as exc:
        return _error(f"{exc}; usage: alexnet eval RUN [--ten-crop]")
    try:
        cfg, prepared = _eval_data(args, model, meta)
    except _INPUT_ERRORS as exc:
        return _error(str(exc))
    if isinstance(prepared, StreamData):
        with prepared.eval_loader("test", cfg, args.ten_crop, batch_size=args.batch_size) as loader:
            result = evaluate_batches(model, loader, total=len(loader), progress=True)
        stored = prepared.image_size
    else:
        mean, std = normalization(meta, args.checkpoint)
        images, labels = prepared.test_images, prepared.test_labels
        result = evaluate(model, images, labels, args.batch_size, mean, std, args.ten_crop, progress=True)
        stored = images.shape[-2:]
    print(f"{model.config.name} on {result.count:,} test images ({prepared.source}; "
          f"{'10-crop' if args.ten_crop else 'centre crop'}):")  # fmt: skip
    if args.ten_crop:
        for note in ten_crop_notes(stored, model.config.image_size, cfg.augment):
            print(f"  note: {note}")
    print(f"  top-1 error {100 * result.top1_error:.2f}%  (accuracy {100 * (1 - result.top1_error):.2f}%)")
    print(f"  top-5 error {100 * result.top5_error:.2f}%")
    print(f"  loss        {result.loss:.4f}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from alexnet.inference import predict_files

    try:
        model, meta = load_model(args.checkpoint, args.device)
    except (CheckpointError, FileNotFoundError) as exc:
        return _error(f"{exc}; usage: alexnet predict RUN IMAGE [IMAGE ...]")
    try:
        predictions = predict_files(model, meta, args.images, top=args.top, invert=args.invert, run=args.checkpoint)
    except (FileNotFoundError, ValueError, OSError) as exc:
        return _error(str(exc))
    for prediction in predictions:
        print(prediction.path)
        for note in prediction.notes:
            print(f"  note: {note}")
        for name, p in zip(prediction.classes, prediction.probabilities):
            print(f"  {100 * p:6.2f}%  {name}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "checkpoint.npz").exists():
        return _error(
            f"{run_dir} is not a run folder (expected {run_dir / 'checkpoint.npz'}: none there); "
            "usage: alexnet plot RUN"
        )
    from alexnet.figures import plot_run

    try:
        written = plot_run(run_dir, args.device)
    except _INPUT_ERRORS as exc:
        return _error(str(exc))
    for p in written:
        print(p)
    return 0


def _model_from_args(args: argparse.Namespace) -> AlexNet:
    return build_model(
        args.model,
        lrn=args.lrn,
        groups=args.groups,
        overlap=args.overlap,
        width=args.width,
        num_classes=args.num_classes,
        activation=args.activation,
        dropout=args.dropout,
    )


def _summary(args: argparse.Namespace) -> int:
    try:
        model = _model_from_args(args)
    except ValueError as exc:  # e.g. --groups that do not divide the channels
        return _error(str(exc))
    print(format_summary(model))
    return 0


def _gradcheck(args: argparse.Namespace) -> int:
    import minigrad.functional as F
    from minigrad.gradcheck import gradcheck

    backend.manual_seed(args.seed)
    try:
        model = _model_from_args(args).astype(np.float64).to(args.device)
    except ValueError as exc:  # e.g. a --width that leaves a layer without channels
        return _error(str(exc))
    cfg = model.config
    gen = np.random.default_rng(args.seed)
    x = Tensor(
        backend.to_device(gen.standard_normal((2, cfg.in_channels, cfg.image_size, cfg.image_size)), args.device)
    )
    x.requires_grad_()
    labels = backend.to_device(np.arange(2) % cfg.num_classes, args.device)
    names = ["input", *(n for n, _ in model.named_parameters())]

    def loss(x: Tensor, *params: Tensor) -> Tensor:
        backend.manual_seed(args.seed)  # the same dropout masks on every evaluation
        return F.cross_entropy(model(x), labels)

    print(f"gradient check of {cfg.name} (float64, {model.num_parameters():,} parameters, batch 2)...", flush=True)
    report = gradcheck(loss, x, *model.parameters(), max_elements=args.max_elements, name=cfg.name)
    print(f"{'tensor':<28} {'shape':<20} {'mode':<10} {'n':>5}  {'max abs err':>11}  {'max rel err':>11}  result")
    for c in report.inputs:
        print(
            f"{names[c.index]:<28} {c.shape!s:<20} {c.mode:<10} {c.checked:>5}  {c.max_abs_error:>11.2e}  "
            f"{c.max_rel_error:>11.2e}  {'PASS' if c.passed else 'FAIL'}"
        )
    print(f"{'PASS' if report.passed else 'FAIL'}: {cfg.name} in {report.seconds:.1f} s")
    return 0 if report.passed else 1


def _prepare(args: argparse.Namespace) -> int:
    from alexnet.data.prepare import run_prepare

    return run_prepare(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train,
    "prepare": _prepare,
    "eval": _eval,
    "predict": _predict,
    "plot": _plot,
    "summary": _summary,
    "gradcheck": _gradcheck,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `alexnet` command; returns the exit status (2: unusable input, 1: failed, 130: stopped)."""
    args = build_parser().parse_args(argv)
    # An application may choose the process's allocator policy, a library may not: large arrays freed by one
    # training step are reused by the next instead of being page-faulted in again (no-op without glibc).
    keep_freed_memory()
    problem = _device_ok(args.device) if hasattr(args, "device") else None
    if problem:  # checked once here, before any command loads data or builds a model
        return _error(problem)
    return COMMANDS[args.func](args)


if __name__ == "__main__":
    sys.exit(main())
