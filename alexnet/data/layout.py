"""Where a data set's images are and which class each one is: ImageNet's layouts on disk.

- Training images: `SRC/train/<class>/<image>` (ImageNet: `train/n01440764/n01440764_10026.JPEG`).
- Validation images: `SRC/val/<class>/<image>` like training, or flat `SRC/val/<image>` plus a labels file,
  as ImageNet's official validation set comes: a CSV of `filename,class` rows (the class as a name such as
  `n01751748`, or as an index; `LOC_val_solution.csv`'s `ImageId,PredictionString` rows work too: the first
  word of the second column is the class, and file names may leave out the extension).
- Class indices: the position in the sorted class-folder names (sorted WordNet ids give ImageNet's usual
  0..999), or in a class index file: one name per line (the first word: `LOC_synset_mapping.txt` works), a
  JSON list of names, or a JSON object (`{"0": ["n01440764", "tench"], ...}` or `{"n01440764": 0, ...}`).

Only files ending in .jpeg, .jpg or .png (any case) count as images; hidden files and others are ignored and
counted. A class folder without images, or a split without any, is an error that names the folder.

May import: NumPy, the standard library, alexnet.data.image_folder (for IMAGE_EXTENSIONS).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.data.image_folder import IMAGE_EXTENSIONS

# Labels files looked for next to a flat validation folder when none is given.
DEFAULT_VAL_LABELS = ("val_labels.csv", "val.csv", "LOC_val_solution.csv")


class LayoutError(ValueError):
    """The source folder does not have a layout this module reads; the message says what is wrong where."""


@dataclass(frozen=True)
class SplitListing:
    """The images of one split in store order: `root / files[i]` has class `labels[i]`."""

    root: Path
    files: list[str]  # paths relative to root, with "/" separators
    labels: np.ndarray  # (N,) int64
    ignored: int  # files that are not images (other extensions, hidden files)

    def __len__(self) -> int:
        return len(self.files)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan(folder: Path) -> tuple[list[str], list[str], int]:
    """(sub-folder names, image file names, ignored file count) of one folder, each list sorted."""
    dirs, images, ignored = [], [], 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                if not entry.name.startswith("."):
                    dirs.append(entry.name)
            elif _is_image(entry.name):
                images.append(entry.name)
            else:
                ignored += 1
    return sorted(dirs), sorted(images), ignored


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names in index order from a class index file (see the module docstring for the formats)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            names = [str(name) for name in data]
        elif isinstance(data, dict) and all(str(k).isdigit() for k in data):
            # {"0": ["n01440764", "tench"], ...} or {"0": "n01440764", ...}
            by_index = {int(k): (v[0] if isinstance(v, list) else v) for k, v in data.items()}
            if sorted(by_index) != list(range(len(by_index))):
                raise LayoutError(f"{path}: the class indices are not 0..{len(by_index) - 1}")
            names = [str(by_index[i]) for i in range(len(by_index))]
        elif isinstance(data, dict):  # {"n01440764": 0, ...}
            names = [str(k) for k, _ in sorted(data.items(), key=lambda kv: int(kv[1]))]
        else:
            raise LayoutError(f"{path}: expected a JSON list of class names or an object mapping them")
    else:
        names = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise LayoutError(f"{path} lists no classes")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise LayoutError(f"{path} lists these classes more than once: {', '.join(duplicates[:5])}")
    return names


def find_classes(train_dir: Path, class_index: str | os.PathLike | None = None) -> list[str]:
    """The class names, in index order: from `class_index` when given, else the sorted folder names of train/."""
    folders, _, _ = _scan(train_dir)
    if not folders:
        raise LayoutError(f"{train_dir} has no class folders (expected {train_dir}/<class>/<image>.JPEG)")
    if class_index is None:
        return folders
    classes = read_class_index(class_index)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise LayoutError(
            f"{train_dir} has class folders that {class_index} does not list: {', '.join(unknown[:5])}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    return classes


def list_class_folders(split_dir: Path, classes: list[str]) -> SplitListing:
    """The images of `split_dir/<class>/*`, class by class in index order, file names sorted within a class.

    Every sub-folder must be a known class and hold at least one image; a class may lack a folder (a subset).
    """
    index = {name: i for i, name in enumerate(classes)}
    folders, _, ignored = _scan(split_dir)
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise LayoutError(f"{split_dir} has folders that are not training classes: {', '.join(unknown[:5])}")
    files: list[str] = []
    labels: list[int] = []
    for name in sorted(folders, key=index.__getitem__):
        sub_dirs, images, skipped = _scan(split_dir / name)
        ignored += skipped + len(sub_dirs)
        if not images:
            raise LayoutError(f"class folder {split_dir / name} has no images ({'/'.join(IMAGE_EXTENSIONS)})")
        files += [f"{name}/{image}" for image in images]
        labels += [index[name]] * len(images)
    if not files:
        raise LayoutError(f"{split_dir} holds no images")
    return SplitListing(split_dir, files, np.array(labels, dtype=np.int64), ignored)


def _class_of(text: str, index: dict[str, int], count: int) -> int | None:
    """The class index a labels-file cell names: a class name, an index, or a name as its first word."""
    text = text.strip()
    if text in index:
        return index[text]
    if text.isdigit() and int(text) < count:
        return int(text)
    first = text.split()[0] if text.split() else ""
    return index.get(first)


def read_labels_csv(path: Path, classes: list[str]) -> dict[str, int]:
    """`filename,class` rows -> {filename: class index}. A first row that names no class is a header."""
    index = {name: i for i, name in enumerate(classes)}
    labels: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise LayoutError(f"{path}:{line}: expected filename,class, got {','.join(row)!r}")
            label = _class_of(row[1], index, len(classes))
            if label is None:
                if line == 1:
                    continue  # a header such as "filename,class" or "ImageId,PredictionString"
                raise LayoutError(f"{path}:{line}: {row[1].strip()!r} is not one of the {len(classes)} classes")
            labels[row[0].strip()] = label
    if not labels:
        raise LayoutError(f"{path} has no filename,class rows")
    return labels


def list_flat_folder(split_dir: Path, labels_file: Path, classes: list[str]) -> SplitListing:
    """The images directly inside `split_dir`, sorted by name, labelled by `labels_file` (a CSV).

    Every image needs a row and every row an image; a row may name the file without its extension.
    """
    _, images, ignored = _scan(split_dir)
    if not images:
        raise LayoutError(f"{split_dir} holds no images")
    rows = read_labels_csv(labels_file, classes)
    labels: list[int] = []
    used: set[str] = set()
    for image in images:
        key = image if image in rows else os.path.splitext(image)[0]
        if key not in rows:
            raise LayoutError(f"{labels_file} has no row for {split_dir / image}")
        labels.append(rows[key])
        used.add(key)
    missing = sorted(set(rows) - used)
    if missing:
        raise LayoutError(
            f"{labels_file} lists {len(missing)} file(s) that are not in {split_dir}: {', '.join(missing[:5])}"
        )
    return SplitListing(split_dir, images, np.array(labels, dtype=np.int64), ignored)


def find_val_dir(src: Path) -> Path:
    """SRC/val, or SRC/test when there is no val/."""
    for name in ("val", "test"):
        if (src / name).is_dir():
            return src / name
    raise LayoutError(f"{src} has no val/ (or test/) folder next to train/")


def list_source(
    src: str | os.PathLike,
    class_index: str | os.PathLike | None = None,
    val_labels: str | os.PathLike | None = None,
) -> tuple[list[str], dict[str, SplitListing]]:
    """The classes and the listings of SRC's train and val splits.

    val/ with class folders is read like train/; a flat val/ needs a labels CSV: `val_labels`, else one of
    DEFAULT_VAL_LABELS next to val/ (in SRC).
    """
    src = Path(src)
    train_dir = src / "train"
    if not train_dir.is_dir():
        raise LayoutError(f"{src} has no train/ folder (expected {src}/train/<class>/<image>.JPEG)")
    classes = find_classes(train_dir, class_index)
    splits = {"train": list_class_folders(train_dir, classes)}
    val_dir = find_val_dir(src)
    sub_dirs, _, _ = _scan(val_dir)
    if sub_dirs and val_labels is None:
        splits["val"] = list_class_folders(val_dir, classes)
    else:
        labels_file = Path(val_labels) if val_labels is not None else None
        if labels_file is None:
            labels_file = next((src / n for n in DEFAULT_VAL_LABELS if (src / n).is_file()), None)
        if labels_file is None:
            raise LayoutError(
                f"{val_dir} holds images but no class folders: give a labels file (CSV rows filename,class), "
                f"e.g. {src / DEFAULT_VAL_LABELS[0]}"
            )
        splits["val"] = list_flat_folder(val_dir, labels_file, classes)
    return classes, splits


def fingerprint(classes: list[str], splits: dict[str, SplitListing], size: int) -> str:
    """A hash of what a preparation writes (classes, files, labels, size): equal hashes, equal stores."""
    h = hashlib.sha256(json.dumps({"classes": classes, "size": size}).encode())
    for name in sorted(splits):
        listing = splits[name]
        h.update(name.encode() + b"\0")
        h.update("\n".join(listing.files).encode("utf-8", "surrogateescape") + b"\0")
        h.update(np.ascontiguousarray(listing.labels, dtype="<i8").tobytes())
    return h.hexdigest()
