"""Figures for a training run and for the paper's Figs. 3 and 4 (matplotlib, PNG files).

Everything here takes plain NumPy arrays and Python lists, so a figure can be drawn from a
checkpoint or a `metrics.jsonl` file without importing `minigrad` or the model (`alexnet.figures`
draws the figures of a run folder with these functions). Each figure is
a `matplotlib.figure.Figure` drawn on its own Agg canvas: nothing touches pyplot's global
state, no window opens, and it works on a machine without a display. Every `plot_*` function
writes one PNG file (creating missing parent folders) and returns its path.

Contents:

* `plot_training_curves`: loss, top-1/top-5 error and learning rate per epoch.
* `kernel_grid_image`, `kernel_grid_shape`, `plot_kernel_grid`: the first conv layer's kernels
  as a grid of small images, like the paper's Fig. 3 (with `groups=2`, one block per GPU).
* `plot_predictions`: test images with bar charts of their top-k class probabilities
  (Fig. 4, left).
* `nearest_neighbours`, `plot_nearest_neighbours`: the training images whose feature vectors
  (the paper uses fc7) lie closest to those of query images (Fig. 4, right).

Images are channel-first like the rest of the project: one image is `(C, H, W)`, a batch
`(B, C, H, W)`, with C = 1 (grey) or C = 3 (RGB).

May import: matplotlib, NumPy, the standard library. Never minigrad or other `alexnet` modules.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "kernel_grid_image",
    "kernel_grid_shape",
    "nearest_neighbours",
    "plot_kernel_grid",
    "plot_nearest_neighbours",
    "plot_predictions",
    "plot_training_curves",
]

# Colours: training in blue, validation in orange; the true class in red (as in the paper).
_TRAIN_COLOUR = "tab:blue"
_VAL_COLOUR = "tab:orange"
_BAR_COLOUR = "#9ecae1"
_TRUE_BAR_COLOUR = "#fb6a4a"
_DROP_COLOUR = "0.6"


# ----------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure of `width` x `height` inches on its own Agg canvas (no pyplot, no window)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as a PNG to `path` (parent folders are created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight", facecolor="white")
    return out


def _minmax(a: np.ndarray) -> np.ndarray:
    """Rescale `a` (any shape) to [0, 1] by its own min and max; a constant array becomes 0.5."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if not hi > lo:  # constant (or NaN): nothing to stretch
        return np.full(a.shape, 0.5)
    return (a - lo) / (hi - lo)


