# %% [markdown]
# # Lesson 5: ReLU, overlapping max-pooling, LRN and dropout
#
# Section 3 of the paper lists what was unusual about its network, in order of importance: ReLU units
# (3.1), training on two GPUs (3.2), local response normalisation (3.3) and overlapping pooling (3.4);
# section 4.2 adds dropout. This lesson takes each apart, reproduces the paper's Figure 1 (ReLU against
# tanh: how many epochs until the training error falls below 25%), and has you derive and write the
# backward pass of LRN.
#
# **Goals**
#
# 1. why a non-saturating unit trains faster: Fig. 1, measured on Fashion-MNIST;
# 2. overlapping max-pooling: output sizes, where the gradient goes, and ties;
# 3. LRN: the paper's formula, the two conventions for alpha, and its backward pass, derived and written
#    by you in NumPy;
# 4. dropout in training and in evaluation.

# %%
import matplotlib.pyplot as plt
import numpy as np
from lesson_checks import lesson05, report_runtime, start_clock

import minigrad as mg
import minigrad.functional as F
from alexnet.data import load_fashion_mnist_subset
from minigrad import nn, optim
from minigrad.kernels import output_size

start_clock()
mg.manual_seed(0)

# %% [markdown]
# ## 1. ReLU against tanh: the paper's Figure 1
#
# A tanh unit **saturates**: for inputs beyond about +-2 its slope `1 - tanh(x)^2` is nearly 0, so almost no
# gradient flows through it and its weights barely move. A ReLU, `max(0, x)`, has slope exactly 1 for every
# positive input, however large. The paper's Figure 1 trains a four-layer convolutional network on CIFAR-10
# with each unit and plots the training error against the epochs: ReLU reaches 25% **six times** sooner.
#
# We repeat the experiment at a smaller scale: a four-layer network (two convolutions with overlapping
# pooling, two fully connected layers) on 1,000 images of the bundled Fashion-MNIST subset, prepared as in the
# paper (the mean image subtracted from raw pixel values, no scaling), weights drawn from N(0, 0.01) as in the
# paper, SGD with momentum 0.9, no weight decay, batches of 50, the same initial weights and the same batches
# for both units. As in the paper, each unit gets the learning rate that trains it fastest: we tried 0.001,
# 0.002, 0.005 and 0.01 with this same code (further exercise 1) and kept 0.005 for ReLU and 0.01 for tanh.
# After every epoch we measure the error on the 1,000 training images.

# %%
data = load_fashion_mnist_subset()
x_fig1 = data.train.images[:1000].astype(np.float32)
x_fig1 -= x_fig1.mean(axis=0)  # the paper's only preprocessing: subtract the mean image
y_fig1 = data.train.labels[:1000]
print("images per class:", np.bincount(y_fig1, minlength=10))
assert np.bincount(y_fig1, minlength=10).min() >= 80  # every class is there


def four_layer_net(unit):
    """conv 5x5 (8) -> unit -> pool 3/2 -> conv 5x5 (16) -> unit -> pool 3/2 -> fc 32 -> unit -> fc 10."""
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), unit(), nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 16, 5, padding=2), unit(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(16 * 6 * 6, 32), unit(), nn.Linear(32, 10),
    )  # fmt: skip
    rng = np.random.default_rng(0)  # the same initial weights for both units
    for p in net.parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.01 if p.ndim > 1 else 0.0
    return net


