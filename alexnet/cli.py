"""The `alexnet` command: train, eval, predict, plot, summary, gradcheck.

`alexnet train` with no options is the project's demo: it trains alexnet-tiny on
Fashion-MNIST on the CPU in a few minutes, then prints the test accuracy and where
the plots are.

May import: every other `alexnet` module (the ones that import matplotlib, `plots` and `figures`, only
inside the commands that draw), minigrad's public API, NumPy, the standard library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.checkpoint import CheckpointError
from alexnet.config import TrainConfig
from alexnet.model import ACTIVATIONS, CONFIGS, AlexNet, build_model, format_summary
from alexnet.run_data import prepare_data
from alexnet.runs import load_model
from alexnet.train import TrainingDiverged, train
from minigrad import Tensor, backend, keep_freed_memory


def _device_ok(device: str) -> str | None:
    """An error message when `device` can't be used, else None."""
    try:
        dev = backend.Device(device)
    except ValueError as exc:
        return str(exc)
    if dev.kind == "gpu" and not backend.gpu_available():
        return f"--device {device} asked for, but no GPU is usable: {backend.gpu_unavailable_reason()}"
    return None


def _positive_int(text: str) -> int:
    """argparse type of the counts that must be at least 1 (epochs, batch size, image counts, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it tells the truth.

    Not for switches (nargs 0): --no-augment's default, True, would read as "no augmentation by default". Not
    for None, which means "decided by the model or the data", nor where the help already states the default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- commands


def _train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        device=args.device,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        patience=args.patience,
        min_lr=args.min_lr,
        seed=args.seed,
        out=args.out,
        augment=args.augment,
        val_size=args.val_size,
        max_train_images=args.max_train_images,
        ten_crop=args.ten_crop,
        lrn=False if args.no_lrn else None,
        groups=args.groups,
        overlap=False if args.no_overlap else None,
        width=args.width,
        init=args.init,
        activation=args.activation,
        progress=not args.no_progress,
    )
    try:
        result = train(cfg, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.stopped_early:
        return 130
    if not args.no_plots:
        try:
            from alexnet.figures import plot_run

            written = plot_run(result.run_dir, args.device)
        except Exception as exc:  # the run is trained and saved: a figure that fails must not make it a failure
            print(
                f"warning: no plots ({type(exc).__name__}: {exc}); try: alexnet plot {result.run_dir}", file=sys.stderr
            )
        else:
            print("plots: " + ", ".join(str(p) for p in written))
    print(f"run folder: {result.run_dir} (checkpoint.npz, best.npz, metrics.jsonl, test.json)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from alexnet.evaluate import evaluate

    try:
        model, meta = load_model(args.checkpoint, args.device, expect_model=args.model)
        cfg = TrainConfig.from_saved(meta["train_config"])
        if args.data is not None:
            cfg.data = args.data
        prepared = prepare_data(cfg, model.config.in_channels, model.config.image_size)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
    result = evaluate(
        model, prepared.test_images, prepared.test_labels, args.batch_size, mean, std, args.ten_crop, progress=True
    )
    views = "10-crop" if args.ten_crop else "centre crop"
    if args.ten_crop and prepared.test_images.shape[-1] == model.config.image_size:
        views += ": the images are the input size, so it averages each image and its mirror"
    print(f"{model.config.name} on {result.count:,} test images ({prepared.source}; {views}):")
    print(f"  top-1 error {100 * result.top1_error:.2f}%  (accuracy {100 * (1 - result.top1_error):.2f}%)")
    print(f"  top-5 error {100 * result.top5_error:.2f}%")
    print(f"  loss        {result.loss:.4f}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from alexnet.inference import predict_files

    try:
        model, meta = load_model(args.checkpoint, args.device)
        predictions = predict_files(model, meta, args.images, top=args.top)
    except (CheckpointError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for prediction in predictions:
        print(prediction.path)
        for name, p in zip(prediction.classes, prediction.probabilities):
            print(f"  {100 * p:6.2f}%  {name}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "checkpoint.npz").exists():
        print(f"error: {run_dir} is not a run folder (no checkpoint.npz)", file=sys.stderr)
        return 2
    from alexnet.figures import plot_run

    try:
        written = plot_run(run_dir, args.device)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    return 0


def _model_from_args(args: argparse.Namespace) -> AlexNet:
    return build_model(
        args.model,
        lrn=False if args.no_lrn else None,
        groups=args.groups,
        overlap=False if args.no_overlap else None,
        width=args.width,
        num_classes=args.num_classes,
        activation=args.activation,
    )


def _summary(args: argparse.Namespace) -> int:
    try:
        model = _model_from_args(args)
    except ValueError as exc:  # e.g. --groups that do not divide the channels
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(model))
    return 0


def _gradcheck(args: argparse.Namespace) -> int:
    import minigrad.functional as F
    from minigrad.gradcheck import gradcheck

    backend.manual_seed(args.seed)
    try:
        model = _model_from_args(args).astype(np.float64).to(args.device)
    except ValueError as exc:  # e.g. a --width that leaves a layer without channels
        print(f"error: {exc}", file=sys.stderr)
        return 2
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

    print(f"gradient check of {cfg.name} (float64, {model.num_parameters():,} parameters, batch 2)...")
    report = gradcheck(loss, x, *model.parameters(), max_elements=args.max_elements, name=cfg.name)
    print(f"{'tensor':<28} {'shape':<20} {'mode':<10} {'n':>5}  {'max abs err':>11}  {'max rel err':>11}  result")
    for c in report.inputs:
        print(
            f"{names[c.index]:<28} {c.shape!s:<20} {c.mode:<10} {c.checked:>5}  {c.max_abs_error:>11.2e}  "
            f"{c.max_rel_error:>11.2e}  {'PASS' if c.passed else 'FAIL'}"
        )
    print(f"{'PASS' if report.passed else 'FAIL'}: {cfg.name} in {report.seconds:.1f} s")
    return 0 if report.passed else 1


def _add_model_switches(p: argparse.ArgumentParser, default_model: str = "alexnet-tiny") -> None:
    p.add_argument("--model", default=default_model, choices=sorted(CONFIGS), help="which network")
    p.add_argument("--no-lrn", action="store_true", help="ablation: drop local response normalisation")
    p.add_argument(
        "--groups",
        type=_positive_int,
        default=None,
        help="channel groups of conv2/4/5 (paper: 2, the two-GPU split; 1 = none)",
    )
    p.add_argument(
        "--no-overlap", action="store_true", help="ablation: 2x2 stride-2 pooling instead of overlapping 3x3 stride 2"
    )
    p.add_argument("--width", type=float, default=None, help="multiply every layer's width (channels, fc units)")
    p.add_argument(
        "--activation",
        default=None,
        choices=sorted(ACTIVATIONS),
        help="the unit after every conv and hidden fc layer (default: relu, the paper's; tanh: its Fig. 1 comparison)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` parser: one sub-parser per command, each added by its own function."""
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton 2012) on the minigrad engine: train, evaluate, inspect.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_plot, _add_summary, _add_gradcheck):
        add(sub)
    return parser


