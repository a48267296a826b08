"""Images in ImageNet's folder layout: `load_image` (the paper's resize and centre crop) and `ImageFolder`.

May import: NumPy, Pillow, the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def load_image(path: str | os.PathLike, resize: int = 256) -> np.ndarray:
    """Read an image the paper's way: RGB, shorter side scaled to `resize`, centre `resize` x `resize` crop.

    Returns (3, resize, resize) uint8. A file Pillow cannot decode is a ValueError that names it.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")  # greyscale, palette, RGBA and CMYK files all become RGB
            w, h = img.size
            scale = resize / min(w, h)
            # round() and max(): the shorter side becomes exactly `resize`, the longer never falls below it.
            new_w, new_h = max(resize, round(w * scale)), max(resize, round(h * scale))
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)  # Pillow antialiases when shrinking
            left, top = (new_w - resize) // 2, (new_h - resize) // 2
            img = img.crop((left, top, left + resize, top + resize))
            hwc = np.asarray(img, dtype=np.uint8)  # (H, W, 3): Pillow's layout
    except FileNotFoundError:
        raise
    except OSError as exc:  # not an image, truncated, unsupported or unreadable: one folder entry to fix
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))  # -> (3, H, W)


class ImageFolder:
    """Images in ImageNet's layout: `root/<class name>/<image>.JPEG` (also .jpg, .png).

    Class names are the sub-directory names, sorted; a class's index is its
    position in that order (for ImageNet, sorted WordNet ids give the usual
    0..999 numbering). `dataset[i]` loads one image as (3, resize, resize) uint8.
    """

    def __init__(self, root: str | os.PathLike, resize: int = 256) -> None:
        self.root = Path(root)
        self.resize = resize
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.classes: list[str] = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-directories (expected root/<class>/<image>.JPEG)")
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = [
            (p, i)
            for i, name in enumerate(self.classes)
            for p in sorted((self.root / name).iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise ValueError(f"{self.root} contains no {'/'.join(IMAGE_EXTENSIONS)} images in its class directories")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return load_image(path, self.resize), label

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64, without loading any image."""
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Load every image: (N, 3, resize, resize) uint8 and (N,) int64 labels.

        For small folders only: 1000 images at 256x256 take 197 MB.
        """
        images = np.empty((len(self), 3, self.resize, self.resize), dtype=np.uint8)
        for i in range(len(self)):
            images[i] = self[i][0]
        return images, self.labels
