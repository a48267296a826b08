"""The `alexnet` command's parser: one sub-parser per command, each with a description and examples, and
argument types that check every number against its allowed range (`alexnet.config.BOUNDS`) before any
command runs.

The flags of `alexnet train` default to None ("not given"): `TrainConfig` holds the defaults, so the
command knows which flags the user gave (a resume names those it ignores).

May import: `alexnet` (its version), `alexnet.config`, `alexnet.model`, minigrad (its version), the standard
library.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

import minigrad
from alexnet import __version__
from alexnet.config import BOUNDS, PRECISIONS, Bounds, TrainConfig
from alexnet.model import ACTIVATIONS, CONFIGS

_DEFAULTS = TrainConfig()


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; "(default: X)" appended only where it tells the truth.

    Not for switches (nargs 0): --no-augment's default would read as "no augmentation by default". Not for
    None, which means "not given: decided by TrainConfig, the model or the data", nor where the help already
    states the default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _checked(bounds: Bounds, name: str) -> Callable[[str], Any]:
    """An argparse type: the text as an int or float, refused unless `bounds` allows it."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if bounds.whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {bounds.describe()}, got {text!r}") from None
        problem = bounds.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = name  # argparse names the type in some of its own messages
    return parse


def _setting(name: str) -> Callable[[str], Any]:
    """The argparse type of a TrainConfig setting."""
    return _checked(BOUNDS[name], name)


_count = _checked(Bounds(whole=True, low=1), "count")


