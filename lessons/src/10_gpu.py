# ruff: noqa: E402
# %% [markdown]
# # Lesson 10: From CPU to GPU with CuPy
#
# The paper's network trained for days on two GPUs; every lesson so far ran on the CPU. minigrad runs the same
# code on both: NumPy arrays on the CPU, CuPy arrays on an NVIDIA GPU. CuPy copies NumPy's interface, so an op
# written against "the array module of its inputs", called `xp`, runs on either. This lesson shows how, what
# breaks it, and how this project tests GPU code on a machine without a GPU.
#
# **Goals**
#
# 1. `xp`: one op, two array libraries; devices and `.to("gpu")`;
# 2. what happens without a GPU, and why minigrad probes instead of assuming;
# 3. why no NumPy function may touch device data, shown on the strict CuPy stand-in of the tests;
# 4. you write an op, `Softplus`, that runs on both, and check it on NumPy and on the stand-in;
# 5. the price of a training step on the CPU, measured here, next to GPU figures.

# %%
import minigrad as mg  # first: it sets the BLAS thread settings before NumPy loads its BLAS

# isort: split
import lesson_checks

lesson_checks.start_clock()

import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minigrad.functional as F
from alexnet.model import build_model
from minigrad import backend

# %% [markdown]
# ## 1. `xp`: the array module of the inputs
#
# `minigrad.backend.get_array_module(*arrays)` returns NumPy, or CuPy when any argument is a CuPy array; a
# tensor's `.xp` is the same for its data. Every op asks for `xp` and calls `xp.exp`, `xp.maximum`, ...
# instead of `np.exp`, `np.maximum`: the same line then runs on the CPU or the GPU. `minigrad/backend.py` is
# the only file of the library that imports CuPy.

# %%
x = mg.randn((2, 3))
print(
    "x.device:",
    x.device,
    "| x.xp:",
    x.xp.__name__,
    "| get_array_module(x.data):",
    backend.get_array_module(x.data).__name__,
)
assert x.xp is np and backend.get_array_module(x.data) is np

# %% [markdown]
# A place for arrays is a `Device`: `"cpu"`, `"gpu"` (the first GPU), `"cuda:N"` (GPU number N). Tensors and
# whole models move with `.to(device)`; an op refuses inputs on two different devices.

# %%
for spec in ("cpu", "gpu", "cuda", "cuda:1"):
    print(f"Device({spec!r}) -> {mg.Device(spec)!r}")
assert mg.Device("gpu") == mg.Device("cuda:0") and mg.Device("cuda:1").index == 1

# %% [markdown]
# ## 2. Without a GPU
#
# `import cupy` can succeed on a machine without a GPU (the package installs anywhere); the first operation
# on the device is what fails. So `minigrad.gpu_available()` probes once: it imports CuPy, asks whether a
# device is there, and runs a small matrix product and a random draw on it. The answer and the reason when it
# is no are kept. Asking for the GPU anyway gives an error that says why:

# %%
print("gpu_available():", mg.gpu_available())
print("why not:", backend.gpu_unavailable_reason())
try:
    mg.randn((2, 3)).to("gpu")
    moved = "moved to the GPU"
except RuntimeError as error:
    moved = f"RuntimeError: {error}"
print(".to('gpu'):", moved)
assert mg.gpu_available() == (backend.gpu_unavailable_reason() is None)
assert mg.gpu_available() or "no GPU is usable" in moved

# %% [markdown]
# ## 3. The strict CuPy stand-in
#
# How do we test GPU code on a laptop? The project's tests use a stand-in for the `cupy` module,
# `tests/strict_cupy.py`: its arrays hold NumPy data, but it behaves like CuPy exactly where code written for
# both usually breaks, and more strictly than CuPy in a few places:
#
# - turning a device array into a NumPy array implicitly (`np.asarray(a)`) raises `TypeError`, as in CuPy;
# - any NumPy function called on a device array raises `TypeError` (CuPy would quietly run some of them on the
#   GPU; our rule is stricter: no `np.` call on tensor data inside an op);
# - mixing a host NumPy array with device arrays raises `TypeError`, as in CuPy;
# - only names real CuPy has are reachable on the module.
#
# It lives with the tests, so we add the repository's `tests/` folder to the import path.
# `backend.use_gpu_module(strict_cupy)` then makes it play CuPy's part for the length of a `with` block.