def _display_image(image: np.ndarray) -> np.ndarray:
    """One channel-first image `(C, H, W)` as something `imshow` shows as-is, in [0, 1].

    uint8 images are divided by 255; float images are min-max rescaled per image (they are
    usually normalised network inputs, with negative values). Returns `(H, W)` for C = 1
    (show with a grey colour map), `(H, W, 3)` for C = 3, and the channel mean `(H, W)` for
    any other C.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected one image of shape (C, H, W), got shape {image.shape}")
    if image.dtype == np.uint8:
        unit = image.astype(np.float64) / 255.0
    else:
        unit = _minmax(image)
    if unit.shape[0] == 3:
        return np.transpose(unit, (1, 2, 0))
    if unit.shape[0] == 1:
        return unit[0]
    return unit.mean(axis=0)


def _show_image(ax: Any, image: np.ndarray) -> None:
    """Draw one `(C, H, W)` image on `ax` without ticks, crisp (nearest-neighbour) pixels."""
    shown = _display_image(image)
    if shown.ndim == 2:
        ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(shown, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- training curves


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when it is missing, None, non-numeric, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(metrics: Sequence[dict], key: str, epochs: list[float]) -> tuple[list[float], list[float]]:
    """(epochs, values) of the epochs whose dict holds a usable number under `key`."""
    xs, ys = [], []
    for epoch, row in zip(epochs, metrics):
        value = _number(row.get(key))
        if value is not None:
            xs.append(epoch)
            ys.append(value)
    return xs, ys


def _plot_series(ax: Any, xs: list[float], ys: list[float], **style: Any) -> bool:
    """Plot one curve; markers when there are few points, so that a single epoch shows as a dot."""
    if not xs:
        return False
    if len(xs) <= 40:
        style.setdefault("marker", "o")
        style.setdefault("markersize", 3.5)
    ax.plot(xs, ys, **style)
    return True


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")


def plot_training_curves(
    metrics: Sequence[dict],
    path: str | os.PathLike[str],
    title: str | None = None,
    errors_as_fraction: bool | None = None,
) -> Path:
    """Loss, top-1/top-5 error and learning rate against the epoch, as one PNG.

    Args:
        metrics: one dict per epoch, as the training loop writes to `metrics.jsonl`. Keys used:
            "epoch" (int, 1-based; the position in the list when missing), "train_loss",
            "val_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr" and
            "images_per_second". Any key may be missing or None in any row (and NaN is
            skipped): that curve just has fewer points, and a panel with no data says so.
        path: where to write the PNG.
        title: figure title; the default names the number of epochs and the median speed.
        errors_as_fraction: whether the error values are fractions in [0, 1] (plotted x 100)
            rather than percentages. None guesses: fractions when every error value is <= 1.

    The figure has two panels (loss; error in %) and a third, the learning rate on a log scale,
    when any row has "lr". Epochs where the learning rate dropped (the paper divides it by 10
    when the validation error stops improving) are marked by dotted lines in every panel.
    Returns the path written.
    """
    metrics = list(metrics)
    epochs = []
    for position, row in enumerate(metrics, start=1):
        epoch = _number(row.get("epoch"))
        epochs.append(epoch if epoch is not None else float(position))
    lr_x, lr_y = _series(metrics, "lr", epochs)
    lr_points = [(x, y) for x, y in zip(lr_x, lr_y) if y > 0]
    # Epochs at which the learning rate is lower than at the epoch before, and by which factor.
    drops = [(x1, y0 / y1) for (x0, y0), (x1, y1) in itertools.pairwise(lr_points) if y1 < y0 * (1 - 1e-9)]

    n_panels = 3 if lr_points else 2
    fig = _new_figure(4.6 * n_panels, 3.6)
    axes = fig.subplots(1, n_panels, squeeze=False, sharex=True)[0]
    _draw_loss_panel(axes[0], metrics, epochs)
    _draw_error_panel(axes[1], metrics, epochs, errors_as_fraction)
    if lr_points:
        _draw_lr_panel(axes[2], lr_points, drops)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        for x, _ in drops:
            ax.axvline(x - 0.5, color=_DROP_COLOUR, linestyle=":", linewidth=1)
        # Whole epochs only on the x axis (a single epoch would otherwise get ticks like 0.96).
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs and max(epochs) - min(epochs) < 4:  # a few epochs: half an epoch of margin each side
        axes[0].set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.suptitle(title if title is not None else _default_title(metrics, epochs))
    fig.tight_layout()
    return _save(fig, path)


def _default_title(metrics: list[dict], epochs: list[float]) -> str:
    """ "N epochs", and the median speed when the metrics have one."""
    speeds = _series(metrics, "images_per_second", epochs)[1]
    title = f"{len(metrics)} epoch{'s' if len(metrics) != 1 else ''}"
    if speeds:
        title += f", median {np.median(speeds):.1f} images/s"
    return title


def _label_panel(ax: Any, title: str, ylabel: str, drew: bool) -> None:
    """Title and y label; a legend if any curve was drawn, else the no-data note."""
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if drew:
        ax.legend(fontsize=8)
    else:
        _no_data(ax)


def _draw_loss_panel(ax: Any, metrics: list[dict], epochs: list[float]) -> None:
    drew = _plot_series(ax, *_series(metrics, "train_loss", epochs), color=_TRAIN_COLOUR, label="train")
    drew |= _plot_series(ax, *_series(metrics, "val_loss", epochs), color=_VAL_COLOUR, label="validation")
    _label_panel(ax, "loss", "cross-entropy", drew)


_ERROR_STYLES = {
    "train_top1_error": {"color": _TRAIN_COLOUR, "linestyle": "-", "label": "train top-1"},
    "val_top1_error": {"color": _VAL_COLOUR, "linestyle": "-", "label": "validation top-1"},
    "val_top5_error": {"color": _VAL_COLOUR, "linestyle": "--", "label": "validation top-5"},
}


def _draw_error_panel(ax: Any, metrics: list[dict], epochs: list[float], as_fraction: bool | None) -> None:
    errors = {key: _series(metrics, key, epochs) for key in _ERROR_STYLES}
    if as_fraction is None:
        values = [v for _, ys in errors.values() for v in ys]
        as_fraction = bool(values) and max(values) <= 1.0
    scale = 100.0 if as_fraction else 1.0
    drew = False
    for key, (xs, ys) in errors.items():
        drew |= _plot_series(ax, xs, [y * scale for y in ys], **_ERROR_STYLES[key])
    _label_panel(ax, "error", "error (%)", drew)


def _draw_lr_panel(ax: Any, points: list[tuple[float, float]], drops: list[tuple[float, float]]) -> None:
    """The learning rate on a log scale, each drop labelled with its factor ("/10")."""
    # "steps-mid" puts each step halfway between two epochs, where the drop lines are drawn.
    _plot_series(ax, [x for x, _ in points], [y for _, y in points], color="tab:green", drawstyle="steps-mid")
    ax.set_yscale("log")
    ax.set_title("learning rate")
    ax.set_ylabel("learning rate (log scale)")
    for x, factor in drops:
        ax.annotate(
            f"/{factor:.3g}",
            xy=(x - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7,
            color="0.35",
        )


# ----------------------------------------------------------------------------- kernel grid (Fig. 3)


def kernel_grid_shape(n_kernels: int, groups: int = 1) -> tuple[int, int]:
    """(rows per group, columns) of the kernel grid, for `n_kernels` split into `groups` blocks.

    Each group's `n_kernels // groups` kernels fill a block of rows of the same width, and the
    blocks are stacked. The number of columns makes the whole grid close to square while
    leaving few empty cells (96 kernels: 10 x 10 with one group, 2 blocks of 5 x 10 with two).
    """
    if n_kernels < 1 or groups < 1 or n_kernels % groups:
        raise ValueError(f"cannot split {n_kernels} kernels into {groups} equal groups")
    per_group = n_kernels // groups
    best: tuple[float, int, int] | None = None
    for cols in range(1, per_group + 1):
        rows = math.ceil(per_group / cols)
        if rows * cols - per_group >= cols:  # a whole empty row: never better
            continue
        aspect = abs(math.log(cols / (rows * groups)))
        empty = (rows * cols - per_group) / per_group
        score = aspect + 0.5 * empty
        if best is None or score <= best[0] + 1e-12:  # ties: the wider grid
            best = (score, rows, cols)
    assert best is not None
    return best[1], best[2]


def _default_scale(kh: int, kw: int) -> int:
    """Upscaling so that a kernel is at least ~24 pixels wide (11x11 -> 3, 5x5 -> 5, 3x3 -> 8)."""
    return max(1, math.ceil(24 / max(kh, kw)))


def _kernel_grid(
    weights: np.ndarray, groups: int, scale: int | None, gap: int, group_gap: int | None
) -> tuple[np.ndarray, list[int], int]:
    """The grid image, the top row of each group's block, and the height of one block."""
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ValueError(f"expected conv weights of shape (O, C, KH, KW), got shape {weights.shape}")
    n_out, n_in, kh, kw = weights.shape
    rows, cols = kernel_grid_shape(n_out, groups)
    if scale is None:
        scale = _default_scale(kh, kw)
    if scale < 1 or gap < 0:
        raise ValueError(f"scale must be >= 1 and gap >= 0, got scale={scale}, gap={gap}")
    if group_gap is None:
        group_gap = max(4 * gap, 8)
    tile_h, tile_w = kh * scale, kw * scale
    block_h = rows * (tile_h + gap) - gap
    height = groups * block_h + (groups - 1) * group_gap
    width = cols * (tile_w + gap) - gap
    grid = np.ones((height, width, 3))  # white background: the gaps between kernels

    per_group = n_out // groups
    block_tops = [g * (block_h + group_gap) for g in range(groups)]
    for index in range(n_out):
        kernel = weights[index]
        if n_in == 3:
            tile = np.transpose(_minmax(kernel), (1, 2, 0))  # normalised over all three channels
        else:
            grey = kernel[0] if n_in == 1 else kernel.astype(np.float64).mean(axis=0)
            tile = np.repeat(_minmax(grey)[:, :, None], 3, axis=2)
        tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)  # nearest-neighbour upscaling
        group, within = divmod(index, per_group)
        row, col = divmod(within, cols)
        y0 = block_tops[group] + row * (tile_h + gap)
        x0 = col * (tile_w + gap)
        grid[y0 : y0 + tile_h, x0 : x0 + tile_w] = tile
    return grid, block_tops, block_h


