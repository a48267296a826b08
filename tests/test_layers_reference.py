"""The network ops against plain-loop references written straight from their definitions.

Each reference is a few explicit Python for-loops over images, channels, output positions and kernel
offsets, on small shapes, in float64 on the host: slow, but easy to check by eye (Chainer's style of
testing). The ops run on every backend (NumPy, the strict CuPy stand-in, real CuPy) in float32 and
float64, and must agree with the reference within the tolerance of their dtype:

- float32: rtol 1e-5, atol 1e-5 (sums of up to a few hundred products);
- float64: rtol 1e-12, atol 1e-12.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import threading

import numpy as np
import pytest
from conftest import to_host, use_backend

import minigrad as mg
import minigrad.functional as F
from minigrad import backend, nn
from minigrad import kernels as K
from minigrad.kernels.cpu_threads import in_split_section

TOL = {
    np.float32: {"rtol": 1e-5, "atol": 1e-5},
    np.float64: {"rtol": 1e-12, "atol": 1e-12},
}


def host(shape, seed=0, low=None, high=None):
    """Seeded float64 host data: standard normal, or uniform in [low, high)."""
    gen = np.random.default_rng(seed)
    return gen.standard_normal(shape) if low is None else gen.uniform(low, high, shape)


def leaf(data, device, dtype, requires_grad=True):
    return mg.tensor(np.asarray(data, dtype=dtype), device=device, requires_grad=requires_grad)


def as_ref(data, dtype):
    """The values the op really sees (rounded to dtype), in float64."""
    return np.asarray(data, dtype=dtype).astype(np.float64)


def assert_matches(got, expected, dtype):
    assert got.dtype == dtype
    got_host = to_host(got.data)
    assert got_host.shape == np.shape(expected)
    np.testing.assert_allclose(got_host, expected, **TOL[dtype])


def assert_op_and_gradient_match(op, loops, x_host, device, dtype, seed):
    """op(x) and the gradient of sum(op(x) * upstream) against loops(x, upstream) -> (y, dx), in dtype."""
    x = leaf(x_host, device, dtype)
    y = op(x)
    upstream = host(y.shape, seed)
    y_ref, dx_ref = loops(as_ref(x_host, dtype), as_ref(upstream, dtype))
    assert_matches(y, y_ref, dtype)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    assert_matches(x.grad, dx_ref, dtype)


def out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


# ----------------------------------------------------------------------------- conv2d


def conv2d_loops(x, w, b, stride, padding, groups, upstream):
    """y = conv2d(x, w, b) and the gradients of sum(y * upstream) with respect to x, w and b.

    y[n, o, i, j] = b[o] + sum over c in o's group, u < KH, v < KW of
                    w[o, c - first channel of the group, u, v] * x[n, c, i*sh + u - ph, j*sw + v - pw]
    where positions outside x are zeros (the padding).
    """
    n_img, _, height, width = x.shape
    n_out, cg, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(height, kh, sh, ph), out_size(width, kw, sw, pw)
    out_per_group = n_out // groups
    y = np.zeros((n_img, n_out, oh, ow))
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(n_out)
    for n in range(n_img):
        for o in range(n_out):
            first_channel = (o // out_per_group) * cg
            for i in range(oh):
                for j in range(ow):
                    total = 0.0 if b is None else b[o]
                    g = upstream[n, o, i, j]
                    for c in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                row, col = i * sh + u - ph, j * sw + v - pw
                                if 0 <= row < height and 0 <= col < width:
                                    total += w[o, c, u, v] * x[n, first_channel + c, row, col]
                                    dx[n, first_channel + c, row, col] += g * w[o, c, u, v]
                                    dw[o, c, u, v] += g * x[n, first_channel + c, row, col]
                    y[n, o, i, j] = total
                    db[o] += g
    return y, dx, dw, db


# name: (x shape, weight shape, with bias, stride, padding, groups)
CONV_CASES = {
    "3x3 stride 2 pad 1 groups 2": ((2, 4, 7, 6), (6, 2, 3, 3), True, (2, 2), (1, 1), 2),
    "no bias, non-square kernel, stride and padding": ((1, 3, 6, 7), (2, 3, 3, 2), False, (1, 2), (0, 1), 1),
    "1x1": ((2, 3, 4, 4), (5, 3, 1, 1), True, (1, 1), (0, 0), 1),
    "11x11 stride 4 (conv1's shape)": ((1, 3, 23, 23), (2, 3, 11, 11), True, (4, 4), (0, 0), 1),
    "depthwise (groups = channels)": ((1, 3, 5, 5), (3, 1, 3, 3), False, (1, 1), (1, 1), 3),
    "batch 5, same padding, groups 2": ((5, 4, 5, 5), (4, 2, 3, 3), True, (1, 1), (1, 1), 2),
}


@pytest.fixture(
    params=[
        "whole batch",
        "1 image",
        "2 images",
        "2 images on 3 cores",
        "whole batch on 1 core",
        "2 images, per-image products",
        "whole batch, per-image",
        "1 image, per-image on 3 cores",
        "whole batch, per-image on 1 core",
    ]
)
def conv_chunk(request, monkeypatch):
    """How many images the CPU-tuned conv2d (`minigrad.kernels.conv_cpu`, which the op runs on NumPy arrays)
    unfolds at a time (the default is 16 MB of columns), whether it multiplies image by image (the default
    only for output planes of 2,048 pixels or more) and on how many cores it spreads its products (the
    BLAS's thread count unless set here): blocks of a chunk's columns, or whole images, one block per core
    (image by image, it rounds the chunk up to 3 images with 3 cores, so a batch of 5 has a chunk on 3
    threads and one of 2 on one). On the stand-in the op runs the plain definition, which has no such
    settings; `test_tuned_conv2d_equals_the_plain_definition` runs the tuned one there too."""
    conv_module = importlib.import_module("minigrad.kernels.conv_cpu")
    images = {"whole": None, "1": 1, "2": 2}[request.param.split()[0]]
    if "per-image" in request.param:
        monkeypatch.setattr(conv_module, "CPU_PER_IMAGE_MIN_PIXELS", 1)
    if " on " in request.param:
        cores = int(request.param.split(" on ")[1].split()[0])
        monkeypatch.setattr(conv_module, "cpu_gemm_threads", lambda: cores)

    def images_per_chunk(x, bytes_per_image):
        return x.shape[0] if images is None else min(images, x.shape[0])

    monkeypatch.setattr(conv_module, "_images_per_chunk", images_per_chunk)
    return images


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_matches_the_loops(case, device, dtype, conv_chunk):
    x_shape, w_shape, with_bias, stride, padding, groups = CONV_CASES[case]
    x_host, w_host, b_host = host(x_shape, 1), host(w_shape, 2), host(w_shape[0], 3)
    x, w = leaf(x_host, device, dtype), leaf(w_host, device, dtype)
    b = leaf(b_host, device, dtype) if with_bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    upstream = host(y.shape, 4)
    y_ref, dx_ref, dw_ref, db_ref = conv2d_loops(
        as_ref(x_host, dtype),
        as_ref(w_host, dtype),
        as_ref(b_host, dtype) if with_bias else None,
        stride,
        padding,
        groups,
        as_ref(upstream, dtype),
    )
    assert_matches(y, y_ref, dtype)
    y.backward(mg.tensor(upstream.astype(dtype), device=device))
    assert_matches(x.grad, dx_ref, dtype)
    assert_matches(w.grad, dw_ref, dtype)
    if with_bias:
        assert_matches(b.grad, db_ref, dtype)


@pytest.mark.parametrize("cores", [2, 3])
@pytest.mark.parametrize("blocks", ["images", "columns"])
def test_conv2d_parts_share_no_buffer_even_in_lockstep(monkeypatch, cores, blocks):
    """The products run on `cores` threads, by whole images or by blocks of a chunk's columns; here each
    thread waits for the others after every product, so two parts that wrote one buffer would overwrite each
    other's product before using it, and a part that did another part's work too would be left waiting (the
    barrier breaks after 10 s)."""
    conv_module = importlib.import_module("minigrad.kernels.conv_cpu")
    monkeypatch.setattr(conv_module, "CPU_PER_IMAGE_MIN_PIXELS", 1 if blocks == "images" else 10**9)
    monkeypatch.setattr(conv_module, "cpu_gemm_threads", lambda: cores)
    in_step, matmul = threading.Barrier(cores), np.matmul

    def matmul_in_lockstep(*args, **kwargs):
        out = matmul(*args, **kwargs)
        if in_split_section():
            in_step.wait(timeout=10)
        return out

    monkeypatch.setattr(np, "matmul", matmul_in_lockstep)
    n = 2 * cores  # two images (or two blocks of columns) per thread: every part does as many products
    x_host, w_host, b_host = host((n, 4, 6, 5), 10), host((6, 2, 3, 3), 11), host(6, 12)
    upstream = host((n, 6, 3, 5), 13)
    want = conv2d_loops(x_host, w_host, b_host, (2, 1), (1, 1), 2, upstream)
    x, w, b = (leaf(a, "cpu", np.float64) for a in (x_host, w_host, b_host))
    y = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    y.backward(mg.tensor(upstream))
    for got, expected in zip((y, x.grad, w.grad, b.grad), want):
        assert_matches(got, expected, np.float64)


@pytest.mark.parametrize("needs", ["x", "w", "x and w"])
def test_conv2d_needs_only_the_gradients_asked_for(device, conv_chunk, needs):
    """conv1's input needs no gradient, a frozen layer's weight none: the others stay right, chunked or not."""
    x_host, w_host, b_host = host((3, 4, 6, 5), 6), host((4, 2, 3, 3), 7), host(4, 8)
    upstream = host((3, 4, 3, 5), 9)
    want = conv2d_loops(x_host, w_host, b_host, (2, 1), (1, 1), 2, upstream)
    x = leaf(x_host, device, np.float64, requires_grad="x" in needs)
    w = leaf(w_host, device, np.float64, requires_grad="w" in needs)
    b = leaf(b_host, device, np.float64)
    y = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    y.backward(mg.tensor(upstream, device=device))
    assert_matches(y, want[0], np.float64)
    assert (x.grad is None) == ("x" not in needs) and (w.grad is None) == ("w" not in needs)
    for got, expected in ((x.grad, want[1]), (w.grad, want[2]), (b.grad, want[3])):
        if got is not None:
            assert_matches(got, expected, np.float64)


def test_conv2d_backward_twice_through_a_retained_graph(device, conv_chunk):
    """The second pass must not reuse columns that the first pass overwrote with another chunk's."""
    x = leaf(host((5, 4, 6, 6), 10), device, np.float64)
    w = leaf(host((6, 2, 3, 3), 11), device, np.float64)
    y = F.conv2d(x, w, stride=1, padding=1, groups=2)
    upstream = mg.tensor(host(y.shape, 12), device=device)
    y.backward(upstream, retain_graph=True)
    once_x, once_w = to_host(x.grad.data), to_host(w.grad.data)
    y.backward(upstream)
    np.testing.assert_allclose(to_host(x.grad.data), 2 * once_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_host(w.grad.data), 2 * once_w, rtol=1e-12, atol=1e-12)


def conv2d_loops_shape(x_shape, w_shape, stride, padding):
    """(N, O, OH, OW) of a convolution, for the upstream gradient."""
    (sh, sw), (ph, pw) = stride, padding
    return (x_shape[0], w_shape[0], out_size(x_shape[2], w_shape[2], sh, ph), out_size(x_shape[3], w_shape[3], sw, pw))


def conv2d_raw(version, x, w, b, stride, padding, groups, upstream):
    """y, dx, dw, db (db None without a bias) of one conv2d on raw arrays of any backend.

    version "plain": the op's plain definition (force_generic: also the generic im2col/col2im);
    "tuned": the CPU-tuned ChunkedConv2d, called directly so that it runs on the stand-in too.
    """
    if version == "tuned":
        conv = K.ChunkedConv2d(stride, padding, groups)
        y = conv.forward(x, w, b)
        return (y, *conv.backward(upstream, True, True, b is not None))
    tensors = [mg.Tensor(a, requires_grad=True) for a in (x, w) + (() if b is None else (b,))]
    with K.force_generic():
        y = F.conv2d(*tensors, stride=stride, padding=padding, groups=groups)
        y.backward(mg.Tensor(upstream))
    grads = [t.grad.data for t in tensors]
    return (y.data, *grads, None) if b is None else (y.data, *grads)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_tuned_conv2d_equals_the_plain_definition(case, xp, dtype, conv_chunk):
    """The tuned CPU path (chunks, bias row, image by image on several cores) gives the plain definition's
    y, dx, dw and db up to rounding (its sums run in another order), on NumPy and on the strict stand-in."""
    x_shape, w_shape, with_bias, stride, padding, groups = CONV_CASES[case]
    x, w = xp.asarray(host(x_shape, 1).astype(dtype)), xp.asarray(host(w_shape, 2).astype(dtype))
    b = xp.asarray(host(w_shape[0], 3).astype(dtype)) if with_bias else None
    upstream = xp.asarray(host(conv2d_loops_shape(x_shape, w_shape, stride, padding), 4).astype(dtype))
    plain = conv2d_raw("plain", x, w, b, stride, padding, groups, upstream)
    tuned = conv2d_raw("tuned", x, w, b, stride, padding, groups, upstream)
    for name, got, want in zip(("y", "dx", "dw", "db"), tuned, plain):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(to_host(got), to_host(want), **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("where", ["numpy", "numpy in force_generic", "stand-in"])
def test_the_op_takes_the_tuned_path_on_numpy_only(where, monkeypatch):
    """NumPy arrays go to the CPU-tuned path; device arrays, and any array inside force_generic, to the plain one."""
    conv_module = importlib.import_module("minigrad.functional.conv")
    made = []

    class Spy(K.ChunkedConv2d):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(conv_module, "ChunkedConv2d", Spy)
    device = "gpu" if where == "stand-in" else "cpu"
    with use_backend("strict" if where == "stand-in" else "numpy"):
        x, w = leaf(host((2, 3, 6, 6), 1), device, np.float32), leaf(host((4, 3, 3, 3), 2), device, np.float32)
        with K.force_generic() if "force_generic" in where else contextlib.nullcontext():
            F.conv2d(x, w, padding=1).sum().backward()
    assert len(made) == (1 if where == "numpy" else 0)
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


def test_conv2d_chunk_size_follows_the_byte_budget(monkeypatch):
    conv_module = importlib.import_module("minigrad.kernels.conv_cpu")
    x = np.zeros((10, 3, 4, 4), np.float32)
    monkeypatch.setattr(conv_module, "CPU_COLS_BYTES", 3000)
    assert conv_module._images_per_chunk(x, 1000) == 3
    assert conv_module._images_per_chunk(x, 5000) == 1  # never fewer than one image
    monkeypatch.setattr(conv_module, "CPU_COLS_BYTES", None)
    assert conv_module._images_per_chunk(x, 1000) == 10


def test_conv2d_layer_uses_its_parameters(device):
    layer = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=2).to(device)
    x = mg.tensor(host((2, 4, 5, 6), 5).astype(np.float32), device=device)
    expected = F.conv2d(x, layer.weight, layer.bias, (2, 1), 1, 2)
    np.testing.assert_array_equal(to_host(layer(x).data), to_host(expected.data))
    assert layer.weight.shape == (6, 2, 3, 2)


@pytest.mark.parametrize("stride, padding", [(4, 0), (1, 1)])
def test_conv2d_takes_an_empty_batch(device, stride, padding):
    """An empty batch gives an empty output, an empty input gradient and zero weight and bias gradients."""
    x = leaf(np.zeros((0, 3, 9, 9)), device, np.float32)
    w, b = leaf(host((4, 3, 3, 3), 1), device, np.float32), leaf(host(4, 2), device, np.float32)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert y.shape == (0, 4, *(((9 + 2 * padding - 3) // stride + 1),) * 2)
    y.backward(mg.tensor(np.zeros(y.shape, np.float32), device=device))
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(to_host(w.grad.data), np.zeros(w.shape, np.float32))
    np.testing.assert_array_equal(to_host(b.grad.data), np.zeros(4, np.float32))


def test_conv2d_errors_name_the_shapes():
    x = mg.tensor(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"groups=3 must divide both input channels \(4\)"):
        F.conv2d(x, mg.tensor(np.zeros((3, 2, 3, 3), np.float32)), groups=3)
    with pytest.raises(ValueError, match=r"expects 3 input channels.*x \(1, 4, 5, 5\) has 4"):
        F.conv2d(x, mg.tensor(np.zeros((2, 3, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"expects x of shape \(N, C, H, W\), got shape \(4, 5, 5\)"):
        F.conv2d(x[0], mg.tensor(np.zeros((2, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"kernel \(7, 7\) does not fit the input of spatial size \(5, 5\)"):
        F.conv2d(x, mg.tensor(np.zeros((2, 4, 7, 7), np.float32)))


# ----------------------------------------------------------------------------- max pooling


def max_pool_loops(x, kernel, stride, padding, upstream):
    """y = max over each window, and the gradient of sum(y * upstream).

    Padding never wins. Each window's gradient goes to its FIRST maximum in row-major order (a later
    element must be strictly larger to take over), so ties send it to the top-left-most candidate.
    """
    n_img, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(height, kh, sh, ph), out_size(width, kw, sw, pw)
    y = np.zeros((n_img, channels, oh, ow))
    dx = np.zeros_like(x)
    for n in range(n_img):
        for c in range(channels):
            for i in range(oh):
                for j in range(ow):
                    best, winner = -math.inf, None
                    for u in range(kh):
                        for v in range(kw):
                            row, col = i * sh + u - ph, j * sw + v - pw
                            if 0 <= row < height and 0 <= col < width and x[n, c, row, col] > best:
                                best, winner = x[n, c, row, col], (row, col)
                    y[n, c, i, j] = best
                    dx[n, c, winner[0], winner[1]] += upstream[n, c, i, j]
    return y, dx


# name: (x shape, kernel, stride, padding)
POOL_CASES = {
    "3x3 stride 2 (overlapping, the paper's)": ((2, 3, 7, 7), (3, 3), (2, 2), (0, 0)),
    "3x3 stride 2 on 13x13 (after conv5)": ((1, 2, 13, 13), (3, 3), (2, 2), (0, 0)),
    "3x3 stride 2 padding 1": ((1, 2, 6, 5), (3, 3), (2, 2), (1, 1)),
    "2x2, stride = kernel": ((2, 2, 6, 8), (2, 2), (2, 2), (0, 0)),
    "non-square": ((1, 2, 7, 8), (2, 3), (1, 2), (1, 1)),
}


def pool_input(shape, kind):
    """'random' values, or 'ties': small integers, so most windows hold several maxima."""
    if kind == "ties":
        return np.random.default_rng(6).integers(0, 3, shape).astype(np.float64)
    return host(shape, 6)


@pytest.mark.parametrize("values", ["random", "ties"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool2d_and_its_gradient_match_the_loops(case, values, device, dtype):
    x_shape, kernel, stride, padding = POOL_CASES[case]
    assert_op_and_gradient_match(
        lambda x: F.max_pool2d(x, kernel, stride, padding),
        lambda x, upstream: max_pool_loops(x, kernel, stride, padding, upstream),
        pool_input(x_shape, values),
        device,
        dtype,
        seed=7,
    )


def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum(device):
    # A constant input: every element of a window is a maximum, and the first one is the window's top-left.
    x = mg.tensor(np.ones((1, 1, 7, 7), np.float32), device=device, requires_grad=True)
    y = F.max_pool2d(x, 3, 2)
    y.sum().backward()
    oh, ow = y.shape[2:]
    expected = np.zeros((1, 1, 7, 7), np.float32)
    expected[:, :, 0 : 2 * oh : 2, 0 : 2 * ow : 2] = 1  # the window origins (2i, 2j)
    np.testing.assert_array_equal(to_host(x.grad.data), expected)
    assert float(to_host(x.grad.data).sum()) == y.size  # each window's gradient went to exactly one element


def test_max_pool2d_stride_defaults_to_the_kernel(device):
    x = mg.tensor(host((1, 1, 6, 6), 8).astype(np.float32), device=device)
    np.testing.assert_array_equal(to_host(F.max_pool2d(x, 2).data), to_host(F.max_pool2d(x, 2, 2).data))


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pools_refuse_a_zero_stride_and_accept_numpy_integers(pool):
    x = mg.tensor(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"kernel_size and stride must be >= 1, got \(2, 2\) and \(0, 0\)"):
        pool(x, 2, 0)
    assert pool(x, np.int64(2), np.int64(2), np.int64(0)).shape == (1, 1, 3, 3)
    assert F.conv2d(x, mg.tensor(np.zeros((1, 1, 3, 3), np.float32)), stride=np.int64(2)).shape == (1, 1, 2, 2)


def test_max_pool2d_refuses_padding_over_half_the_kernel():
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel \(3, 3\)"):
        F.max_pool2d(mg.tensor(np.zeros((1, 1, 5, 5), np.float32)), 3, 1, padding=2)


# ----------------------------------------------------------------------------- average pooling


def avg_pool_loops(x, kernel, stride, padding, upstream):
    """Mean over each KHxKW window, padded zeros included (the divisor is always KH*KW), and its gradient."""
    n_img, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = out_size(height, kh, sh, ph), out_size(width, kw, sw, pw)
    y = np.zeros((n_img, channels, oh, ow))
    dx = np.zeros_like(x)
    for n, c, i, j in itertools.product(range(n_img), range(channels), range(oh), range(ow)):
        for u, v in itertools.product(range(kh), range(kw)):
            row, col = i * sh + u - ph, j * sw + v - pw
            if 0 <= row < height and 0 <= col < width:
                y[n, c, i, j] += x[n, c, row, col] / (kh * kw)
                dx[n, c, row, col] += upstream[n, c, i, j] / (kh * kw)
    return y, dx


AVG_CASES = {
    "2x2": ((2, 2, 6, 6), (2, 2), (2, 2), (0, 0)),
    "3x3 stride 2 padding 1": ((2, 2, 6, 7), (3, 3), (2, 2), (1, 1)),
    "non-square, overlapping": ((1, 3, 5, 7), (3, 2), (1, 2), (0, 1)),
}


@pytest.mark.parametrize("case", list(AVG_CASES))
def test_avg_pool2d_and_its_gradient_match_the_loops(case, device, dtype):
    x_shape, kernel, stride, padding = AVG_CASES[case]
    assert_op_and_gradient_match(
        lambda x: F.avg_pool2d(x, kernel, stride, padding),
        lambda x, upstream: avg_pool_loops(x, kernel, stride, padding, upstream),
        host(x_shape, 9),
        device,
        dtype,
        seed=10,
    )


def adaptive_avg_pool_loops(x, output_size, upstream):
    """Cell (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH)) and the same for columns (PyTorch's rule)."""
    n_img, channels, height, width = x.shape
    oh, ow = output_size
    y = np.zeros((n_img, channels, oh, ow))
    dx = np.zeros_like(x)
    for i in range(oh):
        r0, r1 = math.floor(i * height / oh), math.ceil((i + 1) * height / oh)
        for j in range(ow):
            c0, c1 = math.floor(j * width / ow), math.ceil((j + 1) * width / ow)
            count = (r1 - r0) * (c1 - c0)
            for n, c in itertools.product(range(n_img), range(channels)):
                for row, col in itertools.product(range(r0, r1), range(c0, c1)):
                    y[n, c, i, j] += x[n, c, row, col] / count
                    dx[n, c, row, col] += upstream[n, c, i, j] / count
    return y, dx


ADAPTIVE_CASES = {
    "7x5 to 3x2 (no size divides)": ((2, 2, 7, 5), (3, 2)),
    "6x6 to 4x4": ((1, 3, 6, 6), (4, 4)),
    "13x13 to 6x6 (torchvision's AlexNet)": ((1, 2, 13, 13), (6, 6)),
    "same size": ((1, 2, 5, 5), (5, 5)),
    "global average": ((2, 2, 4, 6), (1, 1)),
    "larger than the input": ((1, 1, 3, 3), (5, 4)),
}


@pytest.mark.parametrize("case", list(ADAPTIVE_CASES))
def test_adaptive_avg_pool2d_and_its_gradient_match_the_loops(case, device, dtype):
    x_shape, output_size = ADAPTIVE_CASES[case]
    assert_op_and_gradient_match(
        lambda x: F.adaptive_avg_pool2d(x, output_size),
        lambda x, upstream: adaptive_avg_pool_loops(x, output_size, upstream),
        host(x_shape, 11),
        device,
        dtype,
        seed=12,
    )


# ----------------------------------------------------------------------------- local response normalisation


def lrn_paper_loops(a, n, k, alpha, beta):
    """The paper's formula (Krizhevsky et al. 2012, Sec. 3.3), for an odd window size n:

    b[:, i] = a[:, i] / (k + alpha * sum_{j = max(0, i - n//2)}^{min(C - 1, i + n//2)} a[:, j]^2) ** beta
    """
    channels = a.shape[1]
    b = np.empty_like(a)
    for i in range(channels):
        total = np.zeros_like(a[:, i])
        for j in range(max(0, i - n // 2), min(channels - 1, i + n // 2) + 1):
            total += a[:, j] ** 2
        b[:, i] = a[:, i] / (k + alpha * total) ** beta
    return b


# name: (size n, k, alpha, beta, scale of the activations)
LRN_SETTINGS = {
    # Activations of a few tens (ReLU outputs of conv1), so that alpha * sum a^2 is comparable with k.
    "paper constants": (5, 2.0, 1e-4, 0.75, 30.0),
    "n 3, beta 0.6": (3, 1.0, 0.5, 0.6, 1.0),
}


@pytest.mark.parametrize("alpha_over_size", [False, True], ids=["paper alpha", "caffe alpha over size"])
@pytest.mark.parametrize("setting", list(LRN_SETTINGS))
def test_local_response_norm_matches_the_papers_formula(setting, alpha_over_size, device, dtype):
    n, k, alpha, beta, scale = LRN_SETTINGS[setting]
    a_host = np.abs(host((2, 7, 3, 4), 13)) * scale
    a = leaf(a_host, device, dtype)
    y = F.local_response_norm(a, n, alpha, beta, k, alpha_over_size=alpha_over_size)
    a_ref = as_ref(a_host, dtype)
    expected = lrn_paper_loops(a_ref, n, k, alpha / n if alpha_over_size else alpha, beta)
    assert_matches(y, expected, dtype)
    # The two conventions really differ on these inputs, so the test tells them apart.
    other = lrn_paper_loops(a_ref, n, k, alpha if alpha_over_size else alpha / n, beta)
    assert np.abs(other - expected).max() > 1000 * TOL[dtype]["rtol"] * np.abs(expected).max()


def test_local_response_norm_with_an_even_size_takes_one_more_channel_before(device, dtype):
    # For even n the window is [i - n//2, i + n//2 - 1] (PyTorch's and Caffe's convention): n channels in all.
    n, k, alpha, beta = 4, 1.0, 0.3, 0.75
    a_host = host((1, 6, 2, 2), 14)
    y = F.local_response_norm(leaf(a_host, device, dtype), n, alpha, beta, k)
    a = as_ref(a_host, dtype)
    expected = np.empty_like(a)
    for i in range(a.shape[1]):
        window = range(max(0, i - n // 2), min(a.shape[1] - 1, i + n // 2 - 1) + 1)
        total = sum(a[:, j] ** 2 for j in window)
        expected[:, i] = a[:, i] / (k + alpha * total) ** beta
    assert_matches(y, expected, dtype)


def test_local_response_norm_layer_takes_either_convention(device):
    a = mg.tensor((np.abs(host((1, 5, 2, 2), 15)) * 30).astype(np.float32), device=device)
    for alpha_over_size in (False, True):
        layer = nn.LocalResponseNorm(alpha_over_size=alpha_over_size)
        expected = F.local_response_norm(a, 5, 1e-4, 0.75, 2.0, alpha_over_size)
        np.testing.assert_array_equal(to_host(layer(a).data), to_host(expected.data))
    assert "alpha_over_size=True" in repr(nn.LocalResponseNorm(alpha_over_size=True))
    assert "alpha_over_size" not in repr(nn.LocalResponseNorm())


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout_zeroes_or_scales_each_element(p, device, dtype):
    x_host = host((200, 500), 16, low=1.0, high=2.0)  # no zeros, so a zero in y means "dropped"
    x = leaf(x_host, device, dtype)
    y = F.dropout(x, p, training=True)
    y_host, x_ref = to_host(y.data), as_ref(x_host, dtype)
    kept = y_host != 0
    np.testing.assert_allclose(y_host[kept], x_ref[kept] / (1 - p), **TOL[dtype])
    # 100,000 independent draws: the kept fraction is 1 - p give or take 0.0016 (one standard deviation).
    assert abs(kept.mean() - (1 - p)) < 0.01
    y.sum().backward()  # the gradient uses the same mask
    np.testing.assert_allclose(to_host(x.grad.data), kept / (1 - p), **TOL[dtype])


def test_dropout_works_in_float16(device):
    x = mg.tensor(np.ones((20, 30), np.float16), device=device, requires_grad=True)
    y = F.dropout(x, 0.5)
    assert y.dtype == np.float16
    assert set(np.unique(to_host(y.data))) <= {0.0, 2.0}
    y.sum().backward()
    assert x.grad.dtype == np.float16


def test_dropout_masks_repeat_with_the_same_seed(device):
    x = mg.tensor(np.ones((50, 40), np.float32), device=device)
    backend.manual_seed(5)
    first, second = to_host(F.dropout(x, 0.5).data), to_host(F.dropout(x, 0.5).data)
    backend.manual_seed(5)
    np.testing.assert_array_equal(to_host(F.dropout(x, 0.5).data), first)
    assert not np.array_equal(first, second)  # consecutive calls draw new masks


def test_dropout_is_the_identity_when_not_training(device):
    x = mg.tensor(host((3, 4), 17).astype(np.float32), device=device, requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    layer = nn.Dropout(0.5)
    assert layer.eval()(x) is x
    assert layer.train()(x) is not x


@pytest.mark.parametrize("p", [1.0, -0.1])
def test_dropout_probability_must_be_in_0_1(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(mg.tensor([1.0]), p)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(p)


# ----------------------------------------------------------------------------- linear, softmax, cross-entropy


def linear_loops(x, w, b):
    """y[n, o] = b[o] + sum_i x[n, i] * w[o, i]."""
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = b[o] + sum(x[n, i] * w[o, i] for i in range(x.shape[1]))
    return y


def test_linear_matches_the_loops(device, dtype):
    x_host, w_host, b_host = host((4, 5), 18), host((3, 5), 19), host(3, 20)
    y = F.linear(leaf(x_host, device, dtype), leaf(w_host, device, dtype), leaf(b_host, device, dtype))
    assert_matches(y, linear_loops(as_ref(x_host, dtype), as_ref(w_host, dtype), as_ref(b_host, dtype)), dtype)
    y_no_bias = F.linear(leaf(x_host, device, dtype), leaf(w_host, device, dtype))
    assert_matches(y_no_bias, linear_loops(as_ref(x_host, dtype), as_ref(w_host, dtype), np.zeros(3)), dtype)


def test_linear_layer_uses_its_parameters(device):
    layer = nn.Linear(5, 3).to(device)
    x_host = host((4, 5), 21).astype(np.float32)
    y = layer(mg.tensor(x_host, device=device))
    expected = linear_loops(x_host, layer.weight.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(to_host(y.data), expected, **TOL[np.float32])


def test_linear_with_the_wrong_number_of_features_says_so():
    with pytest.raises(ValueError, match=r"x has 4 features but weight \(3, 5\) expects 5"):
        F.linear(mg.tensor(np.zeros((2, 4))), mg.tensor(np.zeros((3, 5))))


def log_softmax_loops(x):
    """Row by row: log softmax(x)_k = x_k - m - log(sum_j exp(x_j - m)), with m the row's maximum."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        m = max(x[n])
        total = sum(math.exp(v - m) for v in x[n])
        for k in range(x.shape[1]):
            out[n, k] = x[n, k] - m - math.log(total)
    return out


def test_log_softmax_and_softmax_match_the_loops(device, dtype):
    x_host = host((4, 6), 22) * 3
    x = leaf(x_host, device, dtype)
    expected = log_softmax_loops(as_ref(x_host, dtype))
    assert_matches(F.log_softmax(x), expected, dtype)
    assert_matches(F.softmax(x), np.exp(expected), dtype)
    # axis=0 normalises columns: the same as rows of the transpose.
    assert_matches(F.log_softmax(x, axis=0), log_softmax_loops(as_ref(x_host, dtype).T).T, dtype)


def test_log_softmax_is_stable_for_huge_logits(device, dtype):
    x_host = np.array([[1000.0, 0.0, -1000.0], [999.0, 1000.0, 1000.0]])
    y = F.log_softmax(leaf(x_host, device, dtype))
    assert np.isfinite(to_host(y.data)).all()
    assert_matches(y, log_softmax_loops(x_host), dtype)


def cross_entropy_loops(logits, labels):
    """Mean over the rows of -log softmax(logits)[n, labels[n]], and its gradient (softmax - one_hot) / N."""
    logp = log_softmax_loops(logits)
    n_rows = logits.shape[0]
    loss = 0.0
    grad = np.exp(logp) / n_rows
    for n in range(n_rows):
        loss -= logp[n, labels[n]] / n_rows
        grad[n, labels[n]] -= 1 / n_rows
    return loss, grad


@pytest.mark.parametrize("label_kind", ["list", "numpy", "tensor"])
def test_cross_entropy_and_its_gradient_match_the_loops(label_kind, device, dtype):
    logits_host = host((5, 4), 23) * 2
    labels = [3, 0, 0, 2, 1]
    given = {
        "list": labels,
        "numpy": np.array(labels),
        "tensor": mg.tensor(labels, device=device),
    }[label_kind]
    logits = leaf(logits_host, device, dtype)
    loss = F.cross_entropy(logits, given)
    loss_ref, grad_ref = cross_entropy_loops(as_ref(logits_host, dtype), labels)
    assert loss.shape == ()
    assert_matches(loss, loss_ref, dtype)
    loss.backward()
    assert_matches(logits.grad, grad_ref, dtype)


def test_cross_entropy_is_stable_for_huge_logits(device, dtype):
    logits_host = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]])
    labels = [0, 2]
    loss = F.cross_entropy(leaf(logits_host, device, dtype), labels)
    loss_ref, _ = cross_entropy_loops(logits_host, labels)
    assert math.isfinite(loss.item())
    assert_matches(loss, loss_ref, dtype)


@pytest.mark.parametrize("bad", [[0, 5, 1], [-1, 0, 1]])
def test_cross_entropy_labels_out_of_range_name_the_range(bad, device):
    logits = mg.tensor(np.zeros((3, 5), np.float32), device=device)
    with pytest.raises(ValueError, match=rf"labels must be in \[0, 5\), found values in \[{min(bad)}, {max(bad)}\]"):
        F.cross_entropy(logits, bad)


def test_cross_entropy_refuses_float_labels(device):
    logits = mg.tensor(np.zeros((2, 3), np.float32), device=device)
    with pytest.raises(TypeError, match="labels must be integers, got float"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))


def test_cross_entropy_of_an_empty_batch_says_so():
    with pytest.raises(ValueError, match="the batch is empty"):
        F.cross_entropy(mg.tensor(np.zeros((0, 4), np.float32)), np.zeros(0, np.int64))


def test_cross_entropy_needs_one_label_per_row():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(2,\)"):
        F.cross_entropy(mg.tensor(np.zeros((3, 4), np.float32)), [0, 1])
