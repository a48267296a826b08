# ruff: noqa: E402
# %% [markdown]
# # Lesson 9: What the network learned
#
# Section 6.1 of the paper looks inside the trained network in two ways. Fig. 3 shows the 96 kernels of the
# first layer: oriented edges, gratings and colour blobs, learned from raw pixels. Fig. 4 shows test images
# with the network's five most probable classes, and, for each, the training images whose last hidden
# activations (fc7, 4096 numbers) lie closest to the test image's: images the network considers similar, even
# when their pixels are not.
#
# We do both with a trained `alexnet-tiny` that ships in the package, and measure what the paper shows by eye:
# fc7 neighbours share their class more often than pixel neighbours.
#
# **Goals**
#
# 1. load a trained network from a checkpoint and check its test score;
# 2. Fig. 3: conv1's kernels before and after training;
# 3. Fig. 4: top-5 predictions, and nearest neighbours by fc7 features: you write `nearest_neighbours`,
#    equal to `alexnet.plots.nearest_neighbours`;
# 4. measure how often neighbours agree on the class, by fc7 and by pixels.

# %%
import minigrad as mg  # first: it sets the BLAS thread settings before NumPy loads its BLAS

# isort: split
import lesson_checks

lesson_checks.start_clock()

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import minigrad.functional as F
from alexnet import data, plots
from alexnet.checkpoint import load_checkpoint
from alexnet.evaluate import evaluate, predict_logits
from alexnet.train import load_model

# %% [markdown]
# ## 1. A trained network
#
# `alexnet/data/lesson_checkpoint.npz` is made by `scripts/make_lesson_checkpoint.py`: it trains
# `alexnet-tiny` with `alexnet.train.train` (the paper's SGD, the learning rate divided by 10 on a plateau) for
# 20 epochs on the Fashion-MNIST images bundled in the package (8,100 for training, 900 for validation), seeded,
# and keeps the epoch with the lowest validation error. Besides the weights it holds conv1's weights at
# initialisation and, in its meta, the model's configuration, the normalisation, the class names, the
# training settings and metrics, and the test scores. `alexnet.train.load_model` rebuilds the model from it.

# %%
CHECKPOINT = Path(data.__file__).with_name("lesson_checkpoint.npz")
model, meta = load_model(CHECKPOINT, expect_model="alexnet-tiny")
model.eval()
arrays, _ = load_checkpoint(CHECKPOINT)
mean, std = np.asarray(meta["mean"], dtype=np.float32), np.asarray(meta["std"], dtype=np.float32)
class_names = meta["class_names"]
fashion = data.load_fashion_mnist_subset()
train_images, train_labels = fashion.train.images, fashion.train.labels
test_images, test_labels = fashion.test.images, fashion.test.labels

test = evaluate(model, test_images, test_labels, 256, mean, std)
print(f"{CHECKPOINT.name}: {CHECKPOINT.stat().st_size / 1e6:.2f} MB, {model.num_parameters():,} parameters")
print(f"trained {len(meta['metrics'])} epochs, best validation error at epoch {meta['best_epoch']}")
print(f"test images: {test.count} | top-1 error {test.top1_error:.2%} | top-5 error {test.top5_error:.2%}")
print(f"recorded by the script: top-1 error {meta['test']['top1_error']:.2%}")
assert CHECKPOINT.stat().st_size <= 1_000_000 and test.count == 2000
assert abs(test.top1_error - meta["test"]["top1_error"]) <= 1 / 2000 and test.top1_error < 0.2

# %% [markdown]
# How it was trained, from the metrics stored in the checkpoint (one point per epoch):

