# ruff: noqa: E402
# %% [markdown]
# # Lesson 8: Data augmentation and test-time crops
#
# AlexNet has 61 million parameters and ImageNet 1.2 million training images: left alone, the network
# memorises them (lesson 7 made a small one memorise 32 images in a few dozen steps). Section 4 of the paper
# fights this with two kinds of free extra data, computed on the fly from each training image, and a matching
# trick at test time. This lesson applies them to a real photograph.
#
# **Goals**
#
# 1. random crops and horizontal flips, and the paper's "factor of 2048";
# 2. the 10 test-time crops: you write `ten_crop`, equal to `alexnet.data.ten_crop`;
# 3. PCA colour lighting: the principal components of the RGB pixel colours, derived by hand, then you write
#    `pca_lighting`, equal to `alexnet.data.pca_lighting`, and check that the colour offsets it draws have the
#    covariance the paper asks for.

# %%
import minigrad  # noqa: F401  (first: it sets the BLAS thread settings before NumPy loads its BLAS)

# isort: split
import lesson_checks

lesson_checks.start_clock()

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import cbook

from alexnet import data

# %% [markdown]
# ## 1. The photographs
#
# matplotlib ships one photograph, Grace Hopper's portrait (`matplotlib.cbook.get_sample_data`). When
# scikit-image is installed we add its bundled colour photographs too (it is not a dependency of this
# project; without it the lesson runs on the portrait alone). `alexnet.data.load_image` reads a file the
# paper's way: RGB, the shorter side scaled to 256 pixels, the central 256x256 square kept, as a uint8 array
# of shape (3, 256, 256), channels first like everything in this project.