_TRAIN_DESCRIPTION = (
    "Train with the paper's recipe: SGD with momentum 0.9 and weight decay 5e-4, learning rate divided by 10 "
    "when the validation error stops improving, and for colour data random crops, flips and PCA colour "
    "lighting (off for Fashion-MNIST by default: see --augment). Greyscale models use Fashion-MNIST: the full"
    " set when its IDX files are found (--data, $ALEXNET_FASHION_MNIST or /usr/share/datasets/fashion-mnist),"
    " else the subset bundled in the package. Colour models read an image folder (--data DIR with train/ and "
    "val/). Each epoch writes metrics.jsonl and an atomic checkpoint to the run folder; Ctrl-C stops after "
    "the current batch and saves. Like every alexnet command it keeps freed memory for reuse "
    "(minigrad.keep_freed_memory); set MALLOC_TRIM_THRESHOLD_ or another glibc malloc variable to opt out."
)


def _add_train(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="train a model (default: alexnet-tiny on Fashion-MNIST, CPU)",
        formatter_class=_HelpFormatter,
        description=_TRAIN_DESCRIPTION,
    )
    _add_model_switches(t)
    t.add_argument(
        "--data",
        default=None,
        help="data folder (Fashion-MNIST IDX files, or an image folder); 'bundled' forces the subset in the package",
    )
    t.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    t.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="passes over the training set (default: 90 as in the paper; alexnet-tiny: ~165k images' worth, "
        "i.e. 3 epochs of the full Fashion-MNIST or 20 of the bundled subset)",
    )
    t.add_argument("--batch-size", type=_positive_int, default=128, help="images per step (the paper: 128)")
    _add_optimizer_options(t)
    t.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order, augmentation, dropout")
    t.add_argument("--out", default=None, help="run folder (default: runs/MODEL-DATE-TIME)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run from its checkpoint")
    t.add_argument("--init", default=None, choices=["paper", "he"], help="weight init (default: the model's own)")
    _add_data_options(t)
    t.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)


