# %% [markdown]
# # Lesson 2: Broadcasting, a linear layer, softmax + cross-entropy, and gradient checking
#
# AlexNet ends in three fully connected layers and a softmax over the classes, trained by minimising the
# cross-entropy. This lesson derives the backward pass of each, you write them as `minigrad` Functions, and
# they train a classifier on Fashion-MNIST. Then we look hard at the tool that tells a right gradient from a
# wrong one: finite differences.
#
# **Goals**
#
# 1. undo broadcasting in the backward pass (`sum_to`);
# 2. derive the gradients of `y = x W^T + b` and write a `Linear` Function;
# 3. derive the gradient of softmax + cross-entropy, `(p - y) / N`, and write a stable `SoftmaxCrossEntropy`;
# 4. see why the first loss of a 10-class classifier is ln(10), and train one with your two Functions;
# 5. understand the error of a finite difference (the figure: error against the step, float32 and float64)
#    and read `minigrad.gradcheck`'s report.

# %%
import matplotlib.pyplot as plt
import numpy as np
from lesson_checks import fails_on, lesson02, report_runtime, start_clock

import minigrad as mg
import minigrad.functional as F
from alexnet.data import CLASS_NAMES, load_fashion_mnist_subset

start_clock()
mg.manual_seed(0)

# %% [markdown]
# ## 1. Broadcasting forward, `sum_to` backward
#
# Adding a bias of shape (4,) to a (3, 4) matrix *stretches* the bias over the 3 rows. In the backward pass
# the upstream gradient has the output's shape (3, 4), but the bias needs a (4,) gradient: each bias entry was
# used 3 times, so by the rule of lesson 1 (a node used several times gets the **sum** of its gradients) its
# gradient is the sum over the rows. `F.sum_to(grad, shape)` is this inverse of broadcasting: it sums over the
# leading axes broadcasting added, and over the axes where the input had size 1. Every binary op calls it.

# %%
m = mg.randn((3, 4), requires_grad=True)
bias = mg.zeros((4,), requires_grad=True)
g = np.arange(12, dtype=np.float32).reshape(3, 4)  # an upstream gradient to push back
(m + bias).backward(g)
print("bias.grad        =", bias.grad.numpy())
print("g summed on rows =", g.sum(axis=0))
np.testing.assert_array_equal(bias.grad.numpy(), g.sum(axis=0))

ones = np.ones((2, 3, 4), dtype=np.float32)
for shape, count in [((3, 4), 2), ((1, 4), 6), ((3, 1), 8), ((), 24)]:
    s = F.sum_to(ones, shape)
    print(f"(2, 3, 4) -> {shape!s:7}: shape {s.shape}, each entry sums {int(s.reshape(-1)[0])} ones")
    assert s.shape == shape and np.all(s == count)


# %% [markdown]
# Forget `sum_to` and the engine stops you: `Tensor.backward` checks that every gradient has its input's shape.