def kernel_grid_image(
    weights: np.ndarray,
    groups: int = 1,
    scale: int | None = None,
    gap: int = 1,
    group_gap: int | None = None,
) -> np.ndarray:
    """The kernels of a conv layer laid out as one RGB image, shape `(H, W, 3)`, values in [0, 1].

    Args:
        weights: `(O, C, KH, KW)`, usually the first conv layer (the paper's conv1: 96 x 3 x 11 x 11).
        groups: number of blocks; kernel `i` goes to block `i // (O // groups)` (the paper's
            two GPUs: kernels 0..47 on top, 48..95 below). O must be divisible by it.
        scale: nearest-neighbour upscaling factor per kernel pixel (default: kernels >= ~24 px).
        gap: white pixels between neighbouring kernels.
        group_gap: white pixels between the blocks of two groups (default `max(4 * gap, 8)`).

    Each kernel is min-max normalised on its own (all of its channels together, so colours keep
    their balance); a constant kernel becomes mid-grey. C = 3 is shown in colour, C = 1 in grey,
    any other C as the grey channel mean. The background is white (1.0).

    Layout, with `rows, cols = kernel_grid_shape(O, groups)`, tile size `KH*scale x KW*scale`
    and `n = O // groups`: kernel `i` has group `g, j = divmod(i, n)`, cell `r, c = divmod(j, cols)`,
    and its top-left pixel at `y = g * (rows * (KH*scale + gap) - gap + group_gap) + r * (KH*scale + gap)`,
    `x = c * (KW*scale + gap)`.
    """
    return _kernel_grid(weights, groups, scale, gap, group_gap)[0]