# %%
epochs = [m["epoch"] for m in meta["metrics"]]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
ax1.plot(epochs, [m["train_loss"] for m in meta["metrics"]], "o-", label="training loss")
ax1.plot(epochs, [m["val_loss"] for m in meta["metrics"]], "o-", label="validation loss")
ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
ax1.legend()
ax2.plot(epochs, [100 * m["val_top1_error"] for m in meta["metrics"]], "o-", color="tab:orange")
ax2.axvline(meta["best_epoch"], color="0.6", linestyle=":", label="best epoch (kept)")
ax2.set(xlabel="epoch", ylabel="top-1 error (%)", title="validation error")
ax2.legend()
fig.tight_layout()
plt.show()
assert meta["metrics"][-1]["train_loss"] < meta["metrics"][0]["train_loss"]

# %% [markdown]
# ## 2. Fig. 3: the first layer's kernels
#
# The paper's Fig. 3 shows conv1's 96 kernels of 11x11x3 after training on ImageNet: the 48 of one GPU came
# out largely colour-agnostic (edges, gratings), the 48 of the other largely colour-specific (blobs), in every
# run. Our data are grey, so our conv1 kernels have one channel and cannot show colour at all; and
# `alexnet-tiny`'s conv1 has 16 kernels of 5x5. `alexnet.plots.kernel_grid_image` lays kernels out as the
# paper does, each stretched to its own darkest and brightest value.

# %%
init_conv1 = arrays["init/conv1.weight"]
trained_conv1 = model.conv_layers[0].weight.numpy()
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, weights, title in (
    (axes[0], init_conv1, "at initialisation"),
    (axes[1], trained_conv1, f"after training (epoch {meta['best_epoch']})"),
):
    ax.imshow(plots.kernel_grid_image(weights, scale=10), interpolation="nearest")
    ax.set_title(f"conv1, {title}\n{weights.shape[0]} kernels of {'x'.join(map(str, weights.shape[1:]))}")
    ax.set_axis_off()
fig.tight_layout()
plt.show()


def roughness(kernels: np.ndarray) -> float:
    """Mean |difference| between horizontally and vertically neighbouring weights, over the weights' std.
    About 2 / sqrt(pi) = 1.13 for independent random weights; smaller for smooth kernels."""
    dx = np.abs(np.diff(kernels, axis=-1)).mean()
    dy = np.abs(np.diff(kernels, axis=-2)).mean()
    return float((dx + dy) / 2 / kernels.std())


change = np.linalg.norm(trained_conv1 - init_conv1) / np.linalg.norm(init_conv1)
print(f"init std {init_conv1.std():.3f} (He: sqrt(2 / 25) = {np.sqrt(2 / 25):.3f})")
print(f"roughness: init {roughness(init_conv1):.2f} | trained {roughness(trained_conv1):.2f}")
print(f"relative change of the weights: {change:.2f}")
assert abs(init_conv1.std() - np.sqrt(2 / 25)) < 0.03 and abs(roughness(init_conv1) - 1.13) < 0.15
assert roughness(trained_conv1) < roughness(init_conv1)

# %% [markdown]
# At initialisation the kernels are noise: neighbouring weights are independent, and the roughness sits at its
# random value. Training moved them a long way (the relative change above), and made them somewhat smoother,
# some with a bright side and a dark side (crude edge detectors), but they are far from the paper's crisp
# edges, gratings and colour blobs. The setting is far from the paper's too: 16 grey kernels of 5x5, 20
# epochs over 8,100 small images, against 96 colour kernels of 11x11 and 90 epochs over 1.2 million
# photographs.
#
# ## 3. Fig. 4, left: the five most probable classes
#
# ImageNet's 1000 classes include many that are hard to tell apart, which is why the paper reports the top-5
# error next to the top-1 error. `alexnet.plots.plot_predictions` draws test images with bars for their five
# most probable classes, the true class in red (the library writes PNG files; we show the file here):

# %%
logits = predict_logits(model, test_images, 256, mean, std)
probs = F.softmax(mg.tensor(logits), axis=1).numpy()
shown = np.arange(0, 2000, 250)  # 8 test images, one from every 250
with tempfile.TemporaryDirectory() as folder:
    path = plots.plot_predictions(
        test_images[shown], probs[shown], class_names, Path(folder) / "predictions.png", labels=test_labels[shown]
    )
    display(Image(filename=str(path)))