# %%
class AddWithoutSumTo(mg.Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad  # wrong for a broadcast input: grad has the output's shape


error = fails_on(AddWithoutSumTo.apply(m, bias).sum().backward)
print(type(error).__name__ + ":", error)
assert isinstance(error, RuntimeError) and "shape (3, 4)" in str(error)

# %% [markdown]
# ## 2. The linear layer
#
# A fully connected layer maps a batch `x` (N, in) to `y = x W^T + b` (N, out), with `W` (out, in) and `b`
# (out,): entry by entry, `y[n, j] = sum_i x[n, i] W[j, i] + b[j]`. Given `G = dL/dy` (N, out), the chain rule
# entry by entry:
#
# - `dL/dx[n, i] = sum_j G[n, j] W[j, i]`, so **dx = G W** (N, out) @ (out, in);
# - `dL/dW[j, i] = sum_n G[n, j] x[n, i]`, so **dW = G^T x** (out, N) @ (N, in);
# - `dL/db[j] = sum_n G[n, j]`, so **db = G summed over the rows**: the bias was broadcast over the batch.
#
# A check that catches most mistakes: each gradient has its parameter's shape, and here there is only one way
# to multiply the arrays at hand into that shape.
#
# **Exercise.** Write `Linear` as a `minigrad` Function: `forward` gets the raw NumPy arrays and keeps what
# `backward` needs on `self`; `backward` returns one gradient per input, in the order of the inputs.


# %% [exercise]
class Linear(mg.Function):
    def forward(self, x, w, b):
        """x (N, in), w (out, in), b (out,) -> y = x @ w.T + b, shape (N, out)."""
        # BEGIN SOLUTION
        self.x, self.w = x, w
        return x @ w.T + b
        # END SOLUTION

    def backward(self, grad):
        """grad = dL/dy (N, out) -> (dL/dx, dL/dw, dL/db), each of its input's shape."""
        # BEGIN SOLUTION
        return grad @ self.w, grad.T @ self.x, grad.sum(axis=0)
        # END SOLUTION


# %% [check]
lesson02.check_linear(Linear)

# %% [markdown]
# ## 3. Softmax and cross-entropy: the gradient is (p - y) / N
#
# The last layer gives each image K scores (logits) `z`. Softmax turns them into probabilities
# `p[k] = exp(z[k]) / sum_j exp(z[j])`, and the loss of an image with label `t` is `-log p[t]`, averaged over
# the batch of N images:
#
# `L = -(1/N) sum_n log p[n, t_n]`,  with  `log p[n, k] = z[n, k] - log sum_j exp(z[n, j])`.
#
# Differentiate one image's term by `z[n, k]`: the first part gives `-1` when `k = t_n` (else 0), the second
# gives `+exp(z[n, k]) / sum_j exp(z[n, j]) = p[n, k]`. With `y` the one-hot labels:
#
# **dL/dz = (p - y) / N**.
#
# It is the difference between what the network predicts and what it should predict: no exponentials left
# in the backward pass, and never larger than 1/N in size. That is why softmax and cross-entropy are one op
# here (and in every framework): apart, the backward pass would divide by a `p` that can underflow to 0.
#
# **Stability.** `exp(1000)` overflows. Softmax does not change when the same number is subtracted from every
# logit of a row (it cancels between numerator and denominator), so subtract the row's maximum first: the
# largest exponent is then `exp(0) = 1`.
#
# **Exercise.** Write `SoftmaxCrossEntropy`. The labels are not a tensor: they come in as a keyword of `apply`
# (`SoftmaxCrossEntropy.apply(logits, labels=labels)`), which `mg.Function` stores as `self.labels`.


# %% [exercise]
class SoftmaxCrossEntropy(mg.Function):
    def forward(self, logits):
        """logits (N, K), self.labels (N,) ints -> the mean cross-entropy, a 0-d array. Subtract each row's max."""
        # BEGIN SOLUTION
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.p = np.exp(log_p)
        return -log_p[np.arange(n), self.labels].mean()
        # END SOLUTION

    def backward(self, grad):
        """grad = dL/d(loss), a 0-d array -> dL/dlogits = grad * (p - y) / N, shape (N, K)."""
        # BEGIN SOLUTION
        n = self.p.shape[0]
        d = self.p.copy()
        d[np.arange(n), self.labels] -= 1
        return d * (grad / n)
        # END SOLUTION


# %% [check]
lesson02.check_softmax_cross_entropy(SoftmaxCrossEntropy)

# %% [markdown]
# ## 4. Your two Functions train a classifier
#
# The bundled Fashion-MNIST subset: 9,000 training and 2,000 test images of 28x28 pixels, 10 classes. A linear
# classifier reads the 784 pixels of an image and gives 10 logits. With tiny initial weights all logits are
# close to 0, every class gets `p = 1/10`, and the first loss must be **-log(1/10) = ln(10) = 2.303**: the
# first number to check in any classification run (a different one means a bug before training even starts).

# %%
data = load_fashion_mnist_subset()
x_train = data.train.images.reshape(len(data.train), -1).astype(np.float32) / 255
x_test = data.test.images.reshape(len(data.test), -1).astype(np.float32) / 255
mean = x_train.mean(axis=0)
x_train, x_test = x_train - mean, x_test - mean
y_train, y_test = data.train.labels, data.test.labels

rng = np.random.default_rng(0)
W = mg.tensor(rng.standard_normal((10, 784)) * 1e-3, dtype="float32", requires_grad=True)
b = mg.zeros((10,), requires_grad=True)
loss0 = SoftmaxCrossEntropy.apply(Linear.apply(mg.tensor(x_train), W, b), labels=y_train).item()
print(f"initial loss {loss0:.4f}, ln(10) = {np.log(10):.4f}")
assert abs(loss0 - np.log(10)) < 0.01

# %% [markdown]
# Plain stochastic gradient descent: batches of 100 images, `w <- w - lr * dL/dw` on the raw arrays (no graph
# is recorded for the update), three passes over the data.

# %%
lr, losses = 0.1, []
for _epoch in range(3):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order), 100):
        batch = order[start : start + 100]
        loss = SoftmaxCrossEntropy.apply(Linear.apply(mg.tensor(x_train[batch]), W, b), labels=y_train[batch])
        W.zero_grad()
        b.zero_grad()
        loss.backward()
        W.data -= lr * W.grad.data
        b.data -= lr * b.grad.data
        losses.append(loss.item())