def _add_optimizer_options(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help="initial learning rate (default: 0.01 as in the paper; 0.05 for alexnet-tiny's few-epoch runs)",
    )
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="sgd is the paper's rule")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (inside SGD's velocity)")
    t.add_argument("--patience", type=int, default=3, help="epochs without validation improvement before lr/10")
    t.add_argument("--min-lr", type=float, default=1e-5, help="never reduce the learning rate below this")


def _add_data_options(t: argparse.ArgumentParser) -> None:
    aug = t.add_mutually_exclusive_group()
    aug.add_argument(
        "--augment",
        dest="augment",
        action="store_true",
        default=None,
        help="random crops, flips (and PCA lighting for colour) (default: on for colour image folders; off for "
        "Fashion-MNIST, where pad-and-crop slows learning)",
    )
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation")
    t.add_argument(
        "--val-size",
        type=_positive_int,
        default=None,
        help="validation images held out (default: min(5000, N/10), at least 1)",
    )
    t.add_argument(
        "--max-train-images",
        type=_positive_int,
        default=None,
        help="train on a random subset of this many images (quick runs)",
    )
    t.add_argument(
        "--ten-crop",
        action="store_true",
        help="final test with the paper's 10-crop averaging (4 corners + centre, and their mirrors; on images of "
        "the input size, e.g. Fashion-MNIST, that is the image and its mirror)",
    )


def _add_eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="top-1/top-5 error of a checkpoint on the test set", formatter_class=_HelpFormatter)
    e.add_argument("checkpoint", help="a checkpoint file or a run folder")
    e.add_argument("--data", default=None, help="data folder (default: the one the run used)")
    e.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    e.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass")
    e.add_argument(
        "--ten-crop",
        action="store_true",
        help="average the softmax over 10 crops, as in the paper (on images of the input size: image and mirror)",
    )
    e.add_argument("--model", default=None, help="fail unless the checkpoint holds this model")
    e.set_defaults(func=_eval)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="top-5 classes of image files", formatter_class=_HelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run folder")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    p.add_argument("--top", type=_positive_int, default=5, help="how many classes to list")
    p.set_defaults(func=_predict)


def _add_plot(sub: Any) -> None:
    pl = sub.add_parser(
        "plot",
        help="figures of a run: curves, conv1 kernels (Fig. 3), predictions and neighbours (Fig. 4)",
        formatter_class=_HelpFormatter,
    )
    pl.add_argument("run_dir", help="a run folder")
    pl.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    pl.set_defaults(func=_plot)


def _add_summary(sub: Any) -> None:
    s = sub.add_parser(
        "summary", help="layer table: output shapes, parameters, FLOPs, memory", formatter_class=_HelpFormatter
    )
    _add_model_switches(s, "alexnet")
    s.add_argument("--num-classes", type=_positive_int, default=None, help="output classes (default: the model's)")
    s.set_defaults(func=_summary)


def _add_gradcheck(sub: Any) -> None:
    g = sub.add_parser(
        "gradcheck",
        help="finite-difference check of a whole model's gradients (float64)",
        formatter_class=_HelpFormatter,
        description="Check every parameter tensor of the model (random directions for the large ones) and the input.",
    )
    _add_model_switches(g)
    g.add_argument("--num-classes", type=_positive_int, default=None, help="output classes (default: the model's)")
    g.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="seeds the model, the input and the directions")
    g.add_argument(
        "--max-elements", type=_positive_int, default=64, help="tensors larger than this use random directions"
    )
    g.set_defaults(func=_gradcheck)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # An application may choose the process's allocator policy, a library may not: large arrays freed by one
    # training step are reused by the next instead of being page-faulted in again (no-op without glibc).
    keep_freed_memory()
    problem = _device_ok(args.device) if hasattr(args, "device") else None
    if problem:  # checked once here, before any command loads data or builds a model
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
