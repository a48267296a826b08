"""Convolution and pooling: im2col + GEMM, overlapping max-pool, average pools.

Layout is NCHW throughout. `im2col` turns every receptive field into a column:
cols (C, KH, KW, N, OH, OW), viewed per group as a (C/G*KH*KW, N*OH*OW) matrix.
A chunk of n images is then ONE matrix product per group, forward and backward:

    Y_g  = W_g @ cols_g          (O/G, K) @ (K, n*L)
    dW_g^T += cols_g @ dY_g.T    (K, n*L) @ (n*L, O/G)     (chunks in reverse: the last is still unfolded)
    dcols_g = W_g.T @ dY_g       (K, O/G) @ (O/G, n*L)     then col2im

The bias rides along as in Caffe: each group's columns get one more row, all ones, and W_g one more
column, b_g. Y_g then includes the bias, and the last row of dW_g^T is db_g: no separate pass over the
output for either.

On the GPU the chunk is the whole batch. On the CPU it is as many images as fit in CPU_COLS_BYTES
(16 MB): big enough for GEMMs near the BLAS peak (small per-image ones are not), small enough that
the columns stay in the cache between im2col and the GEMMs instead of going to memory and back.
The output and its gradient are transposed between (n, O, L) and (O, n, L), except where one image's
output plane alone makes a large GEMM (CPU_PER_IMAGE_MIN_PIXELS: AlexNet's conv1): there each image's
products read and write the NCHW arrays in place, and each core takes whole images with a one-thread BLAS
(`split_over_cores`) instead of every product being split across the cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigrad.backend import get_array_module, is_gpu_array
from minigrad.kernels import ChunkedIm2col, col2im, im2col, max_pool2d_backward, max_pool2d_forward
from minigrad.kernels.cpu_threads import cpu_gemm_threads, split_over_cores
from minigrad.tensor import Array, Function, Tensor

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, int | np.integer) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 0:
        raise ValueError(f"{name} must be an int or a pair of non-negative ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _output_size(name: str, size: tuple[int, int], kernel: tuple, stride: tuple, padding: tuple) -> tuple[int, int]:
    out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))
    if min(out) < 1:
        raise ValueError(
            f"{name}: input of spatial size {size} is too small for kernel {kernel} with padding {padding}"
        )
    return out  # type: ignore[return-value]


def _check_nchw(name: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects x of shape (N, C, H, W), got shape {x.shape}")


# How many bytes of columns one matrix product may cover. On the CPU the batch is unfolded a few images at a
# time into one reused buffer that stays in the cache: on a 2-core machine, conv1-conv5 ran 1.2-1.5x faster
# than unfolding the whole batch (hundreds of MB, written to memory, read back by every GEMM), and the
# columns need not be kept for the backward pass, which unfolds them again. The GPU has the bandwidth
# and the memory to do the whole batch in one product. Tests lower these to make small inputs chunk.
CPU_COLS_BYTES: int | None = 16 * 2**20
GPU_COLS_BYTES: int | None = None  # None: no limit


def _images_per_chunk(x: Array, bytes_per_image: int) -> int:
    limit = GPU_COLS_BYTES if is_gpu_array(x) else CPU_COLS_BYTES
    n = x.shape[0]
    return max(1, n) if limit is None else max(1, min(n, limit // bytes_per_image))  # at least 1: range() steps


# On the CPU, a layer whose output planes have at least this many pixels (OH*OW) multiplies image by image:
# each image's product is then a large GEMM by itself, and it reads and writes the NCHW arrays directly,
# without the two transposes of the chunk's output and gradient. AlexNet's conv1 (55x55 = 3,025 pixels),
# fwd+bwd at batch 32 on 2 cores: 93.6 -> 89.5 ms. Smaller planes lose: conv2 (27x27) 254 -> 261 ms,
# conv3 (13x13) 129 -> 165 ms, so they keep the chunk's products. Each core takes whole images (a chunk is a
# multiple of the core count): one-thread products side by side beat each product split over the cores
# (conv1 in benchmarks/layers.py: 90.5 -> 82 ms with chunks of 4 images, was 3; see cpu_threads.py).
CPU_PER_IMAGE_MIN_PIXELS = 2048


class Conv2d(Function):
    def _columns(self, unfold: ChunkedIm2col, n0: int, m: int, buffer: Array) -> Array:
        """Columns of images n0 .. n0+m-1 in the front of `buffer`, as (G, K/G [+ 1 row of ones], m, L)."""
        g, kg, rows = self.groups, self.group_rows, self.rows
        cg, (kh, kw), (oh, ow) = unfold.x.shape[1] // g, self.kernel_size, self.output_hw
        cols = buffer[: g * rows * m * oh * ow].reshape(g, rows, m * oh * ow)
        for gi in range(g):
            unfold(n0, m, gi * cg, (gi + 1) * cg, out=cols[gi, :kg].reshape(cg, kh, kw, m, oh, ow))
        if rows > kg:
            cols[:, kg] = 1  # the bias row
        return cols.reshape(g, rows, m, oh * ow)

    def forward(self, x: Array, w: Array, b: Array | None = None) -> Array:
        xp = get_array_module(x, w)
        n = x.shape[0]
        o, cg, kh, kw = w.shape
        g = self.groups
        og, kg = o // g, cg * kh * kw
        rows = kg + (b is not None)
        oh, ow = _output_size("conv2d", x.shape[2:], (kh, kw), self.stride, self.padding)
        length = oh * ow
        self.kernel_size, self.output_hw, self.group_rows, self.rows = (kh, kw), (oh, ow), kg, rows
        step = _images_per_chunk(x, g * rows * length * x.dtype.itemsize)
        self.per_image = not is_gpu_array(x) and length >= CPU_PER_IMAGE_MIN_PIXELS
        self.cores = cpu_gemm_threads() if self.per_image else 1
        if self.per_image and n:  # whole images per core (split_over_cores): chunks of a multiple of the cores
            step = min(n, -(-step // self.cores) * self.cores)  # rounded up: fewer sections (~0.1 ms each)
        wmat = w.reshape(g, og, kg)
        if b is not None:  # the bias is the last column of each group's weight matrix
            wmat = xp.concatenate([wmat, b.reshape(g, og, 1)], axis=2)
        unfold = ChunkedIm2col(x, kh, kw, self.stride, self.padding)
        out = xp.empty((n, o, length), dtype=x.dtype)
        cols_buffer = xp.empty(g * rows * step * length, dtype=x.dtype)
        y_buffer = None if self.per_image else xp.empty(o * step * length, dtype=x.dtype)
        cols = None  # stays None for an empty batch
        for n0 in range(0, n, step):
            m = min(step, n - n0)
            cols = self._columns(unfold, n0, m, cols_buffer)
            if self.per_image:

                def forward_images(lo: int, hi: int, n0: int = n0, cols: Array = cols) -> None:
                    for i in range(lo, hi):
                        y = out[n0 + i].reshape(g, og, length)
                        for gi in range(g):
                            xp.matmul(wmat[gi], cols[gi, :, i], out=y[gi])

                split_over_cores(m, forward_images, self.cores)
            else:
                y = y_buffer[: o * m * length].reshape(g, og, m * length)
                for gi in range(g):
                    xp.matmul(wmat[gi], cols[gi].reshape(rows, m * length), out=y[gi])
                out[n0 : n0 + m] = y.reshape(o, m, length).transpose(1, 0, 2)  # (O, m, L) -> (m, O, L)
        # dW needs the columns again. Keep the last chunk's (all of them when the batch is one chunk): the
        # backward pass goes through the chunks in reverse and starts with it; the others it unfolds again.
        needs_w = bool(self.inputs) and self.inputs[1].requires_grad
        self.cols, self.cols_buffer = (cols, cols_buffer) if needs_w else (None, None)
        self.unfold = unfold if needs_w and step < n else None
        self.x, self.w, self.wmat, self.step = x, w, wmat, step
        return out.reshape(n, o, oh, ow)

    def backward(self, grad: Array) -> tuple[Array | None, ...]:
        xp = get_array_module(grad)
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.inputs) == 3 and self.needs_input_grad[2]
        x_shape, w, step = self.x.shape, self.w, self.step
        n, c = x_shape[:2]
        o, _, kh, kw = w.shape
        g, kg, rows = self.groups, self.group_rows, self.rows
        og = o // g
        oh, ow = self.output_hw
        length = oh * ow
        w_t = self.wmat[:, :, :kg].transpose(0, 2, 1)  # (G, K/G, O/G), without the bias column
        grad = xp.ascontiguousarray(grad).reshape(n, o, length)
        # fewer cores if the BLAS threads were lowered since the forward pass
        cores = min(self.cores, cpu_gemm_threads()) if self.per_image else 1

        # dW is accumulated transposed, dW_g^T += cols_g @ dY_g^T: the long n*L axis is then the inner one
        # of the first operand, which ran 10-20% faster than dY_g @ cols_g^T on OpenBLAS. Its last row,
        # from the row of ones, is db.
        dw_t = xp.zeros((g, rows, og), dtype=grad.dtype) if need_w else None
        dw_part = xp.empty_like(dw_t) if need_w and not self.per_image else None
        dx = xp.empty(x_shape, dtype=grad.dtype) if need_x else None
        dcols_buffer = xp.empty(c * kh * kw * step * length, dtype=grad.dtype) if need_x else None
        gm_buffer = None if self.per_image else xp.empty(o * step * length, dtype=grad.dtype)
        cols_buffer, unfold = self.cols_buffer, self.unfold
        if need_w and cols_buffer is None:  # w did not need a gradient when the forward pass ran
            cols_buffer = xp.empty(g * rows * step * length, dtype=grad.dtype)
        last = (n - 1) // step * step  # the chunk whose columns the forward pass left in cols_buffer
        for n0 in range(last, -1, -step):
            m = min(step, n - n0)
            if self.per_image:  # each image's gradient (O, L) read in place: (G, O/G, L) per image
                images = [grad[n0 + i].reshape(g, og, length) for i in range(m)]
            else:  # (m, O, L) -> (O, m, L) = (G, O/G, m*L), matching the columns' layout
                gm = gm_buffer[: o * m * length].reshape(o, m, length)
                gm[...] = grad[n0 : n0 + m].transpose(1, 0, 2)
                gm = gm.reshape(g, og, m * length)
            if need_w:
                if n0 == last and self.cols is not None:
                    cols = self.cols
                else:
                    if unfold is None:  # w did not need a gradient in the forward pass, which kept nothing
                        unfold = ChunkedIm2col(self.x, kh, kw, self.stride, self.padding)
                    cols = self._columns(unfold, n0, m, cols_buffer)
                if self.per_image:

                    def dw_of_images(lo: int, hi: int, cols: Array = cols, images: list = images) -> Array:
                        dw_images = xp.zeros((g, rows, og), dtype=grad.dtype)
                        product = xp.empty((rows, og), dtype=grad.dtype)
                        for i in range(lo, hi):
                            for gi in range(g):
                                xp.matmul(cols[gi, :, i], images[i][gi].T, out=product)
                                dw_images[gi] += product
                        return dw_images

                    for dw_images in split_over_cores(m, dw_of_images, cores):
                        dw_t += dw_images
                else:
                    for gi in range(g):
                        xp.matmul(cols[gi].reshape(rows, m * length), gm[gi].T, out=dw_part[gi])
                        dw_t[gi] += dw_part[gi]
            if need_x:  # the first layer needs no input gradient: skip the biggest GEMM and col2im
                dcols = dcols_buffer[: c * kh * kw * m * length].reshape(g, kg, m, length)
                if self.per_image:

                    def dcols_of_images(lo: int, hi: int, dcols: Array = dcols, images: list = images) -> None:
                        for i in range(lo, hi):
                            for gi in range(g):
                                xp.matmul(w_t[gi], images[i][gi], out=dcols[gi, :, i])

                    split_over_cores(m, dcols_of_images, cores)
                else:
                    for gi in range(g):
                        xp.matmul(w_t[gi], gm[gi], out=dcols[gi].reshape(kg, m * length))
                dcols = dcols.reshape(c, kh, kw, m, oh, ow)
                col2im(dcols, (m, *x_shape[1:]), kh, kw, self.stride, self.padding, out=dx[n0 : n0 + m])
        dw = db = None
        if need_w:
            dw = xp.ascontiguousarray(dw_t[:, :kg].transpose(0, 2, 1)).reshape(w.shape)
        if need_b:  # from the row of ones when dW was computed, else summed directly
            db = xp.ascontiguousarray(dw_t[:, kg]).reshape(o) if need_w else grad.sum(axis=(0, 2))
        if last > 0:  # cols_buffer now holds another chunk: a second backward (retain_graph) unfolds again
            self.cols = None

        if len(self.inputs) == 3:
            return dx, dw, db
        return dx, dw


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as in every framework).

    x: (N, C, H, W), weight: (O, C/groups, KH, KW), bias: (O,) -> (N, O, OH, OW)
    with OH = (H + 2*pad - KH) // stride + 1. `groups` splits the channels into
    independent halves (or more), as the paper's two-GPU AlexNet did for conv2, 4, 5.
    """
    _check_nchw("conv2d", x)
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (O, C/groups, KH, KW), got shape {weight.shape}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"conv2d: stride must be >= 1, got {stride}")
    o, cg, kh, kw = weight.shape
    c = x.shape[1]
    if groups < 1 or c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both input channels ({c}) and output channels ({o})")
    if cg * groups != c:
        raise ValueError(
            f"conv2d: weight {weight.shape} expects {cg * groups} input channels (C/groups={cg}, groups={groups}), "
            f"but x {x.shape} has {c}"
        )
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},), got {bias.shape}")
    dtypes = {x.dtype, weight.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        raise TypeError(f"conv2d: dtypes differ ({', '.join(sorted(map(str, dtypes)))}); convert with .astype(...)")
    _output_size("conv2d", x.shape[2:], (kh, kw), stride, padding)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*inputs, stride=stride, padding=padding, groups=groups)


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
    _check_nchw(name, x)
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"{name}: kernel_size and stride must be >= 1, got {kernel} and {stride}")
    _output_size(name, x.shape[2:], kernel, stride, padding)
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
    _check_nchw("adaptive_avg_pool2d", x)
    size = _pair(output_size, "output_size")
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {size}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)


def conv_output_shape(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: Any, padding: Any) -> tuple:
    """(N, O, OH, OW) that conv2d gives for these shapes (handy for summaries)."""
    kh, kw = weight_shape[2:]
    oh, ow = _output_size("conv2d", tuple(x_shape[2:]), (kh, kw), _pair(stride, "stride"), _pair(padding, "padding"))
    return (x_shape[0], weight_shape[0], oh, ow)