top5 = np.argsort(-probs, axis=1)[:, :5]
print(f"true class in the top 5: {(top5 == test_labels[:, None]).any(axis=1).mean():.2%} of the test images")
assert (
    np.allclose(probs.sum(axis=1), 1, atol=1e-5) and 1 - test.top5_error == (top5 == test_labels[:, None]).any(1).mean()
)

# %% [markdown]
# ## 4. Fig. 4, right: neighbours by fc7 features
#
# The paper: "If two images produce feature activation vectors with a small Euclidean separation, we can say
# that the higher levels of the neural network consider them to be similar." The feature vector is fc7's
# output after its ReLU (4096 numbers in the paper, `fc_width` = 256 here), which
# `model.extract_features` returns (in `eval()` mode: no dropout).


# %%
def fc7_features(images: np.ndarray) -> np.ndarray:
    """fc7 activations (N, 256) of uint8 images (N, 1, 28, 28), normalised as in training."""
    features = []
    with mg.no_grad():
        for start in range(0, len(images), 1000):
            x = data.normalize(data.to_unit_float(images[start : start + 1000]), mean, std)
            features.append(model.extract_features(mg.tensor(x)).numpy())
    return np.concatenate(features)


bank_features = fc7_features(train_images)  # the bank: all 9,000 bundled training images
query_features = fc7_features(test_images)
print("fc7 features:", bank_features.shape, query_features.shape, bank_features.dtype)
print(f"zeros (ReLU): {np.mean(bank_features == 0):.0%} of the entries")
assert bank_features.shape == (9000, 256) and query_features.shape == (2000, 256)

# %% [markdown]
# The nearest neighbours of a query `q` in a bank of vectors `b_1 ... b_M` are those with the smallest
# `||q - b_j||`. Computing every difference `q - b_j` would build a (Q, M, D) array: for our 2,000 queries,
# 9,000 bank images and 256 features, 4.6 billion numbers. Expand the square instead:
#
# ||q - b||^2 = ||q||^2 - 2 q . b + ||b||^2
#
# The middle term for all pairs at once is one matrix product, `Q @ B^T` (Q x M); the other two are a column
# and a row of squared norms, added by broadcasting. Sorting a row of distances gives that query's neighbours.
#
# **Exercise.** Write `nearest_neighbours`. Use a stable sort (`np.argsort(..., kind="stable")`) so that
# equal distances keep the lower index first, as the library does. (The square root is not needed: it does
# not change the order.)