# %%
tests_folder = Path(mg.__file__).resolve().parent.parent / "tests"
if str(tests_folder) not in sys.path:
    sys.path.append(str(tests_folder))
import strict_cupy

with backend.use_gpu_module(strict_cupy):
    x_gpu = mg.randn((2, 3)).to("gpu")
    y_gpu = F.relu(x_gpu) * 2 + 1  # runs through xp = strict_cupy
    print("x_gpu.device:", x_gpu.device, "| type of its data:", type(x_gpu.data).__module__, type(x_gpu.data).__name__)
    print("y_gpu.xp:", y_gpu.xp.__name__, "| back on the host:", y_gpu.to("cpu").numpy().round(3))
    refusal = lesson_checks.fails_on(np.asarray, x_gpu.data)
    print("np.asarray(device data):", type(refusal).__name__, "-", str(refusal)[:110], "...")
assert isinstance(refusal, TypeError) and isinstance(y_gpu.data, strict_cupy.ndarray)

# %% [markdown]
# Why so strict? A CuPy array lives in the GPU's memory; NumPy works on the CPU's. A NumPy function needs the
# data on the host, so either it fails (CuPy refuses the implicit copy: `TypeError`), or, worse, something
# copies the array to the host and back at every op, through the PCIe bus: correct results, and a GPU that
# spends its time waiting. Explicit copies (`.to("cpu")`, `backend.to_numpy`) are fine where they are
# meant, at the edges: loading a batch, reading a loss.
#
# ## 4. An op that runs on both
#
# An op in minigrad is a `Function` with a `forward` on raw arrays and a `backward` that turns the gradient of
# the output into the gradient of the input (lesson 1). Ours: the softplus, `softplus(x) = ln(1 + e^x)`, a
# smooth ReLU. Written as it stands, `e^x` overflows for large `x`; the stable form is
#
# softplus(x) = max(x, 0) + ln(1 + e^(-|x|)),
#
# whose exponent is never positive. Its derivative is the logistic sigmoid, `1 / (1 + e^(-x))`, which never
# overflows as `0.5 * (1 + tanh(x / 2))`.
#
# **Exercise.** Write `Softplus.forward` and `Softplus.backward` with `xp` only (`xp.maximum`, `xp.abs`,
# `xp.exp`, `xp.log1p`, `xp.tanh`, and arithmetic). Keep what backward needs on `self`.


# %% [exercise]
class Softplus(mg.Function):
    """softplus(x) = ln(1 + e^x), elementwise; x: any shape, float32 or float64 (the result keeps the dtype)."""

    def forward(self, x):
        xp = backend.get_array_module(x)
        # BEGIN SOLUTION
        self.sigmoid = 0.5 * (1 + xp.tanh(0.5 * x))  # the derivative, for backward
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
        # END SOLUTION

    def backward(self, grad):
        # BEGIN SOLUTION
        return grad * self.sigmoid
        # END SOLUTION


# %% [check]
from lesson_checks.lesson10 import check_softplus

check_softplus(Softplus)

# %% [markdown]
# The check ran your op on NumPy and on the stand-in, forward and backward, against float64 references, with
# inputs up to 40 in size (where the naive `ln(1 + e^x)` overflows in float32), and against finite differences.
#
# Now the same op written with NumPy calls. It gives the right numbers on the CPU, and it is what an op
# written before the GPU existed typically looks like:


# %%
class NumpySoftplus(mg.Function):
    def forward(self, x):
        x = np.asarray(x)  # a habit that breaks the GPU path
        self.sigmoid = 1 / (1 + np.exp(-x))
        return np.logaddexp(0, x)

    def backward(self, grad):
        return grad * self.sigmoid


