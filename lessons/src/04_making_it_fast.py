# %% [markdown]
# # Lesson 4: Making it fast
#
# Lesson 3's loops are correct and hopelessly slow; `F.conv2d` computes the same numbers thousands of times
# faster. This lesson measures where the time goes and what removes it, on this machine, in cells you can
# rerun: the Python interpreter, NumPy's array operations, code compiled by **Numba**, and finally the matrix
# product (GEMM) whose speed bounds everything else. Every number in the figures is measured when the notebook
# runs; the prose never quotes one.
#
# **Goals**
#
# 1. why a Python loop is slow, and two ways out: whole-array NumPy operations, and compiling the loop;
# 2. write an `@njit` im2col: equal to the library's, and at least 5x faster than the Python loop;
# 3. what compiling costs (the first call) and how the library avoids paying it every time;
# 4. the ceiling: measure the GEMM's GFLOP/s, and how close each convolution layer gets to it;
# 5. why the CPU path unfolds a few images at a time, and the tricks inside its kernels.

# %%
import time

import matplotlib.pyplot as plt
import numba
import numpy as np
from lesson_checks import lesson04, report_runtime, start_clock

import minigrad as mg
import minigrad.functional as F
from minigrad.kernels import im2col, im2col_generic, output_size, window_view
from minigrad.kernels.conv_cpu import CPU_COLS_BYTES

start_clock()
mg.manual_seed(0)
best_time = lesson04.best_time  # the fastest of a few calls, in seconds

# %% [markdown]
# ## 1. The Python loop
#
# The most direct im2col walks over the window positions and copies one window per step. Each step is a few
# Python bytecodes (a slice, a copy), and each costs far more than the few bytes it moves: the interpreter
# looks up names, checks types and builds slice objects every time.


# %%
def im2col_loop(x, kh, kw, stride, pad):
    """cols[c, i, j, n, p, q] = xpad[n, c, p*stride + i, q*stride + j]; one window copied per step."""
    n_img, n_ch, height, width = x.shape
    oh, ow = output_size(height, kh, stride, pad), output_size(width, kw, stride, pad)
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n_ch, kh, kw, n_img, oh, ow), dtype=x.dtype)
    for n in range(n_img):
        for p in range(oh):
            for q in range(ow):
                cols[:, :, :, n, p, q] = xpad[n, :, p * stride : p * stride + kh, q * stride : q * stride + kw]
    return cols


x = np.random.default_rng(0).standard_normal(lesson04.SPEED_INPUT).astype(np.float32)  # (4, 16, 16, 16)
np.testing.assert_array_equal(im2col_loop(x, 3, 3, 1, 1), im2col(x, 3, 3, 1, 1))
t_loop = best_time(im2col_loop, x, 3, 3, 1, 1, repeat=3)
print(f"Python loop: {t_loop * 1e3:.2f} ms for {x.shape[0] * 16 * 16} windows")

# %% [markdown]
# **Whole-array operations.** The library's plain version, `im2col_generic`, has no Python loop at all: it
# builds a strided **view** of every window of the padded input (nothing is copied; `window_view`), and copies
# that view into the columns in ONE NumPy operation, whose loops run in compiled C. The same code runs on a
# GPU with CuPy, where one operation is one kernel launch (lesson 10).

# %%
xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
view = window_view(xpad, 3, 3, 1, 1, 16, 16)
print("view shape (C, KH, KW, N, OH, OW):", view.shape, "| shares x's memory:", np.shares_memory(view, xpad))
assert np.shares_memory(view, xpad)
np.testing.assert_array_equal(im2col_generic(x, 3, 3, 1, 1), im2col_loop(x, 3, 3, 1, 1))
t_generic = best_time(im2col_generic, x, 3, 3, 1, 1, repeat=20)
print(f"generic (one NumPy copy of a strided view): {t_generic * 1e3:.3f} ms")

# %% [markdown]
# ## 2. Compiling the loop: Numba
#
# `numba.njit` compiles a Python function to machine code the first time it is called, for the types of that
# call's arguments. Inside, only what Numba can type is allowed: NumPy arrays, numbers, loops, `range`, most
# of NumPy's functions. In exchange, a loop over single elements runs as fast as the same loop in C, so the
# clearest loop is also the fast one: no need to express the work as whole-array operations.
#
# **Exercise.** Write `im2col_numba(x, kh, kw, stride, pad)`: allocate `cols` with `np.zeros` (the padding's
# entries stay 0) in `x`'s dtype, then loop over `c, i, j, n, p, q` and copy `x[n, c, y, z]` with
# `y = p*stride + i - pad`, `z = q*stride + j - pad` whenever `(y, z)` is inside the image. Put `q` in the
# innermost loop: it walks along a row of `cols` and of `x`, so consecutive steps touch neighbouring memory.