# %% [exercise]
def nearest_neighbours(query: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Indices (Q, k) of the k rows of bank (M, D) closest to each row of query (Q, D), nearest first.

    Euclidean distance; equal distances: lower index first.
    """
    # BEGIN SOLUTION
    squared = (query**2).sum(axis=1)[:, None] - 2 * query @ bank.T + (bank**2).sum(axis=1)[None, :]
    return np.argsort(squared, axis=1, kind="stable")[:, :k]
    # END SOLUTION


# %% [check]
from lesson_checks.lesson09 import check_nearest_neighbours

check_nearest_neighbours(nearest_neighbours, query_features, bank_features)

# %% [markdown]
# Now the question the paper answers by eye. For every test image, take its 5 nearest training images, once by
# fc7 features and once by raw pixels (784 grey values), and count how often a neighbour has the query's
# class. (The bank holds the images the network trained on; the queries are test images it never saw.)

# %%
k = 5
pixels = {
    name: images.reshape(len(images), -1).astype(np.float32) / 255
    for name, images in (("bank", train_images), ("query", test_images))
}
neighbours = {
    "fc7": nearest_neighbours(query_features, bank_features, k),
    "pixels": nearest_neighbours(pixels["query"], pixels["bank"], k),
}
agreement = {name: float((train_labels[index] == test_labels[:, None]).mean()) for name, index in neighbours.items()}
for name, value in agreement.items():
    print(f"neighbours by {name:6}: {value:.1%} have the query's class")
per_class = {
    name: [float((train_labels[index[test_labels == c]] == c).mean()) for c in range(10)]
    for name, index in neighbours.items()
}
print(f"\n{'class':12} {'fc7':>6} {'pixels':>7}")
for c, class_name in enumerate(class_names):
    print(f"{class_name:12} {per_class['fc7'][c]:6.1%} {per_class['pixels'][c]:7.1%}")
hardest = [class_names[c] for c in np.argsort(per_class["fc7"])[:3]]
print("hardest three by fc7:", hardest)
assert agreement["fc7"] > agreement["pixels"]
assert set(hardest) <= {"Shirt", "Pullover", "Coat", "T-shirt/top"}

# %%
queries = [0, 3, 5, 11, 17]
fig, axes = plt.subplots(len(queries), 1 + 2 * k, figsize=(14, 1.5 * len(queries) + 0.8))
for row, q in enumerate(queries):
    axes[row, 0].imshow(test_images[q, 0], cmap="gray")
    axes[row, 0].set_title(f"query: {class_names[test_labels[q]]}", fontsize=8, color="tab:blue")
    row_neighbours = [("fc7", j) for j in neighbours["fc7"][q]] + [("pixels", j) for j in neighbours["pixels"][q]]
    for col, (kind, index) in enumerate(row_neighbours):
        ax = axes[row, 1 + col]
        ax.imshow(train_images[index, 0], cmap="gray")
        same = train_labels[index] == test_labels[q]
        ax.set_title(f"{kind}: {class_names[train_labels[index]]}", fontsize=7, color="black" if same else "tab:red")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(
    f"Fig. 4, right: a test image, its {k} nearest training images by fc7 features, then by pixels"
    " (red title: another class)"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# Over all 2,000 test images the fc7 neighbours share the query's class more often (the numbers above; the
# table shows for which classes it matters most), while in a single row of the figure either kind can do
# better. The pixel neighbours look like the query pixel by pixel: the same silhouette and brightness in the
# same place, even when they are another kind of object. The fc7 neighbours can differ in outline and
# brightness and still be the same kind of object: the network has learned a space in which distance follows
# the class more than the pixels. The paper's Fig. 4 makes the same point with dogs and elephants in different
# poses. Both kinds of neighbours struggle most with the upper-body garments that look alike (the table:
# shirts, T-shirts, coats, pullovers).
#
# ## Where this lives in the library
#
# - `alexnet/plots.py`: `kernel_grid_image`, `kernel_grid_shape`, `plot_kernel_grid` (Fig. 3),
#   `plot_predictions` (Fig. 4, left), `nearest_neighbours` and `plot_nearest_neighbours` (Fig. 4, right);
#   `plot_training_curves`. `alexnet plot RUN` draws them all for a run folder.
# - `alexnet/model.py`: `AlexNet.extract_features` (fc7 after its ReLU).
# - `alexnet/runs.py`: `load_model` (a run folder or a checkpoint file; `alexnet.train` re-exports it);
#   `alexnet/checkpoint.py`: `save_checkpoint`, `load_checkpoint`; `alexnet/evaluate.py`: `evaluate`,
#   `predict_logits`, `top_k_error`.
# - `scripts/make_lesson_checkpoint.py`: how this lesson's network was trained; rerun it to retrain.
#
# ## Further exercises
#
# 1. Repeat the agreement measurement with k = 1 and k = 20, and with the features of fc6 instead of fc7
#    (run `model.classifier` up to fc6's ReLU). Which layer's features agree most?
# 2. Train `alexnet-tiny` for one epoch only (`alexnet train --epochs 1 --data bundled`), load its run folder
#    with `load_model`, and draw its conv1 kernels and its neighbour agreement. How much of the change
#    happens in the first epoch?
# 3. Find the test images the network gets most wrong (the lowest probability of the true class) and show
#    their fc7 neighbours. Are the neighbours' labels the network's wrong answer?

# %%
lesson_checks.report_runtime()