values = mg.tensor([-3.0, 0.0, 3.0])
print("NumPy version on the CPU:", NumpySoftplus.apply(values).numpy(), "| yours:", Softplus.apply(values).numpy())
with backend.use_gpu_module(strict_cupy):
    on_device = values.to("gpu")
    failure = lesson_checks.fails_on(NumpySoftplus.apply, on_device)
    print(f"NumPy version on the device: {type(failure).__name__}: {str(failure)[:120]} ...")
    print("yours on the device:", Softplus.apply(on_device).to("cpu").numpy())
assert isinstance(failure, TypeError)
assert np.allclose(NumpySoftplus.apply(values).numpy(), Softplus.apply(values).numpy(), rtol=1e-6)

# %% [markdown]
# On real CuPy `np.asarray(device_array)` raises `TypeError` in the same way. (Had the forward pass copied the
# array to the host explicitly, the engine would catch it too: `Function.apply` refuses a forward pass that
# returns a host array for device inputs, because the result would quietly leave the GPU.)
#
# Every op of AlexNet follows these rules, so a whole training step runs on the stand-in: forward, loss,
# backward and the SGD update, on "device" arrays from start to end. Its numbers match the CPU's (the
# stand-in computes with NumPy underneath; the GPU path takes the `xp` versions of the kernels instead of
# the Numba ones, so the last digits may differ). Dropout is off for the comparison: every device has its own
# seeded random stream (`backend.rng(device)`), so the two would draw different masks.


# %%
def one_step_loss(device: str) -> float:
    """The loss of one SGD step of alexnet-tiny on a fixed batch of 4 images, on `device`."""
    mg.manual_seed(0)
    model = build_model("alexnet-tiny").to(device).eval()  # no dropout: each device draws its own masks
    images = mg.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28), dtype=np.float32)).to(device)
    labels = np.arange(4)
    optimizer = mg.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return loss.item()


cpu_loss = one_step_loss("cpu")
with backend.use_gpu_module(strict_cupy):
    stand_in_loss = one_step_loss("gpu")
print(f"loss after the second step: CPU {cpu_loss:.6f} | stand-in 'GPU' {stand_in_loss:.6f}")
assert abs(cpu_loss - stand_in_loss) < 1e-5 * abs(cpu_loss)

# %% [markdown]
# ## 5. What the GPU buys
#
# One training step (forward, loss, backward, the paper's SGD update) on a random batch already on the
# device, timed over a few steps after one warm-up step (which includes one-off costs: compiling kernels,
# allocating buffers). On the GPU, work is queued and runs asynchronously, so `backend.synchronize()` waits
# for it before reading the clock.


# %%
def images_per_second(model_name: str, batch: int, device: str, steps: int = 3) -> float:
    """Training images per second of `model_name` on `device`: batch * steps / (time of `steps` steps)."""
    mg.manual_seed(0)
    model = build_model(model_name).to(device)
    size, channels = model.config.image_size, model.config.in_channels
    images = mg.tensor(np.random.default_rng(0).standard_normal((batch, channels, size, size), dtype=np.float32))
    images = images.to(device)
    labels = np.arange(batch) % model.config.num_classes
    optimizer = mg.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()  # warm-up
    backend.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    backend.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


with backend.use_gpu_module(strict_cupy):  # the device path of the function runs (its speed means nothing)
    assert images_per_second("alexnet-tiny", 2, "gpu", steps=1) > 0

cpu = {  # model: (images per second, how it was measured)
    "paper AlexNet": (images_per_second("alexnet", 32, "cpu", steps=2), "step, batch 32"),
    "alexnet-tiny": (images_per_second("alexnet-tiny", 128, "cpu"), "step, batch 128"),
}
for name, (rate, how) in cpu.items():
    print(f"CPU, measured in this run: {name}, {how}: {rate:,.0f} images/s")
assert all(rate > 0 for rate, _ in cpu.values())

# %% [markdown]
# This machine has no GPU, so the GPU bars below are figures measured on an NVIDIA H200 (CuPy 14.2, float32)
# and recorded in the project's README.md ("Measured here"), not measured in this run; with a GPU present the
# cell measures them with the function above instead. The tiny network's GPU figure in the README is a whole
# `alexnet train --device gpu` run (data loading included), not an isolated step.

