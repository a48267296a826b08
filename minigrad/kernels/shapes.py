"""The geometry of a sliding window: (rows, columns) pairs and how many windows fit.

Convolution and pooling share it, and every layer of minigrad takes it from here: the kernels, the ops in
`minigrad.functional` and the layers in `minigrad.nn`. Imports nothing from minigrad.
"""

from __future__ import annotations

import numbers

IntPair = int | tuple[int, int]
Shape4 = tuple[int, int, int, int]  # (N, C, H, W)


def pair(value: IntPair, name: str) -> tuple[int, int]:
    """(rows, columns) of a window argument: an int means the same for both axes. Non-negative ints only."""
    values = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        ok = len(values) == 2 and all(isinstance(v, numbers.Integral) and v >= 0 for v in values)
    except TypeError:  # not a sequence
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an int or a pair of non-negative ints, got {value!r}")
    return int(values[0]), int(values[1])


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: (size + 2*padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def output_hw(
    op: str, hw: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """(OH, OW) of a window op on an input of spatial size hw = (H, W); a ValueError naming `op` when none fits."""
    oh, ow = (output_size(n, k, s, p) for n, k, s, p in zip(hw, kernel, stride, padding))
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel {tuple(kernel)} does not fit the input of spatial size {tuple(hw)} "
            f"padded by {tuple(padding)}: no output positions"
        )
    return oh, ow


def window_geometry(
    x_shape: tuple[int, ...], kh: int, kw: int, stride: IntPair, padding: IntPair, op: str = "window"
) -> tuple[int, int, int, int, int, int]:
    """Checks a window op's arguments for an (N, C, H, W) input; returns (sh, sw, ph, pw, OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"{op}: expected an (N, C, H, W) input, got shape {tuple(x_shape)}")
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(padding, "padding")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"{op}: need kernel >= 1 and stride >= 1; got {(kh, kw)} and {(sh, sw)}")
    oh, ow = output_hw(op, x_shape[2:], (kh, kw), (sh, sw), (ph, pw))
    return sh, sw, ph, pw, oh, ow


def check_nchw(op: str, shape: tuple[int, ...]) -> None:
    """A ValueError naming `op` unless `shape` is (N, C, H, W)."""
    if len(shape) != 4:
        raise ValueError(f"{op} expects x of shape (N, C, H, W), got shape {tuple(shape)}")