# %%
def sample_photo_paths() -> list[Path]:
    """Grace Hopper's portrait, and scikit-image's colour photographs when it is installed (saved as PNG files
    in a temporary folder, outside the repository, for load_image)."""
    paths = [Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    try:
        import skimage.data
        from PIL import Image
    except ImportError:
        return paths
    folder = Path(tempfile.mkdtemp(prefix="lesson08-"))
    for name in ("astronaut", "chelsea", "coffee"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(path)
    return paths


photos = np.stack([data.load_image(path, resize=256) for path in sample_photo_paths()])
hopper = photos[:1]  # a batch of one: (1, 3, 256, 256)
print(f"{len(photos)} photograph(s): {photos.shape} {photos.dtype}")
assert photos.shape[1:] == (3, 256, 256) and photos.dtype == np.uint8

# %% [markdown]
# ## 2. Random crops and flips
#
# During training the paper feeds the network a random 224x224 patch of each 256x256 image (227x227 in our
# implementation, lesson 6), mirrored left-right half of the time. A new patch is drawn every time the image
# comes round, so the network rarely sees exactly the same pixels twice. The paper counts
# "a factor of 2048" more training data. Counting ourselves:

# %%
positions_224 = (256 - 224 + 1) ** 2
positions_227 = (256 - 227 + 1) ** 2
print(f"paper: (256 - 224)^2 * 2 = {(256 - 224) ** 2 * 2}")
print(f"exact: 224 crops {positions_224} positions x 2 flips = {positions_224 * 2}; 227 crops: {positions_227 * 2}")
assert (256 - 224) ** 2 * 2 == 2048 and positions_224 * 2 == 2178 and positions_227 * 2 == 1800

# %% [markdown]
# The paper's 2048 counts 32 positions per axis; a window of 224 fits at 33 (0 to 32), so the exact number is
# 2,178. The patches overlap heavily, so the extra data is far from independent; what the network learns is
# that a shifted or mirrored object is the same object.
#
# `alexnet.data.random_crop` and `random_horizontal_flip` work on a whole batch, each image with its own random
# choice, and take the random generator explicitly (so a run can be repeated exactly). Eight draws from the
# portrait:

# %%
rng = np.random.default_rng(0)
copies = np.repeat(hopper, 8, axis=0)
crops = data.random_horizontal_flip(data.random_crop(copies, 227, rng), rng)
print("crops:", crops.shape, crops.dtype)
assert crops.shape == (8, 3, 227, 227) and crops.dtype == np.uint8


def show(ax, image: np.ndarray, title: str = "") -> None:
    """Draw one (3, H, W) image; float images are clipped to [0, 1] for display only."""
    hwc = np.moveaxis(image, 0, -1)
    ax.imshow(hwc if hwc.dtype == np.uint8 else np.clip(hwc, 0, 1))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


fig, axes = plt.subplots(1, 9, figsize=(18, 2.4), layout="constrained")
show(axes[0], hopper[0], "256x256")
for i, ax in enumerate(axes[1:]):
    show(ax, crops[i], f"random crop {i + 1}")
plt.show()

# %% [markdown]
# ## 3. Ten crops at test time
#
# At test time there is no randomness. The paper takes five patches of each test image, the four corners and
# the centre, and their five mirror images, runs the network on all ten and averages the ten softmax outputs.
# The library returns them as one array of shape (10, B, C, h, w) in this order: top-left, top-right,
# bottom-left, bottom-right, centre, then the same five flipped left-right. The centre crop starts at
# `(H - h) // 2`, `(W - w) // 2`.
#
# **Exercise.** Write `ten_crop`. Slicing does all the work: `batch[:, :, top : top + h, left : left + w]` is
# one crop of every image, and `[..., ::-1]` reverses the last (width) axis.


# %% [exercise]
def ten_crop(batch: np.ndarray, size) -> np.ndarray:
    """The paper's 10 test crops of every image.

    batch: (B, C, H, W), any dtype.  size: h for square crops, or (h, w).
    Returns (10, B, C, h, w), same dtype: top-left, top-right, bottom-left, bottom-right, centre, then those
    five mirrored left-right.
    """
    h, w = (size, size) if np.isscalar(size) else size
    # BEGIN SOLUTION
    height, width = batch.shape[2:]
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), ((height - h) // 2, (width - w) // 2)]
    five = [batch[:, :, top : top + h, left : left + w] for top, left in corners]
    return np.stack(five + [crop[..., ::-1] for crop in five])
    # END SOLUTION


# %% [check]
from lesson_checks.lesson08 import check_pca_lighting, check_ten_crop

check_ten_crop(ten_crop)

# %%
views = ten_crop(hopper, 227)
labels = ["top-left", "top-right", "bottom-left", "bottom-right", "centre"]
fig, axes = plt.subplots(2, 5, figsize=(12, 5.4), layout="constrained")
for i, ax in enumerate(axes.flat):
    show(ax, views[i, 0], labels[i % 5] + (", flipped" if i >= 5 else ""))
fig.suptitle("the 10 test crops (227x227 of 256x256)")
plt.show()
assert views.shape == (10, 1, 3, 227, 227) and np.array_equal(views[5], views[0][..., ::-1])

# %% [markdown]
# Averaging over ten views costs ten forward passes per test image. `alexnet eval RUN --ten-crop` (and
# `alexnet.evaluate.predict_logits(..., ten_crop=True)`) does it; on 28x28 Fashion-MNIST with a 28x28 model
# the ten crops are one image and its mirror, five times each.
#
# ## 4. PCA colour lighting
#
# The second augmentation changes colours. The colour of an object in a photograph depends on the light, and
# the network should not care. The paper perturbs the colour of each training image along the directions in
# which the colours of natural images actually vary: the principal components of the RGB values of all
# training pixels.
#
# Treat every pixel as a point `x` in 3-D colour space (R, G, B on the [0, 1] scale). Their covariance,
# `C = mean((x - m)(x - m)^T)` (a 3x3 matrix), is symmetric, so it has three orthogonal unit eigenvectors
# `p_i` with eigenvalues `lambda_i`: the variance of the pixels along `p_i`. For photographs the first is
# nearly (1, 1, 1) / sqrt(3), brightness, with most of the variance; the other two are colour contrasts.
# By hand, on our photographs, against the library's `rgb_pca`:

# %%
pixels = np.moveaxis(photos, 1, -1).reshape(-1, 3).astype(np.float64) / 255  # (pixels, 3)
covariance = np.cov(pixels, rowvar=False)  # divides by n - 1
eigvals_hand, eigvecs_hand = np.linalg.eigh(covariance)  # ascending, eigenvectors as columns
eigvals_hand, eigvecs_hand = eigvals_hand[::-1], eigvecs_hand[:, ::-1]  # largest first
eigvecs_hand = eigvecs_hand * np.sign(eigvecs_hand[np.abs(eigvecs_hand).argmax(axis=0), range(3)])  # fix signs

eigvals, eigvecs = data.rgb_pca(photos)
print("eigenvalues (by hand):", np.round(eigvals_hand, 5), "| rgb_pca:", np.round(eigvals, 5))
print("first eigenvector:", np.round(eigvecs[:, 0], 3), "(brightness: 0.577 each)")
lesson_checks.check_close("rgb_pca eigenvalues vs by hand", eigvals, eigvals_hand, 1e-5)
lesson_checks.check_close("rgb_pca eigenvectors vs by hand", eigvecs, eigvecs_hand, 1e-5)
assert np.all(eigvecs[:, 0] > 0.4) and eigvals[0] > 5 * eigvals[1]

# %% [markdown]
# The augmentation: for each training image draw three numbers `alpha_i ~ N(0, 0.1)`, once per image, and add
# the same RGB offset to every one of its pixels:
#
# offset = alpha_1 * lambda_1 * p_1 + alpha_2 * lambda_2 * p_2 + alpha_3 * lambda_3 * p_3
#
# In matrix form, for a batch: `alpha` is (B, 3), and row b of `(alpha * lambda) @ P^T` is image b's offset
# (P has the `p_i` as columns). Because the alphas are independent with variance `0.1^2`, the offsets have
# covariance `P diag((0.1 * lambda_i)^2) P^T`: the same principal directions as the pixels, with variances
# `(0.1 lambda_i)^2`. The paper says this "reduces the top-1 error rate by over 1%".
#
# **Exercise.** Write `pca_lighting`. To draw the same numbers as the library (the check compares the two
# with generators in the same state), draw `alpha` exactly as the docstring says.


# %% [exercise]
def pca_lighting(batch: np.ndarray, eigvals: np.ndarray, eigvecs: np.ndarray, rng: np.random.Generator, std=0.1):
    """The paper's PCA lighting: batch + one RGB offset per image, the same for all of its pixels.

    batch: (B, 3, H, W) float32 on the [0, 1] scale.  eigvals: (3,).  eigvecs: (3, 3), eigenvectors as columns.
    Draw alpha = rng.standard_normal((B, 3), dtype=np.float32) * np.float32(std), one row per image.
    Returns a new float32 array (B, 3, H, W); batch is left as it is. No clipping (the paper does none).
    """
    # BEGIN SOLUTION
    alpha = rng.standard_normal((len(batch), 3), dtype=np.float32) * np.float32(std)
    offsets = (alpha * eigvals.astype(np.float32)) @ eigvecs.astype(np.float32).T  # (B, 3)
    return batch + offsets[:, :, None, None]  # the same offset at every pixel of an image
    # END SOLUTION


# %% [check]
check_pca_lighting(pca_lighting, eigvals, eigvecs)

# %% [markdown]
# How large are these changes? Six draws for the portrait, each an RGB offset added to every pixel, in grey
# levels (the [0, 1] scale times 255):

# %%
portrait = data.to_unit_float(hopper)  # (1, 3, 256, 256) float32 in [0, 1]
six = np.repeat(portrait, 6, axis=0)
light = pca_lighting(six, eigvals, eigvecs, np.random.default_rng(1))
strong = pca_lighting(six, eigvals, eigvecs, np.random.default_rng(1), std=1.0)  # the same draws, 10 times larger
offsets = (light - portrait)[:, :, 0, 0]  # (6, 3): the RGB offset of each draw
print("offsets in grey levels (R, G, B):\n", np.round(offsets * 255, 2))
assert np.abs(offsets).max() < 0.05 and np.allclose((strong - portrait)[:, :, 0, 0], 10 * offsets, atol=1e-5)

# %% [markdown]
# A few grey levels: hard to see at the paper's `std = 0.1`, though not for a network that sees each image
# many times, each time lit a little differently. The second row below uses the same draws with `std = 1.0`
# (10 times larger), to show the directions: mostly brighter and darker (the first component), with a tint
# along the colour components.

# %%
fig, axes = plt.subplots(2, 7, figsize=(15, 5), layout="constrained")
show(axes[0, 0], portrait[0], "original")
show(axes[1, 0], portrait[0], "original")
for i in range(6):
    show(axes[0, i + 1], light[i], f"std 0.1, draw {i + 1}")
    show(axes[1, i + 1], strong[i], f"std 1.0, draw {i + 1}")
fig.suptitle("PCA lighting: the paper's strength (top) and 10 times stronger (bottom)")
plt.show()

# %% [markdown]
# ## Where this lives in the library
#
# - `alexnet/data/transforms.py` (re-exported by `alexnet.data`): `random_crop`, `random_horizontal_flip`,
#   `center_crop`, `ten_crop`, `rgb_pca` (streams the pixels in chunks and samples them when there are many),
#   `pca_lighting`, and `train_transform` / `eval_transform`, which chain them for a run.
# - `alexnet/data/augment.py`: the same augmentation one image at a time, as the background loader builds
#   batches: `train_sample_plain` (the definition, with the batch transforms above), `train_sample` (the same
#   numbers in fewer passes), `lighting_offset`, `ten_crop_sample`.
# - `alexnet/data/image_folder.py`: `load_image` (the paper's resize and centre crop) and `ImageFolder`.
# - `alexnet/run_data.py`: `PreparedData.train_transform`; `alexnet/config.py`: `TrainConfig.augment` (on by
#   default for colour images: `alexnet train --data DIR` with ImageNet's folder layout).
# - `alexnet/evaluate.py`: `predict_logits(..., ten_crop=True)` averages the softmax over the ten crops
#   (`alexnet eval RUN --ten-crop`).
#
# ## Further exercises
#
# 1. Compute `rgb_pca` on the portrait alone and on a crop of its background only. How do the eigenvectors
#    change, and what would that mean for a data set of indoor photographs?
# 2. The paper's eigenvalues are variances, so the offsets scale with `lambda`, not with `sqrt(lambda)` (a
#    standard deviation). Some reimplementations use the square root. How many times larger are their offsets
#    on our photographs?
# 3. Write `ten_crop_predict(model, images)` that averages the softmax of a model over `ten_crop`'s views,
#    and compare it with `alexnet.evaluate.predict_logits(..., ten_crop=True)` on an untrained
#    `alexnet-small` and random 72x72 images.

# %%
lesson_checks.report_runtime()