# %%
if mg.gpu_available():
    gpu = {
        "paper AlexNet": (images_per_second("alexnet", 128, "gpu"), "step, batch 128"),
        "alexnet-tiny": (images_per_second("alexnet-tiny", 128, "gpu"), "step, batch 128"),
    }
    gpu_label = f"GPU ({backend.Device('gpu')}), measured in this run"
else:
    gpu = {  # README.md, "Measured here"
        "paper AlexNet": (3_200, "step, batch 128, H200"),  # the training-step row: 3,200 img/s fp32
        "alexnet-tiny": (12_000, "alexnet train run, H200"),  # `alexnet train --device gpu`: ~12,000-13,300 img/s
    }
    gpu_label = "GPU: measured on an NVIDIA H200, not in this run (README.md)"

names = list(cpu)
fig, ax = plt.subplots(figsize=(10, 3.8))
ax.barh(np.arange(2) - 0.2, [cpu[n][0] for n in names], 0.4, label="CPU, measured in this run")
hatch = "" if mg.gpu_available() else "//"
ax.barh(np.arange(2) + 0.2, [gpu[n][0] for n in names], 0.4, label=gpu_label, hatch=hatch, color="tab:green")
for i, n in enumerate(names):
    for offset, (rate, how) in ((-0.2, cpu[n]), (0.2, gpu[n])):
        ax.text(rate, i + offset, f" {rate:,.0f} ({how})", va="center", fontsize=9)
ax.set_yticks(range(2), names)
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlim(right=max(rate for rate, _ in gpu.values()) * 30)
ax.set_xlabel("training images per second (log scale)")
ax.set_title("a training step: CPU vs GPU")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=9)
fig.tight_layout()
plt.show()
speedup = {n: gpu[n][0] / cpu[n][0] for n in names}
for n in names:
    print(f"{n}: the GPU figure is {speedup[n]:,.0f} times the CPU's measured here")
assert speedup["paper AlexNet"] > speedup["alexnet-tiny"] > 1

# %% [markdown]
# The paper's network gains most: its step is large matrix products, which a GPU runs at tens of TFLOP/s
# against a few hundred GFLOP/s for two CPU cores. The tiny network gains less, because its products are too
# small to fill the GPU, and each op's fixed costs (a kernel launch, Python) weigh more.
#
# ## Where this lives in the library
#
# - `minigrad/backend.py`: `Device`, `get_array_module`, `to_device`, `to_numpy`, `gpu_available`,
#   `gpu_unavailable_reason` (the probe), `synchronize`, `use_gpu_module`, `rng` (seeded random numbers per
#   device); the only file that imports CuPy.
# - `minigrad/tensor.py`: `Tensor.to`, `Tensor.xp`, `Function.apply`, whose checks live in
#   `minigrad/guards.py` (inputs on two devices, a forward that leaves the device); `minigrad/nn.py`:
#   `Module.to`.
# - `minigrad/functional/basic.py`: the elementwise ops written like your `Softplus` (`Sigmoid`, `Tanh`,
#   `ReLU`); `minigrad/kernels/`: the Numba CPU kernels and their `xp`-generic twins that the GPU runs.
# - `tests/strict_cupy.py` and `tests/conftest.py`: the stand-in and the `xp` / `device` fixtures that run
#   every op test on NumPy, the stand-in and real CuPy (tests marked `gpu`, skipped without one).
# - `benchmarks/train_step.py --device gpu`: the step timings, and `alexnet train --device gpu`.
#
# ## Further exercises
#
# 1. Add Softplus to a small network (`x -> Linear -> Softplus -> Linear`), train it for a few steps on the
#    stand-in and on the CPU, and compare the losses.
# 2. Find an op in `minigrad/functional/` that creates a new array (`zeros`, `arange`, a random draw). How does
#    it make sure the array is born on the right device?
# 3. Time `images_per_second("alexnet", 32, "cpu")` with `steps=1` and with `steps=5`, and the warm-up step
#    alone. Why does a benchmark skip its first step?

# %%
lesson_checks.report_runtime()