# %% [exercise]
@numba.njit
def im2col_numba(x, kh, kw, stride, pad):
    """x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW), compiled by Numba; zero padding of `pad` on each side."""
    # BEGIN SOLUTION
    n_img, n_ch, height, width = x.shape
    oh = (height + 2 * pad - kh) // stride + 1
    ow = (width + 2 * pad - kw) // stride + 1
    cols = np.zeros((n_ch, kh, kw, n_img, oh, ow), dtype=x.dtype)
    for c in range(n_ch):
        for i in range(kh):
            for j in range(kw):
                for n in range(n_img):
                    for p in range(oh):
                        y = p * stride + i - pad
                        if y < 0 or y >= height:
                            continue
                        for q in range(ow):
                            z = q * stride + j - pad
                            if 0 <= z < width:
                                cols[c, i, j, n, p, q] = x[n, c, y, z]
    return cols
    # END SOLUTION


# %% [check]
lesson04.check_im2col_equal(im2col_numba)
lesson04.check_im2col_speed(im2col_numba)

# %% [markdown]
# ## 3. What compiling costs
#
# The first call pays for the compilation. `numba.njit(im2col_numba.py_func)` makes a fresh, uncompiled copy
# of your function, so we can time a first call against the calls after it. The library's kernels are
# compiled with `cache=True`: the machine code is stored in `__pycache__` and later processes load it instead
# of compiling again (a compile prints a one-line notice, so a first run does not look hung).

# %%
fresh = numba.njit(im2col_numba.py_func)
start = time.perf_counter()
fresh(x, 3, 3, 1, 1)
t_first = time.perf_counter() - start
t_numba = best_time(fresh, x, 3, 3, 1, 1, repeat=20)
t_library = best_time(im2col, x, 3, 3, 1, 1, repeat=20)
t_interpreted = best_time(im2col_numba.py_func, x, 3, 3, 1, 1, repeat=1)  # your loops, run by Python
print(f"your loops, interpreted: {t_interpreted * 1e3:.0f} ms per call")
print(f"your Numba im2col: first call {t_first * 1e3:.0f} ms (compiling), then {t_numba * 1e3:.3f} ms per call")
print(f"library im2col: {t_library * 1e3:.3f} ms per call")
assert t_first > t_numba  # the first call includes the compilation
assert t_interpreted > t_numba  # the same code, compiled

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
names = [
    "your loops,\ninterpreted",
    "Python loop\nper window",
    "generic\n(view copy)",
    "your\nim2col_numba",
    "library\nim2col",
]
times_ms = np.array([t_interpreted, t_loop, t_generic, t_numba, t_library]) * 1e3
bars = axes[0].bar(names, times_ms, color=["C3", "C5", "C1", "C2", "C0"])
axes[0].bar_label(bars, [f"{t:.3g} ms" for t in times_ms], fontsize=8)
axes[0].set(yscale="log", ylabel="time per call (ms, log scale)", title=f"im2col of {x.shape}, 3x3, pad 1")
bars = axes[1].bar(["first call\n(compiles)", "later calls"], [t_first * 1e3, t_numba * 1e3], color=["C4", "C2"])
axes[1].bar_label(bars, [f"{t_first * 1e3:.0f} ms", f"{t_numba * 1e3:.3f} ms"], fontsize=8)
axes[1].set(yscale="log", ylabel="ms (log scale)", title="your im2col_numba: the cost of compiling")
plt.tight_layout()
plt.show()

# %% [markdown]
# The library's im2col is a compiled loop too, with two tricks yours lacks: it runs in parallel over the
# channels (`prange`), and it copies whole runs of a row as slices, which compile to vectorised memory copies.
# For a stride `s > 1` a row of `cols` takes every s-th value of an input row, a slow gather; but every s-th
# value starting at `j` is the same as **phase** `j % s` of the row (the values `j % s, j % s + s, ...`) read
# from index `j // s` on, a contiguous slice. So the kernel splits each padded input row into its stride phases
# once, then copies only slices:

