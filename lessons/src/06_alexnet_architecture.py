# ruff: noqa: E402
# %% [markdown]
# # Lesson 6: The whole AlexNet: shapes, parameters, FLOPs and memory
#
# Lessons 1-5 built every piece: autograd, linear layers and the loss, convolution, max-pooling, LRN and
# dropout. This lesson puts them together into the network of Krizhevsky, Sutskever and Hinton, *ImageNet
# Classification with Deep Convolutional Neural Networks* (NeurIPS 2012), and counts what it costs.
#
# **Goals**
#
# 1. follow an image through the network, layer by layer, and see why the paper's 224x224 input has to be
#    227x227;
# 2. count the parameters by hand, for the paper's network (60,965,224) and for every smaller variant: you
#    write `count_parameters`, and it must agree with `num_parameters()` of the built model;
# 3. see where the parameters are (the fully connected layers) and where the arithmetic is (the convolutions);
# 4. estimate the memory that training needs, and why the paper split the network over two 3 GB GPUs.

# %%
import minigrad as mg  # first: it sets the BLAS thread settings before NumPy loads its BLAS

# isort: split
import lesson_checks

lesson_checks.start_clock()

import matplotlib.pyplot as plt
import numpy as np

from alexnet.model import PAPER, AlexNetConfig, build_model, format_summary, summarize

mg.manual_seed(0)

# %% [markdown]
# ## 1. 224 or 227?
#
# A convolution slides a `k x k` kernel over an input of `n x n` pixels (after adding `p` pixels of zero padding
# on each side) in steps of `s`. The kernel's left edge can sit at 0, s, 2s, ... as long as the kernel still
# fits, that is up to `n + 2p - k`. So the number of positions is
#
# out = (n + 2p - k) / s + 1,
#
# and it has to be a whole number, or the last column of the input is never covered. The paper says the
# input is 224x224x3 and conv1 has 96 kernels of 11x11 with stride 4, no padding:


# %%
def out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> float:
    """Positions of a kernel along one axis: (size + 2 * padding - kernel) / stride + 1 (not rounded)."""
    return (size + 2 * padding - kernel) / stride + 1


print("224 pixels:", out_size(224, 11, 4), "| 227 pixels:", out_size(227, 11, 4))
assert out_size(224, 11, 4) == 54.25 and out_size(227, 11, 4) == 55

# %% [markdown]
# With 224 pixels conv1 would not fit a whole number of times. With 227 it fits exactly 55 times, and 55 is the
# size the paper's Fig. 2 draws for conv1's output. So the network really takes 227x227 crops (Caffe's
# reference model does the same); other reimplementations keep 224 and pad conv1 by 2, which floors
# (224 + 4 - 11) / 4 + 1 = 55.25 to 55 and drops the last column.
#
# The rest of the network, with `ConvSpec` rows as `alexnet.model.PAPER` stores them: every conv is
# followed by a ReLU; conv1 and conv2 by LRN; conv1, conv2 and conv5 by an overlapping 3x3 max-pool with
# stride 2. "grouped" is the paper's two-GPU split (section 2 below).

# %%
for i, spec in enumerate(PAPER.convs, start=1):
    print(f"conv{i}: {spec}")
print(
    f"fc6, fc7: {PAPER.fc_width} units; fc8: {PAPER.num_classes}; max-pool {PAPER.pool_kernel}x{PAPER.pool_kernel}"
    f" stride {PAPER.pool_stride}; {PAPER.groups} groups"
)
assert len(PAPER.convs) == 5 and PAPER.image_size == 227

# %% [markdown]
# Walk one image through it with `out_size`, then let the library build the network and compare: `summarize`
# runs a zero image through `build_model("alexnet")` and records every layer's output shape, parameters and
# FLOPs.


# %%
def shape_walk(config: AlexNetConfig) -> list[tuple[str, tuple[int, int, int]]]:
    """(layer, output shape) after each conv and each max-pool, from the config alone."""
    channels, size, shapes = config.in_channels, config.image_size, []
    for i, spec in enumerate(config.convs, start=1):
        size = int(out_size(size, spec.kernel, spec.stride, spec.padding))  # int(): whole positions only
        channels = spec.channels
        shapes.append((f"conv{i}", (channels, size, size)))
        if spec.pool:
            size = int(out_size(size, config.pool_kernel, config.pool_stride))
            shapes.append(("maxpool", (channels, size, size)))
    return shapes


