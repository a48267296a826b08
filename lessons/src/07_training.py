# ruff: noqa: E402
# %% [markdown]
# # Lesson 7: Training with the paper's SGD
#
# Lesson 6 built the network; now it learns. The paper trains with plain stochastic gradient descent, momentum
# and weight decay, and divides the learning rate by 10 by hand whenever the validation error stops
# improving. This lesson writes that loop out in full, on the Fashion-MNIST images bundled in the package, with
# small variants of AlexNet so that it runs in under a minute on a laptop.
#
# **Goals**
#
# 1. know what the loss must be before the first step (ln 10 for 10 classes), and why;
# 2. write the paper's update rule, `sgd_paper_step`, and check it against `minigrad.optim.SGD` over 100 steps
#    that include a learning-rate drop;
# 3. use the oldest debugging trick there is: make the network memorise a small batch (loss below 0.1);
# 4. write the training loop with "divide the learning rate by 10 on a plateau", and read its curves;
# 5. test the paper's design choices (LRN, overlapping pooling, two groups) with two seeds each, and learn to
#    distrust a difference smaller than the spread between seeds.

# %%
import minigrad as mg  # first: it sets the BLAS thread settings before NumPy loads its BLAS

# isort: split
import lesson_checks

lesson_checks.start_clock()

import matplotlib.pyplot as plt
import numpy as np

import minigrad.functional as F
from alexnet.data import channel_mean_std, load_fashion_mnist_subset, normalize, to_unit_float
from alexnet.model import build_model
from minigrad import nn, optim

# %% [markdown]
# ## 1. The data
#
# The package ships a class-balanced subset of Fashion-MNIST: 9,000 training and 2,000 test images of 28x28
# grey pixels, 10 classes (`alexnet.data.load_fashion_mnist_subset`). We hold 1,000 training images out for
# validation (the learning-rate schedule looks at them; the test images are looked at once, at the end) and
# normalise every pixel with the mean and standard deviation of the training pixels, as the paper subtracts
# the mean image.

# %%
data = load_fashion_mnist_subset()
order = np.random.default_rng(0).permutation(len(data.train))
val_index, train_index = order[:1000], order[1000:]
mean, std = channel_mean_std(data.train.images[train_index])