def training_errors(unit, lr, epochs=15):
    net = four_layer_net(unit)
    opt = optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    rng = np.random.default_rng(1)  # the same batches for both units
    errors = []
    for _ in range(epochs):
        for batch in np.split(rng.permutation(len(x_fig1)), len(x_fig1) // 50):
            loss = F.cross_entropy(net(mg.tensor(x_fig1[batch])), y_fig1[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with mg.no_grad():
            errors.append(float((net(mg.tensor(x_fig1)).numpy().argmax(axis=1) != y_fig1).mean()))
    return np.array(errors)


def epochs_to(errors, level=0.25):
    below = np.flatnonzero(errors <= level)
    return int(below[0]) + 1 if below.size else None


curves = {"ReLU": training_errors(nn.ReLU, lr=0.005), "tanh": training_errors(nn.Tanh, lr=0.01)}
reached = {name: epochs_to(err) for name, err in curves.items()}
for name, err in curves.items():
    when = f"epoch {reached[name]}" if reached[name] else f"not within {len(err)} epochs"
    print(f"{name:>4}: training error {' '.join(f'{e:.2f}' for e in err)} | 25% reached: {when}")
assert reached["ReLU"] is not None  # ReLU gets there
assert reached["tanh"] is None or reached["tanh"] > reached["ReLU"]  # and tanh later, or not at all

fig, ax = plt.subplots(figsize=(6.5, 3.8))
epochs = np.arange(1, len(curves["ReLU"]) + 1)
for (name, err), style, lr in zip(curves.items(), ("-", "--"), (0.005, 0.01)):
    when = f"25% at epoch {reached[name]}" if reached[name] else "25% not reached"
    ax.plot(epochs, err, style, color="C0" if name == "ReLU" else "C1", label=f"{name}, lr {lr}: {when}")
ax.axhline(0.25, color="0.5", lw=0.8)
ax.text(epochs[-1], 0.26, "25%", ha="right", color="0.4")
ax.set(xlabel="epochs", ylabel="training error rate", ylim=(0, 1), title="Fig. 1, on 1,000 Fashion-MNIST images")
ax.legend()
plt.show()

# %% [markdown]
# Why so different? With raw pixel values and N(0, 0.01) weights, conv1's outputs (the inputs of its units)
# are several units large, so a large share of the tanh units start out saturated, beyond +-2 where the slope
# is below 0.07, and a saturated unit passes almost no gradient back to the weights that would move it out
# of saturation. The same inputs pass through a ReLU with slope 1 wherever they are positive:

# %%
net = four_layer_net(nn.Tanh)
with mg.no_grad():
    pre = net[0](mg.tensor(x_fig1[:100])).numpy()  # conv1's outputs: the inputs of the first tanh
slope = 1 - np.tanh(pre) ** 2
print(f"conv1 -> tanh: {np.mean(np.abs(pre) > 2):.0%} of the inputs beyond +-2; median slope {np.median(slope):.3f}")
print(f"conv1 -> ReLU: slope 1 for the {np.mean(pre > 0):.0%} that are positive")
assert np.mean(np.abs(pre) > 2) > 0.25 and np.median(slope) < 0.5  # many tanh units start saturated

# %% [markdown]
# The paper's network and data differ (a wider four-layer network, CIFAR-10's colour images), so the ratio
# does too; the direction is the same: with the same data, initial weights and batches, each at its best
# learning rate, the non-saturating unit reaches 25% training error several times sooner.
#
# ## 2. Overlapping max-pooling
#
# AlexNet pools 3x3 windows with stride 2, so neighbouring windows **overlap** by one row or column (the paper
# reports 0.4% lower top-1 error than with 2x2 windows of stride 2; lesson 7 ablates it). The output size
# follows the convolution's formula: 55 -> 27 -> 13 -> 6 in the paper's network.
#
# The gradient of a max goes entirely to the input that won. On a 5x5 input with four 3x3 windows:
#
# - an input that wins **several** overlapping windows collects all their gradients;
# - a **tie** inside a window goes to the first maximum in row-major order (top-left first), so exactly one
#   input gets the window's gradient, and the backward pass only needs the winner's index from the forward pass.

# %%
sizes = [55]
for _ in range(3):
    sizes.append(output_size(sizes[-1], 3, 2, 0))
print("pooling 3x3/2:", " -> ".join(map(str, sizes)))
assert sizes[1] == 27 and sizes[2] == 13 and sizes[3] == 6

xp_ = mg.tensor(
    [[[[1, 5, 5, 0, 0],
       [5, 2, 5, 0, 1],
       [0, 0, 3, 0, 0],
       [0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0]]]],
    dtype="float32",
    requires_grad=True,
)  # fmt: skip
yp = F.max_pool2d(xp_, 3, 2)
yp.sum().backward()
print("pooled (2x2):\n", yp.numpy()[0, 0])
print("gradient on the input:\n", xp_.grad.numpy()[0, 0])
np.testing.assert_array_equal(yp.numpy()[0, 0], [[5, 5], [3, 3]])
expected = np.zeros((5, 5), dtype=np.float32)
expected[0, 1] = expected[0, 2] = 1  # top-left: the first of four 5s; top-right: the 5 at (0, 2)
expected[2, 2] = 2  # the centre pixel wins both bottom windows
np.testing.assert_array_equal(xp_.grad.numpy()[0, 0], expected)

# %% [markdown]
# ## 3. Local response normalisation
#
# After the ReLU of conv1 and conv2 the paper divides each activation by the energy of its neighbours across
# channels ("lateral inhibition"): at every pixel, with `a` the activations across the C channels,
#
# `s_i = k + alpha * sum_{j in window(i)} a_j^2`,   `b_i = a_i * s_i^(-beta)`,
#
# where `window(i)` is the n = 5 channels around i (clipped at 0 and C - 1), k = 2, alpha = 1e-4, beta = 0.75.
# For an even n the window is `[i - n//2, i + (n-1)//2]`. The formula, channel by channel:


# %%
def lrn_forward_numpy(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """x (N, C, H, W) -> (b, s): b = x * s^-beta with s = k + alpha * (sum of x^2 over each channel's window)."""
    channels = x.shape[1]
    s = np.empty_like(x)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels - 1, i + (size - 1) // 2)
        s[:, i] = k + alpha * (x[:, lo : hi + 1] ** 2).sum(axis=1)
    return x * s**-beta, s


acts = F.relu(mg.randn((2, 8, 4, 4), dtype="float64") * 40).numpy()  # large, so the normalisation matters
ours, _ = lrn_forward_numpy(acts)
np.testing.assert_allclose(F.local_response_norm(mg.tensor(acts)).numpy(), ours, rtol=1e-12)
print("F.local_response_norm == the paper's formula")

# %% [markdown]
# **Two conventions for alpha.** Caffe and PyTorch divide alpha by n inside the sum,
# `k + (alpha / n) * sum a^2`, so the same `alpha=1e-4` means five times less normalisation there than in the
# paper. `minigrad` implements the paper's formula and takes the other convention on request
# (`alpha_over_size=True`); the paper's behaviour in the Caffe/PyTorch convention is `alpha = 5e-4`, `k = 2`.

# %%
caffe = F.local_response_norm(mg.tensor(acts), alpha_over_size=True).numpy()
np.testing.assert_allclose(caffe, lrn_forward_numpy(acts, alpha=1e-4 / 5)[0], rtol=1e-12)
paper_in_caffe_terms = F.local_response_norm(mg.tensor(acts), alpha=5e-4, alpha_over_size=True).numpy()
np.testing.assert_allclose(paper_in_caffe_terms, ours, rtol=1e-12)
i = np.unravel_index(np.argmax(acts), acts.shape)
print(f"largest activation {acts[i]:.1f} -> paper {ours[i]:.2f}, Caffe/PyTorch convention {caffe[i]:.2f}")
assert ours[i] < caffe[i]  # the paper's convention normalises more

# %% [markdown]
# **The backward pass.** `b_i` depends on `a_i` directly and, through `s_i`, on every `a_m` in its window.
# With `g_i = dL/db_i`:
#
# `db_i/da_m = [i = m] s_i^(-beta) - beta a_i s_i^(-beta-1) * 2 alpha a_m [m in window(i)]`
#
# so, summing over the outputs i that a_m reaches,
#
# `dL/da_m = g_m s_m^(-beta) - 2 alpha beta a_m * sum_{i : m in window(i)} g_i a_i s_i^(-beta-1)`.
#
# The set `{i : m in window(i)}` is the **mirrored** window: if window(i) reaches `n//2` channels below i and
# `(n-1)//2` above, then m is reached by the i from `m - (n-1)//2` to `m + n//2` (the same for odd n).
#
# **Exercise.** Write `lrn_backward_numpy(grad, x, size, alpha, beta, k)` -> `dL/dx`, recomputing `s` with
# `lrn_forward_numpy`. The check compares it with the library's backward pass on the paper's constants and on
# others (an even window), and asks for a relative error below 1e-6.


# %% [exercise]
def lrn_backward_numpy(grad, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """grad = dL/db (N, C, H, W), x = a -> dL/da, same shape."""
    # BEGIN SOLUTION
    _, s = lrn_forward_numpy(x, size, alpha, beta, k)
    t = grad * x * s ** (-beta - 1)  # g_i a_i s_i^(-beta-1), summed over the mirrored windows below
    channels = x.shape[1]
    back = np.empty_like(x)
    for m in range(channels):
        lo, hi = max(0, m - (size - 1) // 2), min(channels - 1, m + size // 2)
        back[:, m] = t[:, lo : hi + 1].sum(axis=1)
    return grad * s**-beta - 2 * alpha * beta * x * back
    # END SOLUTION


# %% [check]
lesson05.check_lrn_backward(lrn_backward_numpy)

# %% [markdown]
# ## 4. Dropout
#
# During training, dropout sets each activation of fc6 and fc7 to zero with probability p = 0.5, so no unit can
# rely on a particular other one being there. `minigrad` uses **inverted** dropout: the kept activations are
# scaled by `1/(1 - p)` during training, so their expected value does not change and evaluation needs no
# rescaling; in evaluation dropout is the identity. (The paper multiplied the outputs by 0.5 at test time
# instead; the two agree in expectation.) The gradient flows only through the kept units, with the same factor.

# %%
h = mg.ones((4, 10_000))
dropped = F.dropout(h, p=0.5, training=True).numpy()
print(f"values {np.unique(dropped)}, fraction zeroed {(dropped == 0).mean():.3f}, mean {dropped.mean():.3f}")
assert set(np.unique(dropped)) == {0.0, 2.0} and abs((dropped == 0).mean() - 0.5) < 0.02
assert F.dropout(h, p=0.5, training=False) is h  # evaluation: the identity

layer = nn.Dropout(0.5)
u = mg.tensor(np.arange(1.0, 9.0, dtype=np.float32), requires_grad=True)
mg.manual_seed(42)
out = layer(u)
out.sum().backward()
print("train: out  =", out.numpy(), "\n       grad =", u.grad.numpy())
np.testing.assert_array_equal(u.grad.numpy(), (out.numpy() != 0) * 2.0)  # through the kept units, times 2
mg.manual_seed(42)
np.testing.assert_array_equal(layer(u).numpy(), out.numpy())  # same seed, same mask
layer.eval()
np.testing.assert_array_equal(layer(u).numpy(), u.numpy())
print("eval:  out  =", layer(u).numpy())

# %% [markdown]
# ## Where this lives in the library
#
# - `minigrad/functional/basic.py`: `ReLU`, `Tanh` (`F.relu`, `F.tanh`); `minigrad/nn.py`: `nn.ReLU`, `nn.Tanh`.
# - `minigrad/functional/pool.py`: `MaxPool2d`, `max_pool2d`; its kernels in `minigrad/kernels/pooling.py`
#   keep each window's winner for the backward pass.
# - `minigrad/functional/norm.py`: `LocalResponseNorm`, `local_response_norm` (`alpha_over_size`), `Dropout`,
#   `dropout`; the kernels in `minigrad/kernels/lrn.py` (`lrn_forward`, `lrn_backward` and their `_generic`
#   and `_numba` versions: the same formula as yours, with the mirrored window).
# - `alexnet/model.py`: `AlexNet` puts them in the paper's order; `build_model(..., activation="tanh")` and
#   `alexnet train --activation tanh` swap the unit in the full model.
#
# ## Further exercises
#
# 1. Redo the learning-rate sweep of Fig. 1: each unit with 0.001, 0.002, 0.005 and 0.01. Which is fastest for
#    each, and how does the ratio of their epochs to 25% compare with the paper's six?
# 2. Scale the pixels to [0, 1] before training and rerun Fig. 1. What happens to tanh's saturation, and why?
# 3. Write the LRN backward pass without the Python loop over channels: a cumulative sum over the channel axis
#    gives every window sum at once. Check it with `lesson05.check_lrn_backward`.

# %%
report_runtime()