alexnet = build_model("alexnet")  # a few seconds: 61 million random weights
rows = summarize(alexnet)
library = [(r.name, r.output_shape) for r in rows if r.name.startswith("conv") or r.name == "maxpool"]
for (name, ours), (_, theirs) in zip(shape_walk(PAPER), library):
    print(f"{name:8} by hand {'x'.join(map(str, ours)):>10} | summarize {'x'.join(map(str, theirs)):>10}")
assert shape_walk(PAPER) == library

# %% [markdown]
# The library's whole table (`alexnet summary --model alexnet` prints the same):

# %%
print(format_summary(alexnet))
assert alexnet.num_parameters() == 60_965_224

# %% [markdown]
# ### The paper's neuron counts
#
# The caption of the paper's Fig. 2 says: "The network's input is 150,528-dimensional, and the number of
# neurons in the network's remaining layers is given by 253,440-186,624-64,896-64,896-43,264-4096-4096-1000."
# 150,528 is 224 x 224 x 3. Our counts, the outputs of the eight layers with weights:

# %%
paper_neurons = [253_440, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
weighted = [r for r in rows if r.name.startswith(("conv", "fc"))]
ours = [int(np.prod(r.output_shape)) for r in weighted]
for r, n, p in zip(weighted, ours, paper_neurons):
    print(f"{r.name:6} {'x'.join(map(str, r.output_shape)):>10} = {n:>8,} neurons | paper {p:>8,}")
print(f"input: 227 x 227 x 3 = {227 * 227 * 3:,} (paper: 224 x 224 x 3 = {224 * 224 * 3:,})")
print(f"all eight layers: {sum(ours):,} neurons (the abstract: 650,000)")
assert ours[1:] == paper_neurons[1:] and ours[0] == 96 * 55 * 55 == 290_400
assert paper_neurons[0] == 96 * 55 * 48 and sum(ours) == 659_272

# %% [markdown]
# Every count but the first agrees. The caption's 253,440 equals 96 x 55 x 48 rather than 96 x 55 x 55; we do
# not know where it comes from, and the 55x55 maps follow from the arithmetic above. The total, 659,272, is
# the abstract's "650,000 neurons".
#
# ## 2. Counting parameters by hand
#
# A layer's parameters are its weights and its biases.
#
# - **Fully connected** (`Linear(n_in, n_out)`): a weight per (input, output) pair and a bias per output:
#   `n_in * n_out + n_out`.
# - **Convolution** with `C_in` input channels, `C_out` kernels of `k x k`: every kernel spans all input
#   channels, so `C_out * C_in * k * k + C_out`.
# - **Grouped convolution** (`groups = G`): the channels are cut into G groups, and each group's `C_out / G`
#   kernels see only that group's `C_in / G` input channels. That is G blocks of
#   `(C_out / G) * (C_in / G) * k * k` weights: `C_out * (C_in / G) * k * k` in all, G times fewer than
#   without groups. The biases stay `C_out`.
#
# Example, conv2 of the paper: 256 kernels of 5x5 over conv1's 96 channels in 2 groups:
# 256 * 48 * 25 + 256 = 307,456 (the table above says so too).
#
# Max-pooling, ReLU, LRN and dropout have no parameters. fc6 sees the last pooling's output flattened,
# 256 x 6 x 6 = 9,216 numbers: `9216 * 4096 + 4096` = 37,752,832 parameters, more than half of the network.

# %%
conv2 = alexnet.conv_layers[1]
print("conv2 weight:", conv2.weight.shape, "bias:", conv2.bias.shape, "groups:", conv2.groups)
assert conv2.weight.shape == (256, 48, 5, 5) and conv2.num_parameters() == 256 * 48 * 25 + 256 == 307_456
assert alexnet.fc6.num_parameters() == 9216 * 4096 + 4096 == 37_752_832

# %% [markdown]
# **Exercise.** Write `count_parameters(config)`: the number of parameters of `AlexNet(config)`, computed from
# the config alone (no model built). It has to work for every member of the family: the paper's network,
# `alexnet-small` (colour 64x64), `alexnet-tiny` (grey 28x28), and each of them with other `groups`, without
# overlapping pools (`overlap=False`: 2x2 pools with stride 2) or with other widths. The config's fields
# are in the docstring; `shape_walk` above shows how to follow the spatial size.


# %% [exercise]
def count_parameters(config: AlexNetConfig) -> int:
    """Weights and biases of AlexNet(config), counted from the config.

    config.in_channels, config.image_size: the input (in_channels x image_size x image_size).
    config.convs: one ConvSpec per conv block: .channels, .kernel, .stride, .padding, .grouped (split into
        config.groups groups), .pool (followed by a max-pool of config.pool_kernel, stride config.pool_stride).
    config.fc_width: the width of fc6 and fc7; config.num_classes: fc8's outputs.
    """
    # BEGIN SOLUTION
    channels, size, total = config.in_channels, config.image_size, 0
    for spec in config.convs:
        groups = config.groups if spec.grouped else 1
        total += spec.channels * (channels // groups) * spec.kernel * spec.kernel + spec.channels
        size = int(out_size(size, spec.kernel, spec.stride, spec.padding))
        if spec.pool:
            size = int(out_size(size, config.pool_kernel, config.pool_stride))
        channels = spec.channels
    flat = channels * size * size  # fc6's inputs: the last feature maps, flattened
    fc_layers = [(flat, config.fc_width), (config.fc_width, config.fc_width), (config.fc_width, config.num_classes)]
    for n_in, n_out in fc_layers:
        total += n_in * n_out + n_out
    return total
    # END SOLUTION


# %% [check]
from lesson_checks.lesson06 import check_count_parameters

check_count_parameters(count_parameters)

# %% [markdown]
# ## 3. Where the parameters are, and where the arithmetic is
#
# A convolution reuses each weight at every output position; a fully connected layer uses each weight once
# per image. So the two kinds of layer trade places depending on what we count. `summarize` counts the
# forward FLOPs of one image: a conv output costs `2 * (C_in / G) * k * k` (a multiply and an add per weight
# it sees) plus one for the bias; an FC output `2 * n_in` plus one.

# %%
conv1 = rows[0]
assert conv1.flops == 2 * 96 * 55 * 55 * 3 * 11 * 11 + 96 * 55 * 55
total_params = sum(r.params for r in rows)
total_flops = sum(r.flops for r in rows)
conv = [r for r in weighted if r.name.startswith("conv")]
fc = [r for r in weighted if r.name.startswith("fc")]
share = {
    "conv1-5": (sum(r.params for r in conv) / total_params, sum(r.flops for r in conv) / total_flops),
    "fc6-8": (sum(r.params for r in fc) / total_params, sum(r.flops for r in fc) / total_flops),
}
for name, (p, f) in share.items():
    print(f"{name}: {p:6.1%} of the parameters, {f:6.1%} of the forward FLOPs")
print(f"forward pass: {total_flops / 1e9:.3f} GFLOP per image")
assert share["fc6-8"][0] > 0.95 and share["conv1-5"][1] > 0.9

# %%
names = [r.name for r in weighted]
x = np.arange(len(names))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
ax1.bar(x - 0.2, [r.params / total_params * 100 for r in weighted], 0.4, label="parameters")
ax1.bar(x + 0.2, [r.flops / total_flops * 100 for r in weighted], 0.4, label="forward FLOPs")
ax1.set_xticks(x, names)
ax1.set_ylabel("% of the network's total")
ax1.set_title("AlexNet: parameters vs FLOPs per layer")
ax1.legend()
ax2.bar(x - 0.2, [r.params / 1e6 for r in weighted], 0.4, label="parameters (millions)")
ax2.bar(x + 0.2, [r.flops / 1e6 for r in weighted], 0.4, label="forward MFLOPs per image")
ax2.set_xticks(x, names)
ax2.set_yscale("log")
ax2.set_title("the same, absolute (log scale)")
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# fc6 alone holds 62% of the parameters and does 5% of the arithmetic; conv2 does the most arithmetic with
# half a percent of the parameters. Two consequences the rest of the course meets: the fully connected
# layers are where the network can overfit (hence dropout on fc6 and fc7, lesson 5), and the time of a
# training step is mostly the convolutions' matrix products (lesson 4).
#
# ## 4. Memory, and why two 3 GB GPUs
#
# What one GPU must hold while it trains with a batch of 128, in float32 (4 bytes a number):
#
# - the weights, their gradients, and the momentum (the velocity of the SGD rule, lesson 7): three numbers per
#   parameter;
# - every layer's output for the whole batch, kept by the forward pass for the backward pass
#   (`summarize`'s `activation_bytes` is one image's);
# - working buffers: in an im2col convolution (lesson 3) the unfolded input of conv1 alone is
#   `3 * 11 * 11` rows by `55 * 55` columns per image.

# %%
batch = 128
bytes_per_number = 4
weights = total_params * bytes_per_number
activations = sum(r.activation_bytes for r in rows) * batch
columns = 3 * 11 * 11 * 55 * 55 * bytes_per_number * batch
memory = {
    "weights": weights,
    "gradients": weights,
    "momentum": weights,
    "layer outputs, batch 128": activations,
    "conv1 im2col columns, batch 128": columns,
}
for name, size in memory.items():
    print(f"{name:32} {size / 1e9:6.2f} GB")
needed = sum(memory.values())
print(f"{'total':32} {needed / 1e9:6.2f} GB (before the backward pass's gradients of the layer outputs)")
assert weights == 60_965_224 * 4 and abs(activations - 128 * 7556.4 * 1024) < 128 * 1024
assert 2.2e9 < needed < 2.4e9

# %% [markdown]
# About 2.3 GB before the backward pass has allocated anything, against the 3 GB of one GTX 580, the card the
# paper trained on. The backward pass needs a gradient for each layer output on top, and the authors' own
# code had its own buffers. The paper's own words (section 3.2): a single GTX 580 "has only 3GB of memory,
# which limits the maximum size of the networks that can be trained on it", so they spread the net across
# two GPUs: each holds half of every layer's kernels (and half of its outputs), and the GPUs exchange
# activations only in certain layers. Those are the "grouped" convs: conv2, conv4 and conv5 see only the
# channels on their own GPU (`groups=2`), while conv3 and the fully connected layers read both halves. A side
# effect: grouping halves those three layers' weights (`groups=1` below has 1.4 million more parameters).

# %%
ungrouped = count_parameters(PAPER.with_options(groups=1))
print(f"groups=2: {count_parameters(PAPER):,} parameters | groups=1: {ungrouped:,}")
assert ungrouped - count_parameters(PAPER) == 256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9 == 1_413_120

# %% [markdown]
# ### How long did it train?
#
# A training step multiplies three times as many matrices as the forward pass: the forward product, and in the
# backward pass one for the weights' gradient and one for the input's (conv1's input is the data, which needs
# no gradient). The paper trained "for roughly 90 cycles through the training set of 1.2 million images, which
# took five to six days on two NVIDIA GTX 580 3GB GPUs". A GTX 580 has 512 cores at 1.544 GHz, each finishing
# one multiply-add (2 FLOPs) per cycle: about 1.58 TFLOP/s of float32 at most.

# %%
gemm_flops = sum(r.flops for r in weighted)
train_flops_per_image = 3 * gemm_flops - conv1.flops  # no input gradient for conv1
total_train_flops = 90 * 1.2e6 * train_flops_per_image
peak = 2 * 512 * 1.544e9 * 2  # two GPUs, FLOP/s
for days in (5, 6):
    rate = total_train_flops / (days * 86400)
    print(f"{days} days: {rate / 1e12:.2f} TFLOP/s sustained = {rate / peak:.0%} of the two GPUs' peak")
print(f"one training image: {train_flops_per_image / 1e9:.2f} GFLOP; the whole run: {total_train_flops:.2e} FLOP")
assert 4.1e9 < train_flops_per_image < 4.2e9 and 0.25 < total_train_flops / (6 * 86400) / peak < 0.35

# %% [markdown]
# About a third of the peak, sustained for five to six days: the paper's hand-written GPU code mattered as much
# as its ideas.
#
# ## Where this lives in the library
#
# - `alexnet/model.py`: `ConvSpec` and `AlexNetConfig` (the family's description), `PAPER`, `SMALL`, `TINY` and
#   `CONFIGS`; `AlexNetConfig.with_options` (the switches `lrn`, `groups`, `overlap`, `width`, `activation`);
#   `AlexNet` (builds `features` and `classifier` from a config), `build_model`, and `summarize` /
#   `format_summary` (the table above, per image: output shape, parameters, FLOPs, activation bytes).
# - `alexnet/cli.py`: `alexnet summary --model alexnet` prints `format_summary`.
# - `minigrad/nn.py`: `Module.num_parameters`, `Conv2d` (its `groups`), `Linear`.
#
# ## Further exercises
#
# 1. Extend `count_parameters` into `count_flops(config)` that gives `summarize`'s FLOPs of the conv and FC
#    layers, and check it on the three variants.
# 2. The paper's Fig. 2 draws conv1 as two stacks of 48 kernels. Build `build_model("alexnet", groups=1)` and
#    `build_model("alexnet", width=0.5, groups=1)`: which one is the "half as many kernels on one GPU" network
#    the paper compares against in section 3.2, and how many parameters does it have?
# 3. Recompute the memory estimate for batch 256 and for float16 numbers. Which term grows with the batch,
#    and which does not?

# %%
lesson_checks.report_runtime()