def prepare(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 1, 28, 28) -> normalised float32."""
    return normalize(to_unit_float(images), mean, std)


x_train, y_train = prepare(data.train.images[train_index]), data.train.labels[train_index]
x_val, y_val = prepare(data.train.images[val_index]), data.train.labels[val_index]
x_test, y_test = prepare(data.test.images), data.test.labels
print(f"train {x_train.shape} | validation {x_val.shape} | test {x_test.shape} | classes {data.class_names}")
print(
    f"pixel mean {mean[0]:.3f}, std {std[0]:.3f}; after normalising: mean {x_train.mean():.1e}, std {x_train.std():.3f}"
)
assert x_train.shape == (8000, 1, 28, 28) and x_train.dtype == np.float32
assert abs(x_train.mean()) < 1e-3 and abs(x_train.std() - 1) < 1e-3

# %% [markdown]
# ## 2. The loss before the first step
#
# The network ends in 10 numbers, the logits `z`, turned into probabilities by the softmax
# `p_k = exp(z_k) / sum_j exp(z_j)`, and the loss of an image of class `y` is `-ln p_y`. At initialisation the
# last layer's weights are tiny (standard deviation 0.01), so all logits are near 0, every `p_k` is near
# 1/10, and the loss is `-ln(1/10) = ln 10 = 2.303` for every image. A first loss far from that means
# something is wrong before training even starts (weights too large, labels out of range, a missing softmax).
# That is our first check.

# %%
mg.manual_seed(0)
model = build_model("alexnet-tiny", width=0.5)
logits = model(mg.tensor(x_train[:256]))
loss0 = F.cross_entropy(logits, y_train[:256]).item()
print(f"logits: mean {logits.numpy().mean():+.3f}, std {logits.numpy().std():.3f}")
print(f"loss at step 0: {loss0:.4f} | ln 10 = {np.log(10):.4f}")
assert abs(loss0 - np.log(10)) < 0.05

# %% [markdown]
# ## 3. The paper's update rule
#
# Section 5 of the paper: for every weight `w`, with momentum 0.9, weight decay 0.0005 and learning rate `lr`,
#
# v <- 0.9 * v - 0.0005 * lr * w - lr * dL/dw
#
# w <- w + v
#
# `v`, the velocity, starts at zero. It is a running sum of past steps, each shrunk by 0.9 per step: along a
# direction where the gradient keeps its sign the steps add up (up to 1 / (1 - 0.9) = 10 times one step),
# along one where it flips they cancel. The weight-decay term pulls every weight towards 0 a little; it sits
# inside the velocity, so it is smoothed like the gradient.
#
# **Exercise.** Write `sgd_paper_step`. The arrays are on whatever device the model lives on, so use only
# arithmetic on the arrays themselves (no `np.` call), and update them in place (`v *= ...`, `p.data += ...`):
# the velocities must survive from one call to the next.


# %% [exercise]
def sgd_paper_step(params: list, velocities: list, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
    """One step of the paper's rule on every parameter that has a gradient, in place.

    params: the model's Parameters. p.data is the weight array; p.grad.data its gradient (p.grad is None when
        the parameter took no part in the loss: skip it).
    velocities: one array per parameter, same shape and dtype, zeros before the first step.
    lr: this step's learning rate.
    """
    # BEGIN SOLUTION
    for p, v in zip(params, velocities):
        if p.grad is None:
            continue
        v *= momentum
        v -= weight_decay * lr * p.data
        v -= lr * p.grad.data
        p.data += v
    # END SOLUTION


# %% [check]
from lesson_checks.lesson07 import check_overfits_small_batch, check_sgd_paper_step

check_sgd_paper_step(sgd_paper_step)

# %% [markdown]
# The check trains two copies of a small network in float64 for 100 steps, one with your function and one with
# `minigrad.optim.SGD`, the learning rate divided by 10 after step 60, and compares the weights and the
# velocities.
#
# Why include a learning-rate drop? Because that is where the paper's rule and the one most libraries use part
# ways. PyTorch's `torch.optim.SGD` keeps `b <- 0.9 b + dL/dw` and steps `w <- w - lr * b`. While `lr` is
# constant the two are the same rule (the paper's `v` is `-lr * b`). When `lr` drops, the paper's velocity
# still holds steps taken at the old rate and lets them decay, while PyTorch's next step is at once 10 times
# smaller. On `L(w) = w^2 / 2` (so dL/dw = w), without weight decay:


# %%
def paper_rule(w: float, v: float, lr: float) -> tuple[float, float]:
    v = 0.9 * v - lr * w
    return w + v, v


def pytorch_rule(w: float, b: float, lr: float) -> tuple[float, float]:
    b = 0.9 * b + w
    return w - lr * b, b


w_paper, v, w_torch, b = 1.0, 0.0, 1.0, 0.0
trajectory = []
for step in range(8):
    lr = 0.1 if step < 4 else 0.01
    w_paper, v = paper_rule(w_paper, v, lr)
    w_torch, b = pytorch_rule(w_torch, b, lr)
    trajectory.append((w_paper, w_torch))
    print(f"step {step + 1}, lr {lr:<5}: paper w = {w_paper:.6f} | PyTorch w = {w_torch:.6f}")
assert all(abs(a - c) < 1e-12 for a, c in trajectory[:4]) and abs(trajectory[4][0] - trajectory[4][1]) > 1e-3

# %% [markdown]
# ## 4. Memorise a small batch first
#
# Before spending time on a real run, check that the network *can* learn: 32 training images, the same batch
# at every step, dropout switched off (`model.eval()`: dropout fights exactly this kind of memorising). A
# network with 188 thousand parameters should drive the loss on 32 images to nearly 0 in a few dozen steps; if
# it does not, the bug is in the model, the loss, the gradients or the update, and not in the data or the
# schedule.


# %%
def overfit_small_batch(step, images: int = 32, lr: float = 0.01, max_steps: int = 150) -> list[float]:
    """Train alexnet-tiny on the first `images` training images with `step` (e.g. sgd_paper_step) until the
    loss is below 0.1 or `max_steps` steps are done. Returns the loss of every step."""
    mg.manual_seed(0)
    model = build_model("alexnet-tiny").eval()  # eval(): no dropout
    params = model.parameters()
    velocities = [p.xp.zeros_like(p.data) for p in params]
    x, y = mg.tensor(x_train[:images]), y_train[:images]
    losses = []
    while len(losses) < max_steps and (not losses or losses[-1] >= 0.1):
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        step(params, velocities, lr)
        losses.append(loss.item())
    return losses


# %% [check]
small_batch_losses = overfit_small_batch(sgd_paper_step)
check_overfits_small_batch(small_batch_losses)

# %% [markdown]
# ## 5. The training loop
#
# The loop the paper describes, written out: shuffle the training images once per pass, cut them into batches
# of 64, and for each batch: forward, loss, backward, update. Every `eval_every` steps it measures the error on
# the validation images; when that error has not improved for more than `patience` evaluations in a row, the
# learning rate is divided by 10 (the paper did this by hand, three times in 90 epochs).
#
# The model runs in training mode (dropout on) except while it is evaluated: `evaluate_error` switches it to
# `eval()` and back.


# %%
def evaluate_error(model, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 error (a fraction) of `model` on normalised images x with labels y, dropout off."""
    model.eval()
    wrong = 0
    with mg.no_grad():
        for start in range(0, len(y), batch):
            logits = model(mg.tensor(x[start : start + batch])).numpy()
            wrong += int((logits.argmax(axis=1) != y[start : start + batch]).sum())
    model.train()
    return wrong / len(y)