# %%
row = np.arange(31, dtype=np.float32)  # an input row 31 wide, a kernel 11 wide, stride 4 (conv1's)
stride, k = 4, 11
n_out = output_size(31, k, stride, 0)
phases = [row[r::stride] for r in range(stride)]  # phase r: row[r], row[r + 4], row[r + 8], ...
for j in range(k):  # column j of every window: row[j], row[j + 4], ..., one per window position
    gathered = row[j : j + stride * (n_out - 1) + 1 : stride]
    np.testing.assert_array_equal(gathered, phases[j % stride][j // stride : j // stride + n_out])
print(f"{k} kernel columns x {n_out} positions: every strided gather is a slice of one of {stride} phases")

# %% [markdown]
# ## 4. The ceiling: how fast is a matrix product here?
#
# A convolution is im2col and a GEMM, and the GEMM does nearly all the arithmetic: 2 FLOPs (a multiply and an
# add) per weight, per input channel and kernel offset, per output pixel. The GEMM of an optimised BLAS
# (OpenBLAS under NumPy) runs close to the processor's peak, so its speed on a large square product is the
# **ceiling** for a convolution on this machine. Let's measure it in float32, then time each of the paper's
# convolutions (forward and backward, the shapes of AlexNet with a small batch) in GFLOP/s against it.

# %%
a = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)
t_gemm = best_time(np.matmul, a, a, repeat=5)
ceiling = 2 * 1024**3 / t_gemm / 1e9
print(f"float32 GEMM 1024 x 1024 x 1024: {t_gemm * 1e3:.1f} ms, {ceiling:.0f} GFLOP/s: the ceiling")

# name: (batch, in channels, size, out channels, kernel, stride, padding, groups), as in the paper's net
layers = {
    "conv1": (2, 3, 227, 96, 11, 4, 0, 1),
    "conv2": (4, 96, 27, 256, 5, 1, 2, 2),
    "conv3": (4, 256, 13, 384, 3, 1, 1, 1),
    "conv4": (4, 384, 13, 384, 3, 1, 1, 2),
    "conv5": (4, 384, 13, 256, 3, 1, 1, 2),
}
rates = {}
for name, (n, c, size, o, kk, s, p, g) in layers.items():
    xl = mg.randn((n, c, size, size), requires_grad=True)
    wl = mg.randn((o, c // g, kk, kk), requires_grad=True)

    def forward_backward(xl=xl, wl=wl, s=s, p=p, g=g):
        y = F.conv2d(xl, wl, stride=s, padding=p, groups=g)
        y.backward(mg.ones(y.shape))

    oh = output_size(size, kk, s, p)
    flops = 3 * 2 * n * o * oh * oh * (c // g) * kk * kk  # forward, and the two products of the backward
    rates[name] = flops / best_time(forward_backward, repeat=3) / 1e9
    print(f"{name}: {flops / 1e9:.2f} GFLOP forward + backward, {rates[name]:.0f} GFLOP/s")
assert all(0 < r < 2 * ceiling for r in rates.values())  # measured, so only sanity: below twice the ceiling

fig, ax = plt.subplots(figsize=(7, 3.4))
bars = ax.bar(list(rates), list(rates.values()), color="C0")
ax.bar_label(bars, [f"{r / ceiling:.0%}" for r in rates.values()], fontsize=8)
ax.axhline(ceiling, color="C3", ls="--", label=f"GEMM ceiling, measured ({ceiling:.0f} GFLOP/s)")
ax.set(ylabel="GFLOP/s", title="F.conv2d forward + backward on this machine (labels: share of the ceiling)")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# What keeps a layer below the ceiling is everything that is not the GEMM: im2col and col2im move memory
# without arithmetic, and small products (conv3-conv5 have 13x13 outputs) do not keep all of the BLAS busy.
#
# ## 5. Why the CPU path unfolds a few images at a time
#
# On a GPU `F.conv2d` unfolds the whole batch into one matrix and multiplies it once. On a CPU the columns of a
# whole batch are large (count them below for the paper's conv2 at batch 32): im2col writes them out to main
# memory and the GEMM reads them back, and main memory is much slower than the caches. So the CPU path
# (`minigrad/kernels/conv_cpu.py`) unfolds a chunk of a few images into one reused buffer that stays in the
# cache, multiplies it at once, and moves on; the backward pass unfolds each chunk again rather than keep them
# all. Let's compare the two schedules by hand, im2col + GEMM, the whole batch against chunks of the size the
# library picks (`CPU_COLS_BYTES` of columns):

# %%
n, c, size, o, kk, p = 32, 48, 27, 128, 5, 2  # one group of the paper's conv2 (96 -> 256 channels, groups 2)
xb = np.random.default_rng(2).standard_normal((n, c, size, size)).astype(np.float32)
wb = np.random.default_rng(3).standard_normal((o, c * kk * kk)).astype(np.float32)
length = size * size
cols_bytes = c * kk * kk * n * length * 4
print(f"columns of the whole batch: {cols_bytes / 2**20:.0f} MB; the CPU path's chunk: {CPU_COLS_BYTES / 2**20:.0f} MB")
assert cols_bytes == 1200 * 32 * 729 * 4 and cols_bytes > 6 * CPU_COLS_BYTES


def whole_batch():
    cols = im2col(xb, kk, kk, 1, p).reshape(c * kk * kk, n * length)
    return wb @ cols  # (O, N*L)


step = CPU_COLS_BYTES // (c * kk * kk * length * 4)  # images per chunk, by the library's rule
buffer = np.empty((c, kk, kk, step, size, size), dtype=np.float32)
assert n % step == 0  # every chunk fills the buffer


def in_chunks():
    out = np.empty((o, n, length), dtype=np.float32)
    for n0 in range(0, n, step):
        cols = im2col(xb[n0 : n0 + step], kk, kk, 1, p, out=buffer).reshape(c * kk * kk, step * length)
        out[:, n0 : n0 + step] = (wb @ cols).reshape(o, step, length)
    return out.reshape(o, n * length)


np.testing.assert_allclose(in_chunks(), whole_batch(), rtol=1e-4, atol=1e-3)
t_whole, t_chunks = best_time(whole_batch, repeat=3), best_time(in_chunks, repeat=3)
print(f"whole batch: {t_whole * 1e3:.0f} ms | chunks of {step} images: {t_chunks * 1e3:.0f} ms (measured here)")
assert t_whole > 0 and t_chunks > 0

# %% [markdown]
# Which schedule wins depends on the machine's caches and memory bandwidth (and on what else runs on it),
# which is why the chunk size (`CPU_COLS_BYTES` in `conv_cpu.py`) is a constant chosen by measurement with
# `benchmarks/layers.py`, not a law. Two more things the CPU path does, both visible in `conv_cpu.py`: the bias
# rides inside the product as one more row of ones in the columns (no separate pass over the output), and for
# conv1, whose output planes are large, each core takes whole images with a one-thread BLAS
# (`split_over_cores`) instead of splitting every product across the cores.
#
# **Why the import order does not matter.** On a machine with few cores, a BLAS's idle threads spin for a
# while after each product before they sleep, taking the core the next kernel needs. minigrad's ops never wake
# them: every product runs split over minigrad's own threads with a one-thread BLAS, and the Numba kernels are
# serial loops whose ranges run on the same threads (`minigrad/kernels/cpu_threads.py`). So NumPy may be
# imported before or after minigrad, and no environment variable needs setting.
#
# ## Where this lives in the library
#
# - `minigrad/kernels/im2col.py`: `im2col_generic` and `col2im_generic` (the plain versions), `window_view`,
#   the Numba kernels (`im2col_kernel`, `split_phases_kernel`, `col2im_kernel`, ...), `im2col` / `col2im`,
#   which pick one, and `ChunkedIm2col`, which unfolds an input block by block.
# - `minigrad/kernels/dispatch.py`: `fastest`, `force_generic`, the compile notice, the only `import numba`.
# - `minigrad/kernels/conv_cpu.py`: `ChunkedConv2d`, the CPU-tuned convolution (`CPU_COLS_BYTES`), equal to
#   the plain `Conv2d` of `minigrad/functional/conv.py` (tested in `tests/test_layers_reference.py`).
# - `minigrad/kernels/cpu_threads.py`: `split_over_cores`; `benchmarks/layers.py`: every layer against the GEMM
#   ceiling, with results in `benchmarks/README.md`.
#
# ## Further exercises
#
# 1. Make your `im2col_numba` parallel: `numba.njit(parallel=True)` and `numba.prange` over the channels. Why
#    is it safe to split over channels (who writes where)?
# 2. Write `col2im_numba` (the adjoint: `+=` instead of `=`) and check it against the library's `col2im`. Why
#    would splitting it over output positions instead of channels give wrong answers?
# 3. Rerun section 5 with chunks of 1, 4 and 8 images and plot the time against the chunk's megabytes.

# %%
report_runtime()
