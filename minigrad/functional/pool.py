"""Pooling: overlapping max-pool (the paper's 3x3 stride 2), average pool, adaptive average pool.

`MaxPool2d` keeps, for every window, the offset of its winner (`argmax`) and sends the window's gradient
to that one input. The work on raw arrays is in `minigrad/kernels/pooling.py`: read its generic version
first (a strided view of the windows, max and argmax over them); the Numba loop beside it gives the same
result on the CPU.

May import: `minigrad.tensor`, `minigrad.backend`, `minigrad.kernels`.
"""

from __future__ import annotations

from minigrad.backend import get_array_module
from minigrad.kernels import col2im, im2col, max_pool2d_backward, max_pool2d_forward
from minigrad.kernels.shapes import IntPair, check_nchw, output_hw, pair
from minigrad.tensor import Array, Function, Tensor


class MaxPool2d(Function):
    def forward(self, x: Array) -> Array:
        out, self.argmax = max_pool2d_forward(x, *self.kernel, self.stride, self.padding)
        self.x_shape = x.shape
        return out

    def backward(self, grad: Array) -> Array:
        return max_pool2d_backward(grad, self.argmax, self.x_shape, *self.kernel, self.stride, self.padding)


def max_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Max over KHxKW windows. x: (N, C, H, W) -> (N, C, OH, OW).

    Windows overlap when stride < kernel (the paper's 3x3 stride 2). Padding never wins.
    The gradient of each window goes to exactly one input: the first maximum in
    row-major window order (ties are broken towards the top-left).
    """
    kernel, stride, padding = _pool_arguments("max_pool2d", x, kernel_size, stride, padding)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"max_pool2d: padding {padding} must be at most half the kernel {kernel}")
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def _pool_arguments(
    name: str, x: Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding) as pairs, checked: stride defaults to the kernel, both at least 1."""
    check_nchw(name, x.shape)
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"{name}: kernel_size and stride must be >= 1, got {kernel} and {stride}")
    output_hw(name, x.shape[2:], kernel, stride, padding)
    return kernel, stride, padding


class AvgPool2d(Function):
    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        cols = im2col(x, *self.kernel, self.stride, self.padding)  # (C, KH, KW, N, OH, OW)
        self.x_shape, self.cols_shape = x.shape, cols.shape
        return xp.ascontiguousarray(cols.mean(axis=(1, 2)).transpose(1, 0, 2, 3))

    def backward(self, grad: Array) -> Array:
        xp = get_array_module(grad)
        kh, kw = self.kernel
        share = grad / grad.dtype.type(kh * kw)
        dcols = xp.broadcast_to(share.transpose(1, 0, 2, 3)[:, None, None], self.cols_shape)
        return col2im(xp.ascontiguousarray(dcols), self.x_shape, kh, kw, self.stride, self.padding)


def avg_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Mean over KHxKW windows. x: (N, C, H, W) -> (N, C, OH, OW). Padded zeros count in the mean."""
    kernel, stride, padding = _pool_arguments("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    # Cell i covers [floor(i*size/out), ceil((i+1)*size/out)): cells may overlap by one when size % out != 0.
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    def forward(self, x: Array) -> Array:
        xp = get_array_module(x)
        n, c, h, w = x.shape
        oh, ow = self.output_size
        self.x_shape = x.shape
        self.rows, self.cols = _adaptive_bounds(h, oh), _adaptive_bounds(w, ow)
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        # A loop over the (few) output cells; each cell is a vectorized mean over N and C.
        for i, (r0, r1) in enumerate(self.rows):
            for j, (c0, c1) in enumerate(self.cols):
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
        return y

    def backward(self, grad: Array) -> Array:
        xp = get_array_module(grad)
        dx = xp.zeros(self.x_shape, dtype=grad.dtype)
        for i, (r0, r1) in enumerate(self.rows):
            for j, (c0, c1) in enumerate(self.cols):
                share = grad[:, :, i, j] / grad.dtype.type((r1 - r0) * (c1 - c0))
                dx[:, :, r0:r1, c0:c1] += share[:, :, None, None]
        return dx


def adaptive_avg_pool2d(x: Tensor, output_size: IntPair) -> Tensor:
    """Average pool to a fixed output size, whatever the input size. x: (N, C, H, W) -> (N, C, OH, OW)."""
    check_nchw("adaptive_avg_pool2d", x.shape)
    size = pair(output_size, "output_size")
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {size}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)
