# %% [markdown]
# # Lesson 3: Convolution as im2col + GEMM, and its backward pass
#
# Five of AlexNet's eight layers are convolutions, and they take nearly all of its arithmetic. This lesson
# turns a convolution into one matrix product (im2col + GEMM), then derives its backward pass: two more
# products and `col2im`, the adjoint of im2col; the input gradient turns out to be a correlation with the
# **flipped** kernel. You then write the backward pass with plain loops and check it against `F.conv2d`.
#
# **Goals**
#
# 1. the definition (a sliding dot product) and the output size formula;
# 2. im2col: every window becomes a column, and the whole batch is one matrix product;
# 3. the backward pass: `dW = dY cols^T`, `dcols = W^T dY`, `dx = col2im(dcols)`; why col2im is the
#    transpose of im2col; why `dx` is a correlation with the flipped kernel;
# 4. write `conv_backward_naive` and match `F.conv2d`'s backward pass;
# 5. groups: the paper's two-GPU split.

# %%
import matplotlib.pyplot as plt
import numpy as np
from lesson_checks import lesson03, report_runtime, start_clock

import minigrad as mg
import minigrad.functional as F
from alexnet.data import CLASS_NAMES, load_fashion_mnist_subset
from minigrad.kernels import col2im, im2col, output_size

start_clock()
mg.manual_seed(0)

# %% [markdown]
# ## 1. A convolution is a sliding dot product
#
# A convolution layer (strictly a cross-correlation, as in every framework) slides each of its O kernels of
# size C x KH x KW over the image; at each position it takes the dot product of the kernel with the window
# under it, over all C input channels, and adds the kernel's bias. Layout is NCHW: `x` is (N, C, H, W) and the
# weights are (O, C, KH, KW). Along one axis there are
#
# `OH = (H + 2 * pad - KH) // stride + 1`
#
# window positions. For the paper's conv1 (227 pixels, 11x11 kernels, stride 4) that is 55; for conv2 (27
# pixels, 5x5, padding 2) 27. The definition, as four loops:

# %%
print("conv1:", output_size(227, 11, 4, 0), "| conv2:", output_size(27, 5, 1, 2))
assert output_size(227, 11, 4, 0) == 55 and output_size(27, 5, 1, 2) == 27


def conv_forward_naive(x, w, b, stride=1, pad=0):
    """out[n, o, i, j] = b[o] + sum over (c, p, q) of w[o, c, p, q] * xpad[n, c, i*stride + p, j*stride + q]."""
    n_img, _, height, width = x.shape
    n_out, _, kh, kw = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = output_size(height, kh, stride, pad), output_size(width, kw, stride, pad)
    out = np.zeros((n_img, n_out, oh, ow), dtype=x.dtype)
    for n in range(n_img):
        for o in range(n_out):
            for i in range(oh):
                for j in range(ow):
                    window = xpad[n, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    out[n, o, i, j] = (window * w[o]).sum() + b[o]
    return out


xs = mg.randn((2, 3, 7, 7))
ws = mg.randn((4, 3, 3, 3))
bs = mg.randn((4,))
fast = F.conv2d(xs, ws, bs, stride=2, padding=1).numpy()
slow = conv_forward_naive(xs.numpy(), ws.numpy(), bs.numpy(), stride=2, pad=1)
print("output shape", fast.shape, "| largest difference to the loops", np.abs(fast - slow).max())
np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)

# %% [markdown]
# ## 2. im2col: every window becomes a column
#
# Looping over positions in Python is far too slow (lesson 4 measures how slow). Instead `im2col` copies every
# window into a column of a matrix; then the whole convolution is **one** matrix product (a GEMM), which BLAS
# runs near the machine's peak. A 4x4 image holding 0..15 and a 3x3 kernel have 2x2 window positions: 4
# columns of 9 entries. `minigrad` lays the columns out as (C, KH, KW, N, OH, OW): entry `cols[c, i, j, n, p, q]`
# is the pixel `xpad[n, c, p*stride + i, q*stride + j]`.

# %%
x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
cols = im2col(x, 3, 3, stride=1, padding=0)
print("cols shape (C, KH, KW, N, OH, OW):", cols.shape)
print(cols.reshape(9, 4))  # rows: kernel offsets (c, i, j); columns: window positions (n, p, q)
np.testing.assert_array_equal(cols.reshape(9, 4)[:, 0], [0, 1, 2, 4, 5, 6, 8, 9, 10])  # the top-left window