def _command(sub: Any, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, 100),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  "),
        formatter_class=_HelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` parser. Each command's function is `args.func`."""
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever & Hinton 2012) on the minigrad engine: train, evaluate, inspect.",
        epilog="examples:\n  alexnet train\n  alexnet eval runs/alexnet-tiny-...\n  alexnet COMMAND --help",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"alexnet {__version__} (minigrad {minigrad.__version__})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_prepare, _add_eval, _add_predict, _add_plot, _add_summary, _add_gradcheck):
        add(sub)
    return parser


def _add_model_switches(p: argparse.ArgumentParser, model_default: str | None = "alexnet-tiny") -> None:
    """--model and the paper's switches, shared by train, summary and gradcheck."""
    p.add_argument(
        "--model",
        default=model_default,
        choices=sorted(CONFIGS),
        help=f"which network (default: {_DEFAULTS.model})",
    )
    p.add_argument("--no-lrn", dest="lrn", action="store_const", const=False, help="ablation: no LRN")
    p.add_argument(
        "--groups", type=_setting("groups"), help="channel groups of conv2/4/5 (paper: 2, the two-GPU split; 1 = none)"
    )
    p.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_const",
        const=False,
        help="ablation: 2x2 stride-2 pooling instead of overlapping 3x3 stride 2",
    )
    p.add_argument("--width", type=_setting("width"), help="multiply every layer's width (channels, fc units)")
    p.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        help="the unit after every conv and hidden fc layer (default: relu, the paper's; tanh: its Fig. 1 comparison)",
    )
    p.add_argument(
        "--dropout", type=_setting("dropout"), help="dropout probability of fc6 and fc7 (default: the model's)"
    )


_TRAIN_DESCRIPTION = (
    "Train with the paper's recipe: SGD with momentum 0.9 and weight decay 5e-4, learning rate divided by 10 "
    "when the validation error stops improving, and for colour data random crops, flips and PCA colour "
    "lighting (off for Fashion-MNIST by default: see --augment). Greyscale models use Fashion-MNIST: the full "
    "set when its IDX files are found (--data, $ALEXNET_FASHION_MNIST or /usr/share/datasets/fashion-mnist), "
    "else the subset bundled in the package. Colour models read a store written by `alexnet prepare` (--data "
    "OUT: memory-mapped, the fast way) or an image folder decoded as it is read (--data DIR with train/ and "
    "val/); background workers (--workers) make their batches. Each epoch writes metrics.jsonl and an atomic "
    "checkpoint to the run folder; Ctrl-C stops after "
    "the current batch and saves. Like every alexnet command it keeps freed memory for reuse "
    "(minigrad.keep_freed_memory); set MALLOC_TRIM_THRESHOLD_ or another glibc malloc variable to opt out."
)
_TRAIN_EXAMPLES = """
  alexnet train                                        the demo: alexnet-tiny on Fashion-MNIST, CPU
  alexnet train --epochs 10 --no-lrn --groups 1        ablate the paper's choices (also --no-overlap, --width)
  alexnet train --activation tanh --out runs/tanh      the paper's Fig. 1: ReLU against tanh
  alexnet train --model alexnet --data OUT             ImageNet, decoded once by: alexnet prepare DIR OUT
  alexnet train --model alexnet-small --data DIR       colour 64x64 from DIR/train/<class>/*.jpg and DIR/val/...
  alexnet train --device gpu --precision fp16          float16 compute, float32 master weights, on a GPU
  alexnet train --resume runs/alexnet-tiny-...         continue a stopped run exactly where it stopped
  alexnet train --resume RUN --epochs 30               train a run longer (config.json records it)
"""


def _add_train(sub: Any) -> None:
    t = _command(sub, "train", "train a model (default: alexnet-tiny on Fashion-MNIST, CPU)", _TRAIN_DESCRIPTION,
                 _TRAIN_EXAMPLES)  # fmt: skip
    _add_model_switches(t, model_default=None)
    t.add_argument(
        "--data",
        help="data folder (Fashion-MNIST IDX files, a store from `alexnet prepare`, or an image folder); 'bundled' "
        "forces the Fashion-MNIST subset in the package",
    )
    t.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    t.add_argument(
        "--epochs",
        type=_setting("epochs"),
        help="passes over the training set (default: 90 as in the paper; alexnet-tiny: ~165k images' worth, "
        "i.e. 3 epochs of the full Fashion-MNIST or 20 of the bundled subset)",
    )
    t.add_argument(
        "--batch-size", type=_setting("batch_size"), help=f"images per step (default: {_DEFAULTS.batch_size})"
    )
    _add_optimizer_options(t)
    t.add_argument(
        "--seed", type=_setting("seed"), help="seeds initialisation, data order, augmentation, dropout (default: 0)"
    )
    t.add_argument("--out", help="run folder (default: runs/MODEL-DATE-TIME)")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run from its checkpoint; it keeps the run's settings except --epochs, --device "
        "and --data (the same data, moved)",
    )
    t.add_argument("--init", choices=["paper", "he"], help="weight init (default: the model's own)")
    t.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (the default); tf32: fp32 with TF32 matrix products on a GPU (on the CPU the same as fp32); "
        "fp16: float16 compute with float32 master weights and dynamic loss scaling (skipped steps are counted "
        "in metrics.jsonl; slow on the CPU, where NumPy computes float16 without tensor cores)",
    )
    _add_data_options(t)
    t.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    t.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    t.set_defaults(func="train")


def _add_prepare(sub: Any) -> None:
    from alexnet.data.prepare import build_prepare_parser  # its own parser: also `python -m alexnet.data.prepare`

    build_prepare_parser(sub)  # sets func="prepare"


def _add_optimizer_options(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "--lr",
        type=_setting("lr"),
        help="initial learning rate (default: 0.01 as in the paper; 0.05 for alexnet-tiny's few-epoch runs)",
    )
    t.add_argument("--optimizer", choices=["sgd", "adam"], help="sgd is the paper's rule (default: sgd)")
    t.add_argument("--momentum", type=_setting("momentum"), help=f"SGD momentum (default: {_DEFAULTS.momentum})")
    t.add_argument(
        "--weight-decay",
        type=_setting("weight_decay"),
        help=f"weight decay, inside SGD's velocity (default: {_DEFAULTS.weight_decay})",
    )
    t.add_argument(
        "--patience",
        type=_setting("patience"),
        help=f"epochs without validation improvement before lr/10 (default: {_DEFAULTS.patience})",
    )
    t.add_argument(
        "--min-lr",
        type=_setting("min_lr"),
        help=f"never reduce the learning rate below this (default: {_DEFAULTS.min_lr})",
    )


def _add_data_options(t: argparse.ArgumentParser) -> None:
    aug = t.add_mutually_exclusive_group()
    aug.add_argument(
        "--augment",
        dest="augment",
        action="store_const",
        const=True,
        help="random crops, flips (and PCA lighting for colour) (default: on for colour image folders; off for "
        "Fashion-MNIST, where pad-and-crop slows learning)",
    )
    aug.add_argument("--no-augment", dest="augment", action="store_const", const=False, help="no augmentation")
    t.add_argument(
        "--val-size",
        type=_setting("val_size"),
        help="validation images held out (default: min(5000, N/10), at least 1)",
    )
    t.add_argument(
        "--max-train-images",
        type=_setting("max_train_images"),
        help="train on a random subset of this many images (quick runs)",
    )
    t.add_argument(
        "--workers",
        type=_setting("workers"),
        help="processes making the batches of a store or image folder (default: all cores but one; 0: none); "
        "the batches are the same for any number",
    )
    t.add_argument(
        "--mean",
        choices=["image", "channel"],
        help="colour data: subtract the training set's mean image (the paper's; the default) or its channel "
        "means, then divide by the channel stds; eval and predict do the same",
    )
    t.add_argument(
        "--ten-crop",
        action="store_const",
        const=True,
        help="final test with the paper's 10-crop averaging (4 corners + centre, and their mirrors; on images of "
        "the input size, e.g. Fashion-MNIST, that is the image and its mirror)",
    )


def _add_eval(sub: Any) -> None:
    e = _command(
        sub,
        "eval",
        "top-1/top-5 error of a checkpoint on the test set",
        "Score a trained run on its test set: the test split of the data it trained on (or --data: for colour "
        "models the val/ split of a prepared store or image folder), with its own normalisation, centre crop "
        "or the paper's 10 crops; top-1 and top-5 error. A run folder means its best epoch by "
        "validation error (best.npz); name RUN/checkpoint.npz for the last one.",
        """
  alexnet eval runs/alexnet-tiny-...                 the best epoch, centre crop
  alexnet eval runs/alexnet-tiny-... --ten-crop      the paper's 10-crop test
  alexnet eval runs/alexnet-tiny-.../checkpoint.npz  the last epoch instead of the best
  alexnet eval runs/alexnet-... --data OUT --ten-crop  ImageNet's validation images in a prepared store
""",
    )
    e.add_argument("checkpoint", metavar="RUN", help="a run folder or a checkpoint file")
    e.add_argument("--data", default=None, help="data folder (default: the one the run used)")
    e.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    e.add_argument("--batch-size", type=_count, default=256, help="images per forward pass")
    e.add_argument(
        "--ten-crop",
        action="store_true",
        help="average the softmax over 10 crops, as in the paper (on images of the input size: image and mirror)",
    )
    e.add_argument("--model", default=None, help="fail unless the checkpoint holds this model")
    e.add_argument(
        "--workers", type=_setting("workers"), default=None, help="processes making the batches of colour data"
    )
    e.set_defaults(func="eval")


def _add_predict(sub: Any) -> None:
    p = _command(
        sub,
        "predict",
        "top-5 classes of image files",
        "Classify image files with a trained run and list the most probable classes. Each file is converted "
        "to the model's input, and every conversion is noted: greyscale models (Fashion-MNIST) get the image "
        "in grey, scaled to fit with its aspect ratio kept and centred on black; Fashion-MNIST shows light "
        "objects on a dark background, so give --invert for a dark drawing on white. Colour models get the "
        "paper's resize and centre crop.",
        """
  alexnet predict runs/alexnet-tiny-... shirt.png
  alexnet predict runs/alexnet-tiny-... drawing.png --invert   a dark drawing on white paper
  alexnet predict runs/alexnet-tiny-... a.png b.png --top 3
""",
    )
    p.add_argument("checkpoint", metavar="RUN", help="a run folder or a checkpoint file (first: the run, then images)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    p.add_argument("--top", type=_count, default=5, help="how many classes to list")
    p.add_argument("--invert", action="store_true", help="invert the images first (dark on light -> light on dark)")
    p.set_defaults(func="predict")


def _add_plot(sub: Any) -> None:
    pl = _command(
        sub,
        "plot",
        "figures of a run: curves, conv1 kernels (Fig. 3), predictions and neighbours (Fig. 4)",
        "Draw a run's figures into RUN/plots: loss, error and learning rate per epoch; the conv1 kernels as "
        "the paper's Fig. 3 (one block per group); test images with their top-5 classes and their nearest "
        "neighbours among training images by fc7 features, as the paper's Fig. 4. `alexnet train` draws them "
        "at its end unless --no-plots.",
        """
  alexnet plot runs/alexnet-tiny-...               writes runs/alexnet-tiny-.../plots/*.png
""",
    )
    pl.add_argument("run_dir", metavar="RUN", help="a run folder")
    pl.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    pl.set_defaults(func="plot")


def _add_summary(sub: Any) -> None:
    s = _command(
        sub,
        "summary",
        "layer table: output shapes, parameters, FLOPs, memory",
        "Print a network's layers with their output shapes, parameters, forward FLOPs and activation memory "
        "per image. The default is the model `alexnet train` trains; --model alexnet is the paper's.",
        """
  alexnet summary                                  alexnet-tiny, the demo's model
  alexnet summary --model alexnet                  the paper's net: 60,965,224 parameters
  alexnet summary --model alexnet --groups 1       without the two-GPU split
""",
    )
    _add_model_switches(s)
    s.add_argument("--num-classes", type=_checked(Bounds(whole=True, low=2), "num_classes"), help="output classes")
    s.set_defaults(func="summary")


def _add_gradcheck(sub: Any) -> None:
    g = _command(
        sub,
        "gradcheck",
        "finite-difference check of a whole model's gradients (float64)",
        "Check every parameter tensor of the model (random directions for the large ones) and the input "
        "against central finite differences in float64. Prints one row per tensor, then PASS or FAIL.",
        """
  alexnet gradcheck                                alexnet-tiny
  alexnet gradcheck --width 0.25 --activation tanh
  alexnet gradcheck --device gpu
""",
    )
    _add_model_switches(g)
    g.add_argument("--num-classes", type=_checked(Bounds(whole=True, low=2), "num_classes"), help="output classes")
    g.add_argument("--device", default="cpu", help="cpu, gpu or cuda:N")
    g.add_argument("--seed", type=_setting("seed"), default=0, help="seeds the model, the input and the directions")
    g.add_argument("--max-elements", type=_count, default=64, help="tensors larger than this use random directions")
    g.set_defaults(func="gradcheck")
