"""Train the network that lesson 9 looks at and save it in the package: alexnet/data/lesson_checkpoint.npz.

    python scripts/make_lesson_checkpoint.py [--out PATH] [--epochs 20] [--seed 0]

What it does, through the public API only:

1. `alexnet.train.train` trains alexnet-tiny (the paper's SGD with momentum 0.9 and weight decay 5e-4, the
   learning rate divided by 10 when the validation error stops improving) on the Fashion-MNIST subset bundled
   in the package (`data="bundled"`: 9,000 training images, of which 900 are held out for validation, and
   2,000 test images), so every machine trains on the same images. Seeded: on the CPU the same code gives the
   same weights.
2. `alexnet.train.load_model` reads back the epoch with the lowest validation error (best.npz).
3. The weights (float32), conv1's weights at initialisation (for the paper's Fig. 3) and, in the meta, the
   model's config, the class names, the normalisation, the training settings and the test scores are written
   with `alexnet.checkpoint.save_checkpoint`. `alexnet.train.load_model(path)` reads the file.

It takes about 3 minutes on 2 otherwise idle CPU cores (20 epochs of 8,100 images; many times longer on a
busy machine). The file is about 0.75 MB; the script
refuses to write one over 1 MB (the budget for data shipped in the package).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import minigrad  # noqa: E402  (first: it sets the BLAS thread settings before NumPy's BLAS loads)
from alexnet.checkpoint import save_checkpoint  # noqa: E402
from alexnet.model import build_model  # noqa: E402
from alexnet.train import TrainConfig, load_model, train  # noqa: E402

OUT = ROOT / "alexnet" / "data" / "lesson_checkpoint.npz"
MODEL = "alexnet-tiny"
MAX_BYTES = 1_000_000


def initial_conv1(seed: int) -> np.ndarray:
    """conv1's weights as `train` initialises them: the seed set, then the model built. (16, 1, 5, 5)."""
    minigrad.manual_seed(seed)
    return build_model(MODEL).conv_layers[0].weight.numpy().copy()


def make_checkpoint(out: Path, epochs: int, seed: int) -> Path:
    """Train, then write the best epoch's weights with what lesson 9 needs to `out`. Returns `out`."""
    with tempfile.TemporaryDirectory(prefix="lesson-checkpoint-") as tmp:
        cfg = TrainConfig(model=MODEL, data="bundled", epochs=epochs, seed=seed, out=str(Path(tmp) / "run"))
        result = train(cfg)
        model, meta = load_model(result.run_dir, expect_model=MODEL)
    init = initial_conv1(seed)
    arrays = {f"model/{name}": value.astype(np.float32) for name, value in model.state_dict().items()}
    arrays["init/conv1.weight"] = init.astype(np.float32)
    test = result.test
    lesson_meta = {
        "model_config": meta["model_config"],
        "train_config": {**meta["train_config"], "out": None},  # the run folder was temporary
        "class_names": meta["class_names"],
        "mean": meta["mean"],
        "std": meta["std"],
        "best_epoch": meta["state"]["epoch"] - 1,
        "test": None if test is None else dataclasses.asdict(test),
        "metrics": result.metrics,
        "made_by": "scripts/make_lesson_checkpoint.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, arrays, lesson_meta)
    size = out.stat().st_size
    if size > MAX_BYTES:
        out.unlink()
        raise SystemExit(f"{out} would be {size:,} bytes, over the {MAX_BYTES:,}-byte budget: use a narrower model")
    top1 = "n/a" if test is None else f"{1 - test.top1_error:.2%}"
    print(f"wrote {out} ({size:,} bytes): {model.num_parameters():,} parameters, test accuracy {top1}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train alexnet-tiny for lesson 9 and save its checkpoint.")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--epochs", type=int, default=20, help="epochs over the bundled training images (20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, order and dropout (0)")
    args = parser.parse_args(argv)
    make_checkpoint(args.out, args.epochs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
