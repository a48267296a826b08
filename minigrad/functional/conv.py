"""2-D convolution: im2col, one matrix product per group, + bias. A learner's first read.

Layout NCHW. `im2col` (minigrad/kernels/im2col.py) copies every receptive field into a column:
cols (C, KH, KW, N, OH, OW), which is, per group g of channels, a (K, N*L) matrix with K = C/G*KH*KW
rows and one column per image and output position (L = OH*OW). The whole batch is then ONE matrix
product per group, and the backward pass two more:

    forward    Y_g = W_g @ cols_g + b_g        (O/G, K) @ (K, N*L)
    backward   dW_g = dY_g @ cols_g^T          (O/G, N*L) @ (N*L, K)
               dcols_g = W_g^T @ dY_g          (K, O/G) @ (O/G, N*L),  then dx = col2im(dcols)
               db = dY summed over images and positions

`col2im` is im2col's adjoint: it adds every column entry back where im2col took it from.

On NumPy arrays `Conv2d` hands the same work to `minigrad.kernels.conv_cpu.ChunkedConv2d`, which is
tuned for the CPU's caches and cores (chunks of images, the bias inside the products, image by image
on all cores) and gives the same result; tests/test_layers_reference.py checks that the two agree.

May import: `minigrad.tensor`, `minigrad.backend`, `minigrad.kernels`.
"""

from __future__ import annotations

from minigrad.backend import get_array_module, is_gpu_array
from minigrad.kernels import ChunkedConv2d, col2im, im2col
from minigrad.kernels.dispatch import generic_forced
from minigrad.kernels.shapes import IntPair, check_nchw, output_hw, pair
from minigrad.tensor import Array, Function, Tensor


class Conv2d(Function):
    """y = conv2d(x, w, b) with stride, padding and groups (pairs; see `conv2d` for the shapes)."""

    def forward(self, x: Array, w: Array, b: Array | None = None) -> Array:
        self.has_bias, self.tuned = b is not None, None
        needs_w = bool(self.inputs) and self.inputs[1].requires_grad  # else no need to keep the columns
        if not is_gpu_array(x) and not generic_forced():  # NumPy: the CPU-tuned version of the code below
            self.tuned = ChunkedConv2d(self.stride, self.padding, self.groups)
            return self.tuned.forward(x, w, b, keep_columns=needs_w)
        xp = get_array_module(x, w)
        n, g = x.shape[0], self.groups
        o, cg, kh, kw = w.shape
        cols = im2col(x, kh, kw, self.stride, self.padding)  # (C, KH, KW, N, OH, OW)
        oh, ow = cols.shape[-2:]
        cols = cols.reshape(g, cg * kh * kw, n * oh * ow)  # (G, K, N*L): a group's rows hold its channels' windows
        w_g = w.reshape(g, o // g, cg * kh * kw)
        y = xp.empty((g, o // g, n * oh * ow), dtype=x.dtype)
        for i in range(g):  # one 2-D product per group (cuBLAS is slow on batched ones with a transposed operand)
            xp.matmul(w_g[i], cols[i], out=y[i])  # Y_g = W_g @ cols_g: (O/G, K) @ (K, N*L)
        y = y.reshape(o, n, oh, ow)
        if b is not None:
            y += b.reshape(o, 1, 1, 1)
        self.x_shape, self.w, self.cols = x.shape, w, cols if needs_w else None
        return xp.ascontiguousarray(y.transpose(1, 0, 2, 3))  # (O, N, OH, OW) -> (N, O, OH, OW)

    def backward(self, grad: Array) -> tuple[Array | None, ...]:
        need_x, need_w = self.needs_input_grad[:2]
        need_b = self.has_bias and self.needs_input_grad[2]
        if self.tuned is not None:
            dx, dw, db = self.tuned.backward(grad, need_x, need_w, need_b)
        else:
            xp = get_array_module(grad)
            (n, c, _, _), g, w = self.x_shape, self.groups, self.w
            o, _, kh, kw = w.shape
            oh, ow = grad.shape[2:]
            k = c // g * kh * kw  # rows of a group's columns
            dy = xp.ascontiguousarray(grad.transpose(1, 0, 2, 3)).reshape(g, o // g, n * oh * ow)  # like Y
            dx = dw = db = None
            if need_w:  # dW_g = dY_g @ cols_g^T
                dw = xp.empty(w.shape, dtype=w.dtype)
                for i, dw_g in enumerate(dw.reshape(g, o // g, k)):
                    xp.matmul(dy[i], self.cols[i].T, out=dw_g)
            if need_x:  # dcols_g = W_g^T @ dY_g; col2im adds each column back where im2col took it
                dcols = xp.empty((c, kh, kw, n, oh, ow), dtype=w.dtype)
                for i, dcols_g in enumerate(dcols.reshape(g, k, n * oh * ow)):
                    xp.matmul(w.reshape(g, o // g, k)[i].T, dy[i], out=dcols_g)
                dx = col2im(dcols, self.x_shape, kh, kw, self.stride, self.padding)
            if need_b:  # b[o] is added at every image and position
                db = grad.sum(axis=(0, 2, 3))
        return (dx, dw, db) if self.has_bias else (dx, dw)


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
    check_nchw("conv2d", x.shape)
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (O, C/groups, KH, KW), got shape {weight.shape}")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
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
    output_hw("conv2d", x.shape[2:], (kh, kw), stride, padding)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*inputs, stride=stride, padding=padding, groups=groups)