with mg.no_grad():
    predicted = Linear.apply(mg.tensor(x_test), W, b).numpy().argmax(axis=1)
accuracy = (predicted == y_test).mean()
print(f"after {len(losses)} steps: last loss {np.mean(losses[-50:]):.3f}, test accuracy {accuracy:.1%}")
assert np.mean(losses[-50:]) < 0.7 and accuracy > 0.75

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 1.4]})
axes[0].plot(losses, lw=0.8)
axes[0].axhline(np.log(10), color="C3", ls="--", label="ln(10)")
axes[0].set(xlabel="step", ylabel="training loss", title="softmax classifier, your Functions")
axes[0].legend()
templates = W.numpy().reshape(2, 5, 28, 28).transpose(0, 2, 1, 3).reshape(56, 140)  # a 2 x 5 grid of rows
limit = np.abs(templates).max()
axes[1].imshow(templates, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="none")
for k, name in enumerate(CLASS_NAMES):
    axes[1].text(28 * (k % 5) + 1, 56 * (k // 5) / 2 + 3, name, fontsize=7)
axes[1].set_title("the 10 rows of W as 28x28 images (red: votes for the class)", fontsize=9)
axes[1].set_axis_off()
plt.show()

# %% [markdown]
# Each row of `W` is a template: the class's score is the dot product of the image with it, so red pixels
# vote for the class and blue ones against: blurred outlines of the clothes.
#
# ## 5. Gradient checking, and the error of a finite difference
#
# How did the checks above know your gradients were right? By comparing them with **central differences**:
#
# `dL/dw ≈ (L(w + eps) - L(w - eps)) / (2 eps)`.
#
# Its error has two parts. Taylor's theorem gives the **truncation** error `eps^2 |L'''| / 6`: it shrinks as eps
# shrinks. But `L(w + eps)` and `L(w - eps)` are rounded to the dtype's precision `u` (about `6e-8` in float32,
# `1e-16` in float64), and their difference is divided by `2 eps`: a **round-off** error of about
# `u |L| / eps`, which *grows* as eps shrinks. The sum is smallest near `eps = (3 u |L| / |L'''|)^(1/3)`, where
# both are of the order of `u^(2/3)` (times factors that depend on L): about a million times smaller in float64
# than in float32. Let's measure it on one weight of the classifier, with the exact gradient from the
# library's backward in float64.

# %%
xb, yb = mg.tensor(x_train[:200].astype(np.float64)), y_train[:200]
w64 = mg.tensor(W.numpy().astype(np.float64), requires_grad=True)
b64 = mg.tensor(b.numpy().astype(np.float64))
F.cross_entropy(F.linear(xb, w64, b64), yb).backward()
entry = (int(yb[0]), int(np.argmax(np.abs(x_train[0]))))  # a weight that the first image uses
exact = w64.grad.numpy()[entry]


def loss_at(w, dtype):
    with mg.no_grad():
        z = F.linear(xb.astype(dtype), mg.tensor(w, dtype=dtype), b64.astype(dtype))
        return F.cross_entropy(z, yb).item()


steps = np.logspace(-12, 0, 37)
errors = {}
for dtype in ("float32", "float64"):
    errs = []
    for eps in steps:
        up, down = W.numpy().astype(dtype), W.numpy().astype(dtype)
        up[entry] += eps
        down[entry] -= eps
        span = float(up[entry]) - float(down[entry])  # the step the dtype really took (it rounds w + eps)
        numeric = (loss_at(up, dtype) - loss_at(down, dtype)) / span if span else 0.0
        errs.append(abs(numeric - exact) / abs(exact))
    errors[dtype] = np.array(errs)
    best = int(np.argmin(errors[dtype]))
    print(f"{dtype}: smallest relative error {errors[dtype][best]:.1e} at eps = {steps[best]:.0e}")

best32, best64 = (steps[np.argmin(errors[d])] for d in ("float32", "float64"))
assert errors["float64"].min() < 1e-8 and 1e-9 <= best64 <= 1e-3
assert errors["float32"].min() > 100 * errors["float64"].min() and best32 > best64
right = (steps >= 1e-3) & (steps <= 1e-1)  # where truncation dominates in float64
slope = np.polyfit(np.log10(steps[right]), np.log10(errors["float64"][right]), 1)[0]
print(f"float64, eps from 1e-3 to 1e-1: the error grows as eps^{slope:.2f}")
assert 1.8 < slope < 2.2
assert errors["float64"][0] > 1e3 * errors["float64"].min()  # round-off: the smallest step is far worse
assert errors["float32"][0] == 1.0  # both float32 losses round to the same number: the difference is 0

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for dtype, style in (("float32", "o-"), ("float64", "s-")):
    ax.loglog(steps, np.maximum(errors[dtype], 1e-17), style, ms=3, label=dtype)
ax.set(xlabel="finite-difference step eps", ylabel="relative error of dL/dw", title="central differences")
ax.axvline(1e-6, color="0.6", ls=":", label="gradcheck's default eps")
ax.legend()
plt.show()

# %% [markdown]
# Right of the minimum the truncation error falls as `eps^2` (a slope of 2); left of it round-off rises as
# `1/eps`. In float32 the minimum is high and wide, and for small steps the two losses round to the same
# float32 number: the difference is 0, a relative error of 1. That is why `mg.gradcheck` refuses float32
# inputs and steps by `eps = 1e-6` in float64, where the error is far below any real bug.
#
# ## 6. Reading `mg.gradcheck`
#
# `mg.gradcheck(fn, *inputs)` perturbs every entry of every float64 input that requires a gradient (or, for
# inputs with more than `max_elements` entries, random directions), and compares with the backward pass
# under a random upstream gradient `u` (it checks the scalar `sum(fn(x) * u)`, so every output entry counts).
# An entry passes when `|analytic - numeric| <= atol + rtol |numeric|`. Here is a Linear whose `dW` is off by a
# factor of 2.


# %%
class BrokenLinear(Linear):
    def backward(self, grad):
        dx, dw, db = super().backward(grad)
        return dx, 2 * dw, db


xs = mg.randn((4, 3), dtype="float64", requires_grad=True)
ws = mg.randn((2, 3), dtype="float64", requires_grad=True)
bs = mg.randn((2,), dtype="float64", requires_grad=True)
good = mg.gradcheck(Linear.apply, xs, ws, bs, name="Linear")
bad = mg.gradcheck(BrokenLinear.apply, xs, ws, bs, name="BrokenLinear")
print(good, bad, sep="\n\n")
assert good.passed and not bad.passed
assert [c.passed for c in bad.inputs] == [True, False, True]  # only input 1 (W) is wrong

# %% [markdown]
# One row per input: its shape, `elements` (every entry perturbed) or `directions`, how many were compared,
# and the largest absolute and relative errors. Input 1 fails with a relative error of 0.5: `(2 - 1) / 2`, the
# factor it got wrong. A failure is not always a bug: ReLU has a kink at 0, and a central difference that
# straddles it sees the average slope 0.5 where the backward pass says 0. Keep test inputs away from kinks.

# %%
kink = mg.gradcheck(F.relu, mg.tensor([0.0, 1.0, -1.0], dtype="float64", requires_grad=True), name="relu at 0")
print(kink)
assert not kink.passed

# %% [markdown]
# ## Where this lives in the library
#
# - `minigrad/functional/basic.py`: `sum_to`, and every binary op (`Add`, `Mul`, ...) calling it.
# - `minigrad/functional/loss.py`: `Linear` and `linear` (the same three products as yours), `CrossEntropy` and
#   `cross_entropy` (`(p - y) / N`), `LogSoftmax`, `log_softmax`, `softmax`.
# - `minigrad/nn.py`: `nn.Linear`, the layer that holds `W` and `b` as `Parameter`s and calls `F.linear`.
# - `minigrad/gradcheck.py`: `gradcheck`, `GradcheckReport`, `format_table`; `minigrad gradcheck` on the
#   command line checks every op and layer of the library this way.
#
# ## Further exercises
#
# 1. Write `Linear` without the bias and with inputs of shape (N, T, in) (a sequence): where does `sum_to`
#    come in now?
# 2. Replace the 0-d upstream gradient by a per-example weighting: a `WeightedCrossEntropy` that takes
#    weights `s` (N,) and returns `sum_n s_n * loss_n / sum_n s_n`. Derive its gradient and check it.
# 3. Redo the figure of section 5 for `F.tanh` at `x = 0.3`. Where is the minimum now, and why does the
#    estimate `u^(2/3)` still hold?

# %%
report_runtime()