def train(model, steps: int, lr: float, seed: int, batch_size: int = 64, eval_every: int = 25, patience: int = 2):
    """SGD with the paper's rule, lr / 10 when the validation error stops improving. Returns the history:
    the loss of every step, and at every evaluation the step, the validation error and the lr used before it."""
    rng = np.random.default_rng(seed)
    params = model.parameters()
    velocities = [p.xp.zeros_like(p.data) for p in params]
    history = {"loss": [], "eval_step": [], "val_error": [], "lr": []}
    best, bad_evaluations = float("inf"), 0
    order, position = rng.permutation(len(y_train)), 0
    model.train()
    for step in range(1, steps + 1):
        if position + batch_size > len(order):  # a new pass over the data, in a new order
            order, position = rng.permutation(len(y_train)), 0
        batch = order[position : position + batch_size]
        position += batch_size
        model.zero_grad()
        loss = F.cross_entropy(model(mg.tensor(x_train[batch])), y_train[batch])
        loss.backward()
        sgd_paper_step(params, velocities, lr)
        history["loss"].append(loss.item())
        if step % eval_every == 0:
            error = evaluate_error(model, x_val, y_val)
            history["eval_step"].append(step)
            history["val_error"].append(error)
            history["lr"].append(lr)
            if error < best:
                best, bad_evaluations = error, 0
            else:
                bad_evaluations += 1
                if bad_evaluations > patience:
                    lr, bad_evaluations = lr / 10, 0
    return history


# %% [markdown]
# `alexnet-tiny` at half width (48 thousand parameters), 400 steps of 64 images (about three passes over the
# 8,000 training images), learning rate 0.05 to start:

# %%
mg.manual_seed(0)
model = build_model("alexnet-tiny", width=0.5)
history = train(model, steps=400, lr=0.05, seed=0)
for step, error, lr in zip(history["eval_step"], history["val_error"], history["lr"]):
    print(f"step {step:3}: validation error {error:.1%} (lr {lr:g})")
test_error = evaluate_error(model, x_test, y_test)
print(f"test error after {len(history['loss'])} steps: {test_error:.1%} (guessing: 90%)")
assert history["loss"][0] > 2.0 and np.mean(history["loss"][-25:]) < 0.8 and test_error < 0.35

# %% [markdown]
# The library has the same schedule as a class, `minigrad.optim.ReduceLROnPlateau` (what `alexnet train` uses,
# once per epoch). Fed the same validation errors, it makes the same decisions:

