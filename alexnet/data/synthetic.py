"""Generated images in ImageNet's folder layout, for tests, benchmarks and trying the full-size pipeline
without ImageNet (none ships anywhere here).

May import: NumPy, Pillow, the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def make_fake_imagefolder(
    root: str | os.PathLike,
    classes: int | Sequence[str] = 4,
    per_class: int = 8,
    size: int | tuple[int, int] | Sequence[tuple[int, int]] = (320, 240),
    seed: int = 0,
    ext: str = ".JPEG",
) -> Path:
    """Write random images in ImageNet's layout, `root/<class>/<class>_<i>.JPEG`; returns `root`.

    Generated data for tests and benchmarks of the full-size pipeline (no real
    ImageNet is available here). Each class has its own random base colour, with
    a smooth gradient and noise on top, so the classes are learnable but not trivial.

    classes: a number of classes (named like WordNet ids, n00000000, n00000001, ...) or the names.
    size: (width, height) of every image, an int for squares, or a list of (width, height)
        used in turn, to get several aspect ratios.
    ext: ".JPEG", ".jpg" (JPEG, quality 90) or ".png".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"n{i:08d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    if isinstance(size, int | np.integer):
        sizes = [(int(size), int(size))]
    elif len(size) == 2 and all(isinstance(s, int | np.integer) for s in size):
        sizes = [(int(size[0]), int(size[1]))]
    else:
        sizes = [(int(w), int(h)) for w, h in size]
    fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}[ext.lower()]
    k = 0
    for name in names:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(40, 215, size=3)  # this class's colour
        for i in range(per_class):
            w, h = sizes[k % len(sizes)]
            k += 1
            # A random-direction gradient (per image) plus noise around the class colour.
            gy, gx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
            direction = rng.normal(size=2)
            ramp = (direction[0] * gy + direction[1] * gx)[..., None] * 25.0
            pixels = base + ramp + rng.normal(0.0, 20.0, size=(h, w, 3))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            img.save(folder / f"{name}_{i:04d}{ext}", format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return root
