"""Decode one image file the paper's way, fast: RGB, shorter side scaled to `size`, the centre `size` x `size`.

This is `alexnet.data.image_folder.load_image` (the plain version a learner reads first) with two shortcuts
that `prepare` and the raw-folder loader need on ImageNet's 1.3 million photos:

- JPEG draft mode: libjpeg can decode at 1/2, 1/4 or 1/8 scale directly from the compressed data (it drops
  high-frequency coefficients instead of computing pixels that the resize would average away). Draft mode
  picks the smallest of those scales that keeps the image at least as large as the final resize needs, so a
  big photo costs a fraction of a full decode; photos already near the target size decode at full scale.
- Resizing only the centre square: Pillow's `resize(..., box=...)` resamples the part of the image the centre
  crop keeps, straight to `size` x `size`, instead of scaling the whole image and then cutting it.

The result differs from `load_image` by the rounding of the two paths (and, after a draft decode, by libjpeg's
scaling), not in what it shows: `tests/test_prepare.py` checks the two agree closely.

May import: NumPy, Pillow, the standard library.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def decode_image(path: str | os.PathLike, size: int = 256) -> np.ndarray:
    """RGB (any mode converted: greyscale, CMYK, palette, RGBA), shorter side to `size`, centre crop.

    Returns (3, size, size) uint8. A file Pillow cannot decode (not an image, truncated, unsupported) is a
    ValueError that names it; a missing file is FileNotFoundError.
    """
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                w, h = img.size
                scale = size / min(w, h)
                # Asks for at least the size the resize needs; draft keeps both sides >= the request.
                img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # Pillow wants palette transparency expanded before dropping it
            if img.mode != "RGB":
                img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)  # the centre square, in this (possibly draft-reduced) image's pixels
            left, top = (w - side) / 2, (h - side) / 2
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
            # One band at a time gives (size, size) planes: channel-first without a strided transpose.
            return np.stack([np.asarray(band, dtype=np.uint8) for band in img.split()])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # OSError covers truncated files and non-images (UnidentifiedImageError); some of Pillow's format
        # plugins report a malformed header as SyntaxError or ValueError.
        raise ValueError(f"cannot read image {path}: {exc}") from exc