# %%
scheduler_optimizer = optim.SGD([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=0.05)
scheduler = optim.ReduceLROnPlateau(scheduler_optimizer, factor=0.1, patience=2)
library_lrs = []
for error in history["val_error"]:
    library_lrs.append(scheduler_optimizer.lr)
    scheduler.step(error)
drops = [step for step, a, b in zip(history["eval_step"], history["lr"], history["lr"][1:]) if b < a]
print("our lr per evaluation:    ", [f"{lr:g}" for lr in history["lr"]])
print("ReduceLROnPlateau's:      ", [f"{lr:g}" for lr in library_lrs])
print("lr divided by 10 after the evaluation at step(s):", drops or "none (no plateau in this run)")
assert np.allclose(library_lrs, history["lr"], rtol=1e-9)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
axes[0].semilogy(small_batch_losses)
axes[0].axhline(0.1, color="0.6", linestyle="--")
axes[0].set(title="memorising 32 images (dropout off)", xlabel="step", ylabel="loss")
steps = np.arange(1, len(history["loss"]) + 1)
smooth = np.convolve(history["loss"], np.ones(20) / 20, mode="valid")
axes[1].plot(steps, history["loss"], color="0.8", label="each batch")
axes[1].plot(steps[19:], smooth, label="mean of 20 batches")
axes[1].axhline(np.log(10), color="0.6", linestyle="--", label="ln 10")
axes[1].set(title="training loss", xlabel="step", ylabel="cross-entropy")
axes[1].legend()
axes[2].plot(history["eval_step"], np.array(history["val_error"]) * 100, "o-", color="tab:orange")
for step in drops:
    axes[2].axvline(step, color="0.6", linestyle=":")
axes[2].set(title="validation error (dotted: lr / 10)", xlabel="step", ylabel="top-1 error (%)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Ablations: does each of the paper's choices help, here?
#
# The paper reports what three of its choices bought on ImageNet (section 3): local response normalisation
# lowered the top-1 error by 1.4 points, overlapping pooling (3x3 windows with stride 2 instead of 2x2) by
# 0.4, and the two-GPU network beat a one-GPU network with half the kernels in each conv layer by 1.7.
#
# We train each variant of `alexnet-tiny` at a quarter width for 100 steps of 128 images (1.6 passes over the
# training images), with a constant learning rate, and measure the validation error. Each twice, with seeds 0
# and 1 (the seed sets the initial weights, the order of the batches and the dropout masks). A difference
# between two variants means something only when it is larger than the difference between two seeds of the
# same variant. (`groups=1` here simply removes the
# split: the conv2, conv4 and conv5 kernels see all channels, with more parameters; it is not the paper's
# comparison.)

# %%
ablations = {
    "paper (LRN, 3x3/2 pools, 2 groups)": {},
    "no LRN": {"lrn": False},
    "2x2/2 pools (no overlap)": {"overlap": False},
    "1 group": {"groups": 1},
}
paper_effect = {"no LRN": "+1.4", "2x2/2 pools (no overlap)": "+0.4", "1 group": "(+1.7, other net)"}
seeds = (0, 1)
results = {}
for label, switches in ablations.items():
    for seed in seeds:
        mg.manual_seed(seed)
        variant = build_model("alexnet-tiny", width=0.25, **switches)
        run = train(variant, steps=100, lr=0.05, seed=seed, batch_size=128, eval_every=100)
        results[label, seed] = run["val_error"][-1]

base = np.mean([results["paper (LRN, 3x3/2 pools, 2 groups)", s] for s in seeds])
print(f"{'variant':36} {'seed 0':>7} {'seed 1':>7} {'mean':>7} {'spread':>7} {'vs paper':>9} {'paper (ImageNet)':>18}")
for label in ablations:
    errors = [results[label, s] for s in seeds]
    mean_error = np.mean(errors)
    delta = "" if label not in paper_effect else f"{(mean_error - base) * 100:+.1f}"
    print(
        f"{label:36} {errors[0]:7.1%} {errors[1]:7.1%} {mean_error:7.1%} {abs(errors[0] - errors[1]) * 100:6.1f}"
        f" {delta:>9} {paper_effect.get(label, ''):>18}"
    )
print("(top-1 validation error on 1,000 images after 100 steps; spread and differences in points)")
assert all(0 < e < 0.8 for e in results.values())  # every run far better than guessing (90%)

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
for row, label in enumerate(ablations):
    errors = [results[label, s] * 100 for s in seeds]
    ax.plot(errors, [row, row], "o", color="tab:blue")
    ax.plot([min(errors), max(errors)], [row, row], color="tab:blue", alpha=0.4)
ax.set_yticks(range(len(ablations)), list(ablations))
ax.invert_yaxis()
ax.set(xlabel="validation top-1 error (%), one dot per seed", title="ablations of alexnet-tiny (width 0.25, 100 steps)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the table with the spread column in mind: a difference between two variants that is smaller than the
# spread between two seeds of one variant is noise. A larger one can be real here and still say little about
# the paper's claims, which are about the final error after 90 epochs on ImageNet (0.4 to 1.7 points each, from
# single runs of a network 5,000 times larger than these). Two things differ in our setting:
#
# - 100 steps measure how fast a network starts to learn, not where it ends up: a variant that starts slower
#   may catch up.
# - On 28x28 inputs the pools change more than the pooling. Three 2x2/2 pools leave a 3x3 last feature map,
#   three 3x3/2 pools a 2x2 one, so without overlap fc6 has more inputs and more weights; and one group gives
#   conv2, conv4 and conv5 more weights too:

# %%
for label, switches in ablations.items():
    variant = build_model("alexnet-tiny", width=0.25, **switches)
    shape = "x".join(map(str, variant.feature_shape))
    print(f"{label:36} last feature map {shape:>7} | {variant.num_parameters():,} parameters")
assert build_model("alexnet-tiny").feature_shape[1:] == (2, 2)
assert build_model("alexnet-tiny", overlap=False).feature_shape[1:] == (3, 3)

# %% [markdown]
# So each row of the table changes the network in more ways than its name says. To resolve effects of the
# paper's size you would need many seeds, full-length runs, and variants that differ in one thing only
# (Further exercises).
#
# ## Where this lives in the library
#
# - `minigrad/optim.py`: `SGD` (the paper's rule, weight decay inside the velocity; its `step` calls
#   `minigrad/kernels/sgd.py`'s `sgd_momentum_step`, a Numba loop on the CPU with the plain
#   `sgd_momentum_step_generic` beside it, the four lines you wrote), `ReduceLROnPlateau`, `Adam`.
# - `minigrad/functional/loss.py`: `cross_entropy`, `log_softmax`.
# - `alexnet/train.py`: `train(TrainConfig(...))` is the `alexnet train` command, in named steps:
#   `make_optimizer`, `train_step` (forward, loss, backward, step), `end_epoch` (validation, the schedule,
#   checkpoints). `alexnet/config.py`: `TrainConfig`, every setting of a run, `seed` (of every random choice)
#   included.
# - `alexnet/evaluate.py`: `evaluate`, `top_k_error`, `predict_logits`.
# - The ablation switches on the command line: `alexnet train --no-lrn`, `--no-overlap`, `--groups 1`,
#   `--width 0.25`, `--seed 1`.
#
# ## Further exercises
#
# 1. Replace `sgd_paper_step` in `train` by the PyTorch form (`b <- 0.9 b + g + decay * w`, `w <- w - lr * b`)
#    and rerun the main run. Where in the curves does it differ, and why only there?
# 2. Run the ablation with seeds 0 to 4 and 400 steps (`alexnet train --epochs 5 --no-lrn --seed N` does the
#    same from a terminal). Is any difference now larger than the spread between seeds? When one seed of a
#    variant ends far behind the other, plot that run's loss: is it slow from the first steps, or stuck later?
# 3. Start the main run with lr 0.5, then 0.005. What does the loss curve do in each case, and which check of
#    this lesson would have warned you first?

# %%
lesson_checks.report_runtime()