# %% [markdown]
# Rows are indexed by (c, i, j), exactly the order of `w.reshape(O, C*KH*KW)`, and columns by (n, p, q),
# with the batch **inside** the columns. So the whole batch is one product
#
# `Y (O, N*OH*OW) = W (O, C*KH*KW) @ cols (C*KH*KW, N*OH*OW)`,
#
# plus the bias on each row, and one reorder of Y from (O, N, OH, OW) to (N, O, OH, OW):

# %%
x2 = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
w2 = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
b2 = np.zeros(4, dtype=np.float32)
cols2 = im2col(x2, 3, 3, stride=1, padding=1)  # (3, 3, 3, 2, 6, 6)
y_gemm = (w2.reshape(4, -1) @ cols2.reshape(27, -1)).reshape(4, 2, 6, 6).transpose(1, 0, 2, 3)
y_conv = F.conv2d(mg.tensor(x2), mg.tensor(w2), padding=1).numpy()
np.testing.assert_allclose(y_gemm, y_conv, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(y_gemm, conv_forward_naive(x2, w2, b2, pad=1), rtol=1e-4, atol=1e-4)
print("one GEMM == F.conv2d == the loops; the product is", w2.reshape(4, -1).shape, "@", cols2.reshape(27, -1).shape)

# %% [markdown]
# **Two pictures of the im2col matrix.** im2col is a *linear map*: every column entry is a copy of one input
# pixel (or a 0 from the padding). So it is a matrix `M` of zeros and ones, one row per column entry and one
# column per input pixel, with a single 1 per row. Left: `M` for the 4x4 image above with padding 1 (144 rows:
# 9 kernel offsets x 16 positions). Right: im2col of a real 28x28 Fashion-MNIST image with a 3x3 kernel:
# 9 rows x 676 columns (one per output pixel); read along a row it is the image flattened row after row, so
# each of the nine rows is the image shifted by one kernel offset. A convolution is a weighted sum of these
# shifted copies, with the nine kernel weights as coefficients.

# %%
pixels = 16
M = np.stack([im2col(np.eye(pixels)[k].reshape(1, 1, 4, 4), 3, 3, 1, 1).reshape(-1) for k in range(pixels)], 1)
print("M:", M.shape, "| ones per row:", sorted({int(v) for v in M.sum(axis=1)}))
assert set(M.sum(axis=1)) == {0.0, 1.0}  # a 0 row: an entry that came from the padding

data = load_fashion_mnist_subset()
img = data.train.images[:1].astype(np.float32) / 255  # (1, 1, 28, 28)
img_cols = im2col(img, 3, 3)  # (1, 3, 3, 1, 26, 26)
assert img_cols.reshape(9, -1).shape == (9, 676)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), gridspec_kw={"width_ratios": [0.5, 1, 3.2]})
axes[0].imshow(M, cmap="Greys", aspect="auto", interpolation="nearest")
axes[0].set(title="M: im2col as a 0/1 matrix", xlabel="input pixel (16)", ylabel="column entry (144)")
axes[1].imshow(img[0, 0], cmap="gray")
axes[1].set_title(f"{CLASS_NAMES[data.train.labels[0]]} (28x28)")
axes[1].set_axis_off()
axes[2].imshow(img_cols.reshape(9, -1), cmap="gray", aspect="auto", interpolation="nearest")
axes[2].set(title="its im2col: 9 kernel offsets x 676 output pixels", ylabel="kernel offset", xticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The backward pass, derived
#
# Write the forward pass as matrices: `Y = W cols + b`, with `Y` (O, N*L), `W` (O, K), `cols` (K, N*L), where
# `K = C*KH*KW` and `L = OH*OW`. Given `dY = dL/dY`, this is lesson 2's linear layer with the roles of batch and
# features swapped:
#
# - **dW = dY cols^T** (O, N*L) @ (N*L, K), reshaped to (O, C, KH, KW);
# - **db = dY summed** over images and positions: `b[o]` was added at every one of them;
# - **dcols = W^T dY** (K, O) @ (O, N*L): the gradient of every column entry.
#
# And then `dx`. Each column entry was a copy of one pixel, and a pixel copied several times (windows overlap)
# gets the **sum** of its copies' gradients: `dx = M^T dcols` with the 0/1 matrix `M` of section 2. Adding each
# column entry back onto the pixel it came from, and dropping those that came from the padding, is `col2im`.
# It is the **adjoint** (transpose) of im2col: for every `x` and every `c`, `<im2col(x), c> = <x, col2im(c)>`.

# %%
rng = np.random.default_rng(1)
xa = rng.standard_normal((2, 3, 7, 7))
ca = rng.standard_normal(im2col(xa, 3, 3, 2, 1).shape)
lhs = (im2col(xa, 3, 3, 2, 1) * ca).sum()
rhs = (xa * col2im(ca, xa.shape, 3, 3, 2, 1)).sum()
print(f"<im2col(x), c> = {lhs:.12f}\n<x, col2im(c)> = {rhs:.12f}")
np.testing.assert_allclose(lhs, rhs, rtol=1e-12)

c16 = rng.standard_normal(M.shape[0])
np.testing.assert_allclose(col2im(c16.reshape(1, 3, 3, 1, 4, 4), (1, 1, 4, 4), 3, 3, 1, 1).reshape(-1), M.T @ c16)
print("col2im(c) == M^T c")

# %% [markdown]
# ## 4. dx is a correlation with the flipped kernel
#
# Follow one output gradient. If `dY` is 1 at a single position (o, p, q) and 0 elsewhere, then `dcols` is
# column (p, q) of `W^T`: kernel `o` itself, and col2im adds it back onto the window at (p, q). So the gradient
# **stamps the kernel, unflipped, onto its window**. For a general `dY` (stride 1) the stamps add up:
#
# `dx[c, y, x] = sum over o, p, q of dY[o, p, q] * w[o, c, y - p + pad, x - q + pad]`.
#
# Substitute `p' = y - p + pad`: the kernel index runs *against* the output index. Read as a correlation (the
# sliding dot product of section 1) it is a correlation of `dY`, zero-padded by `KH - 1 - pad`, with the kernel
# **flipped** in both axes and its two channel axes swapped, `w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)`.
# A correlation with a flipped kernel is a true convolution: the backward pass of a correlation is a
# convolution, and vice versa.

# %%
w1 = np.zeros((1, 1, 3, 3))
w1[0, 0] = [[1, 2, 0], [0, 3, 0], [0, 4, 5]]  # an asymmetric kernel, to see the flips
x7 = mg.tensor(np.zeros((1, 1, 7, 7)), dtype="float64", requires_grad=True)
y7 = F.conv2d(x7, mg.tensor(w1, dtype="float64"), padding=1)
delta = np.zeros((1, 1, 7, 7))
delta[0, 0, 2, 4] = 1.0  # one output gradient, at position (2, 4)
y7.backward(mg.tensor(delta, dtype="float64"))
flipped = w1[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).copy()
dx_flip = F.conv2d(mg.tensor(delta, dtype="float64"), mg.tensor(flipped, dtype="float64"), padding=3 - 1 - 1)
np.testing.assert_allclose(x7.grad.numpy()[0, 0, 1:4, 3:6], w1[0, 0])  # the kernel, unflipped, on its window
np.testing.assert_allclose(dx_flip.numpy(), x7.grad.numpy())

# and for random dY, several channels, padding 2 and a 5x5 kernel:
xr = mg.tensor(rng.standard_normal((2, 3, 8, 8)), dtype="float64", requires_grad=True)
wr = rng.standard_normal((4, 3, 5, 5))
yr = F.conv2d(xr, mg.tensor(wr, dtype="float64"), padding=2)
dy = rng.standard_normal(yr.shape)
yr.backward(mg.tensor(dy, dtype="float64"))
w_flip = mg.tensor(wr[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).copy(), dtype="float64")
dx_corr = F.conv2d(mg.tensor(dy, dtype="float64"), w_flip, padding=5 - 1 - 2)
print("dx from col2im vs from the flipped kernel: largest difference", np.abs(dx_corr.numpy() - xr.grad.numpy()).max())
np.testing.assert_allclose(dx_corr.numpy(), xr.grad.numpy(), rtol=1e-12, atol=1e-12)

panels = [
    (w1[0, 0], "kernel w"),
    (flipped[0, 0], "w flipped (both axes)"),
    (delta[0, 0], "dY: a single 1 at (2, 4)"),
    (x7.grad.numpy()[0, 0], "dx = col2im(W^T dY)"),
    (dx_flip.numpy()[0, 0], "dx = dY correlated with flipped w"),
]
fig, axes = plt.subplots(1, 5, figsize=(13, 2.8))
for ax, (picture, title) in zip(axes, panels):
    ax.imshow(picture, cmap="viridis", vmin=0, vmax=5)
    for (r, c), v in np.ndenumerate(picture):
        if v:
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %% [markdown]
# With stride `s > 1` the same holds once `dY` is spread out, `s - 1` zeros between its entries: the stamps
# land `s` pixels apart. `col2im` does all of this without ever flipping anything.
#
# ## 5. Exercise: the backward pass with loops
#
# Write `conv_backward_naive(dout, x, w, stride, pad)` -> `(dx, dw, db)` with loops, as `conv_forward_naive`
# above. For each output position, the forward pass did `out[n, o, i, j] = sum(window * w[o]) + b[o]`, where
# `window` is a slice of the zero-padded input. So, with `g = dout[n, o, i, j]`:
#
# - `dw[o] += g * window`;
# - `db[o] += g`;
# - the slice of `dxpad` under the window gets `+= g * w[o]` (the stamp of section 4);
#
# and at the end `dx` is `dxpad` without its padding.


# %% [exercise]
def conv_backward_naive(dout, x, w, stride, pad):
    """dout (N, O, OH, OW), x (N, C, H, W), w (O, C, KH, KW) -> dx (N, C, H, W), dw (O, C, KH, KW), db (O,)."""
    # BEGIN SOLUTION
    n_img, n_out, oh, ow = dout.shape
    kh, kw = w.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    db = np.zeros(n_out, dtype=dout.dtype)
    for n in range(n_img):
        for o in range(n_out):
            for i in range(oh):
                for j in range(ow):
                    rows = slice(i * stride, i * stride + kh)
                    columns = slice(j * stride, j * stride + kw)
                    g = dout[n, o, i, j]
                    dw[o] += g * xpad[n, :, rows, columns]
                    db[o] += g
                    dxpad[n, :, rows, columns] += g * w[o]
    dx = dxpad[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]
    return dx, dw, db
    # END SOLUTION


# %% [check]
lesson03.check_conv_backward(conv_backward_naive)

# %% [markdown]
# ## 6. Groups: the paper's two-GPU split
#
# The 2012 network did not fit on one 3 GB GTX 580, so every layer was split in two halves, one per GPU;
# conv2, conv4 and conv5 only take input from the half on their own GPU. In `minigrad` this is `groups=2`:
# output group g is computed from input group g only, and the weights are (O, C/groups, KH, KW). In the
# im2col picture, each group is its own product: rows of `cols` for its channels, rows of `W` for its kernels.
# Change the second half of the input channels and only the second half of the outputs moves:

# %%
xg = mg.randn((1, 4, 6, 6))  # group 0: channels 0-1, group 1: channels 2-3
wg = mg.randn((6, 2, 3, 3))  # 6 kernels, each over 4 / 2 = 2 input channels
yg = F.conv2d(xg, wg, padding=1, groups=2)
changed = xg.numpy().copy()
changed[:, 2:] += 100.0
moved = np.abs(F.conv2d(mg.tensor(changed), wg, padding=1, groups=2).numpy() - yg.numpy()).max(axis=(0, 2, 3))
print("largest change per output channel:", np.round(moved, 2))
assert np.all(moved[:3] == 0) and np.all(moved[3:] > 0)

halves = F.concatenate([F.conv2d(xg[:, :2], wg[:3], padding=1), F.conv2d(xg[:, 2:], wg[3:], padding=1)], axis=1)
np.testing.assert_allclose(halves.numpy(), yg.numpy(), rtol=1e-5, atol=1e-5)
print("groups=2 == two separate convolutions, side by side")

# %% [markdown]
# ## Where this lives in the library
#
# - `minigrad/kernels/im2col.py`: `im2col` and `col2im` (each with a plain `*_generic` version and a compiled
#   `*_numba` one), `window_view`; `minigrad/kernels/shapes.py`: `output_size`.
# - `minigrad/functional/conv.py`: `Conv2d.forward` / `Conv2d.backward` (exactly the products of section 3:
#   `dW_g = dY_g cols_g^T`, `dcols_g = W_g^T dY_g`, `col2im`, `db` a sum) and `conv2d`, which checks the shapes.
#   On the CPU it hands the same work to `minigrad/kernels/conv_cpu.py` (`ChunkedConv2d`): lesson 4.
# - `minigrad/nn.py`: `nn.Conv2d`, the layer with its weights and bias.
#
# ## Further exercises
#
# 1. Extend `conv_backward_naive` to `groups`, and compare with `F.conv2d(..., groups=2)`.
# 2. For stride 2, build `dx` as in section 4: spread `dY` out with zeros, then correlate with the flipped
#    kernel. How much padding does the spread `dY` need?
# 3. The im2col matrix of the paper's conv1 for a batch of 128: how many megabytes in float32? Check a small
#    case with `im2col(...).shape`, then read lesson 4 to see why the library never builds it whole on a CPU.

# %%
report_runtime()