def plot_kernel_grid(
    weights: np.ndarray,
    path: str | os.PathLike[str],
    groups: int = 1,
    title: str | None = "First-layer convolution kernels",
    scale: int | None = None,
) -> Path:
    """Draw `kernel_grid_image(weights, groups)` (see there; weights `(O, C, KH, KW)`) to a PNG.

    With `groups > 1` a grey line separates the blocks and each block is labelled "group 1",
    "group 2", ... on its left: in the paper the kernels of one GPU came out largely
    colour-agnostic and those of the other colour-specific. Returns the path written.
    """
    weights = np.asarray(weights)
    grid, block_tops, block_h = _kernel_grid(weights, groups, scale, gap=1, group_gap=None)
    height, width = grid.shape[:2]
    zoom = max(1, round(720 / width))  # whole screen pixels per grid pixel keeps the gaps even
    dpi = 100
    fig = _new_figure(width * zoom / dpi, height * zoom / dpi, dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if groups > 1:
        for g, top in enumerate(block_tops):
            ax.text(
                -0.01 * width - 2,
                top + block_h / 2,
                f"group {g + 1}",
                rotation=90,
                ha="right",
                va="center",
                fontsize=11,
            )
            if g > 0:
                middle = (block_tops[g - 1] + block_h + top) / 2 - 0.5
                ax.axhline(middle, color="0.45", linewidth=1.5)
    if title:
        o, c, kh, kw = weights.shape
        ax.set_title(f"{title}\n{o} kernels of {c} x {kh} x {kw}", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------- predictions (Fig. 4, left)


def plot_predictions(
    images: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    labels: np.ndarray | None = None,
    k: int = 5,
    max_images: int = 8,
) -> Path:
    """Test images, each above a bar chart of its `k` most probable classes (paper's Fig. 4, left).

    Args:
        images: `(B, C, H, W)`, uint8 (0..255) or float (rescaled per image to [0, 1] for
            display); C = 1 is drawn in grey, C = 3 in colour.
        probs: `(B, num_classes)` class probabilities (e.g. the softmax averaged over 10 crops).
        class_names: `num_classes` names, in class-index order.
        path: where to write the PNG.
        labels: optional `(B,)` true class indices: each image's title names its true class and
            the bar of the true class (when it is among the top k) is drawn in red.
        k: number of bars per image (at most num_classes).
        max_images: only the first `max_images` images are drawn (the paper shows 8).

    Returns the path written.
    """
    images = np.asarray(images)
    probs = np.asarray(probs, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got shape {images.shape}")
    if probs.ndim != 2 or probs.shape[0] != images.shape[0]:
        raise ValueError(f"expected probs of shape ({images.shape[0]}, num_classes), got shape {probs.shape}")
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {probs.shape[1]} classes")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    n = min(images.shape[0], max_images)
    if n < 1:
        raise ValueError("no images to plot")
    k = max(1, min(k, probs.shape[1]))

    fig = _new_figure(2.0 * n, 2.0 + 0.3 * k + 0.4)
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": [2.0, 0.3 * k]})
    for i in range(n):
        image_ax, bar_ax = axes[0, i], axes[1, i]
        _show_image(image_ax, images[i])
        true = int(labels[i]) if labels is not None else None
        if true is not None:
            image_ax.set_title(str(class_names[true]), fontsize=9)

        # Most probable first (ties: lower class index first), drawn from the top down.
        top = np.argsort(-probs[i], kind="stable")[:k]
        colours = [_TRUE_BAR_COLOUR if c == true else _BAR_COLOUR for c in top]
        positions = np.arange(k)
        bar_ax.barh(positions, probs[i, top], color=colours, height=0.8)
        for position, c in zip(positions, top):
            bar_ax.text(0.02, position, str(class_names[c]), va="center", ha="left", fontsize=7, clip_on=True)
        bar_ax.set_xlim(0.0, 1.0)
        bar_ax.set_ylim(k - 0.5, -0.5)
        bar_ax.set_yticks([])
        bar_ax.set_xticks([0.0, 0.5, 1.0])
        bar_ax.tick_params(axis="x", labelsize=7)
        for side in ("top", "right"):
            bar_ax.spines[side].set_visible(False)
    fig.suptitle(f"top-{k} predictions" + (" (true class in red)" if labels is not None else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- nearest neighbours (Fig. 4, right)


def nearest_neighbours(features_query: np.ndarray, features_bank: np.ndarray, k: int) -> np.ndarray:
    """Indices `(Q, k)` of the `k` rows of `features_bank` `(M, D)` closest to each query `(Q, D)`.

    Euclidean distance, nearest first (ties: lower index first). Nothing is excluded: a query
    that is also in the bank finds itself at distance 0. The squared distances come from
    `||a||^2 - 2 a.b + ||b||^2` (one matrix product, no `(Q, M, D)` array), in float32 for
    float32 features and float64 otherwise.
    """
    query = np.asarray(features_query)
    bank = np.asarray(features_bank)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"expected (Q, D) and (M, D) features, got shapes {query.shape} and {bank.shape}")
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be between 1 and the bank size {bank.shape[0]}, got {k}")
    dtype = np.result_type(query.dtype, bank.dtype, np.float32)
    query = query.astype(dtype, copy=False)
    bank = bank.astype(dtype, copy=False)
    squared = (
        np.einsum("qd,qd->q", query, query)[:, None] - 2.0 * (query @ bank.T) + np.einsum("md,md->m", bank, bank)[None]
    )
    np.maximum(squared, 0.0, out=squared)  # rounding can leave tiny negatives
    return np.argsort(squared, axis=1, kind="stable")[:, :k].astype(np.int64)


def plot_nearest_neighbours(
    query_images: np.ndarray,
    neighbour_images: np.ndarray,
    path: str | os.PathLike[str],
    title: str | None = "Nearest neighbours by feature vector",
) -> Path:
    """A grid with one row per query: the query image, then its neighbours (paper's Fig. 4, right).

    Args:
        query_images: `(Q, C, H, W)`.
        neighbour_images: `(Q, K, C, H, W)`, each query's K neighbours, nearest first (e.g.
            `bank_images[nearest_neighbours(query_features, bank_features, K)]`).
        path: where to write the PNG.
        title: figure title (None for none).

    uint8 images are shown as they are, float images rescaled per image to [0, 1]; C = 1 in
    grey, C = 3 in colour. The query column is framed in red. Returns the path written.
    """
    query_images = np.asarray(query_images)
    neighbour_images = np.asarray(neighbour_images)
    if query_images.ndim != 4:
        raise ValueError(f"expected query images of shape (Q, C, H, W), got shape {query_images.shape}")
    if neighbour_images.ndim != 5 or neighbour_images.shape[0] != query_images.shape[0]:
        raise ValueError(
            f"expected neighbour images of shape ({query_images.shape[0]}, K, C, H, W), "
            f"got shape {neighbour_images.shape}"
        )
    n_query, n_neighbours = neighbour_images.shape[:2]
    if n_query < 1:
        raise ValueError("no query images to plot")
    cols = 1 + n_neighbours
    fig = _new_figure(1.3 * cols + 0.2, 1.3 * n_query + 0.5)
    axes = fig.subplots(n_query, cols, squeeze=False)
    for q in range(n_query):
        _show_image(axes[q, 0], query_images[q])
        for spine in axes[q, 0].spines.values():
            spine.set_color(_TRUE_BAR_COLOUR)
            spine.set_linewidth(2.5)
        for j in range(n_neighbours):
            _show_image(axes[q, 1 + j], neighbour_images[q, j])
            for spine in axes[q, 1 + j].spines.values():
                spine.set_visible(False)
    axes[0, 0].set_title("query", fontsize=9)
    for j in range(n_neighbours):
        axes[0, 1 + j].set_title(f"{j + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
