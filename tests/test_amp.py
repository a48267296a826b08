"""minigrad.amp: fp32 / tf32 / fp16 training, the loss scaler, and float32 accumulation in float16 products.

The fp16 runs here use NumPy's float16 (and the strict stand-in around it): slow loops instead of BLAS, so
the networks are small. Tolerances, in nats of cross-entropy: the first step's loss (the same weights and
batch in both precisions) within 0.01 of fp32's; over a short run (24 steps of 16 Fashion-MNIST images), the
mean |fp16 loss - fp32 loss| within 0.01 and the mean of the last five steps within 0.05. (Longer runs drift
apart as two runs with different rounding do: a ReLU input within rounding of zero flips, and its unit's
gradient comes or goes.)
"""

from __future__ import annotations

import numpy as np
import pytest
import strict_cupy
from conftest import to_host

import minigrad as mg
from minigrad import backend, nn, optim
from minigrad import functional as F
from minigrad.amp import PRECISIONS, LossScaler, MixedPrecision, all_finite, check_precision
from minigrad.tensor import Tensor

# ----------------------------------------------------------------------------- the loss scaler


def test_the_scale_halves_and_the_step_counts_as_skipped_after_an_overflow():
    scaler = LossScaler(init_scale=1024.0, growth_interval=3)
    scaler.update(finite=True)
    scaler.update(finite=False)
    assert (scaler.scale, scaler.skipped_steps, scaler.good_steps, scaler.steps) == (512.0, 1, 0, 2)


def test_the_scale_grows_after_growth_interval_good_steps_in_a_row():
    scaler = LossScaler(init_scale=8.0, growth_interval=3)
    for _ in range(2):
        scaler.update(finite=True)
    assert scaler.scale == 8.0
    scaler.update(finite=True)
    assert (scaler.scale, scaler.good_steps) == (16.0, 0)


def test_the_scale_never_drops_below_min_scale():
    scaler = LossScaler(init_scale=4.0, min_scale=2.0)
    for _ in range(5):
        scaler.update(finite=False)
    assert scaler.scale == 2.0 and scaler.skipped_steps == 5


def test_the_scaler_state_round_trips():
    scaler = LossScaler(init_scale=64.0, growth_interval=2)
    for finite in (True, False, True):
        scaler.update(finite)
    restored = LossScaler()
    restored.load_state_dict(scaler.state_dict())
    assert (
        restored.state_dict() == scaler.state_dict() == {"scale": 32.0, "good_steps": 1, "skipped_steps": 1, "steps": 3}
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_scale": 0.0}, "init_scale"),
        ({"init_scale": float("inf")}, "init_scale"),
        ({"growth_factor": 1.0}, "growth_factor"),
        ({"backoff_factor": 1.0}, "backoff_factor"),
        ({"growth_interval": 0}, "growth_interval"),
    ],
)
def test_the_scaler_refuses_settings_that_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossScaler(**kwargs)


def test_unknown_precisions_are_refused_with_the_list():
    assert [check_precision(p) for p in PRECISIONS] == ["fp32", "tf32", "fp16"]
    with pytest.raises(ValueError, match="fp32, tf32, fp16"):
        check_precision("bf16")


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_all_finite_finds_one_bad_value_among_many_arrays(xp, bad):
    arrays = [xp.ones((3, 4), dtype=xp.float32), xp.zeros(5, dtype=xp.float16)]
    assert all_finite(arrays)
    arrays[1][2] = bad
    assert not all_finite(arrays)
    assert all_finite([])


# ----------------------------------------------------------------------------- float16 products accumulate in float32


def test_float16_matrix_products_accumulate_in_float32(xp):
    """4096 ones summed in float16 would stop at 2048 (2049 is not a float16); in float32 they reach 4096."""
    ones = xp.ones((2, 4096), dtype=xp.float16)
    product = ones @ ones.T
    np.testing.assert_array_equal(to_host(product), np.full((2, 2), 4096, dtype=np.float16))


def test_float16_convolutions_accumulate_in_float32(device):
    """A 64x8x8 window of ones: 4096 products summed, as in a conv layer's GEMM."""
    x = mg.ones((1, 64, 8, 8), dtype="float16").to(device)
    w = mg.ones((1, 64, 8, 8), dtype="float16").to(device)
    assert F.conv2d(x, w).numpy().item() == 4096


# ----------------------------------------------------------------------------- MixedPrecision


def small_net(seed: int = 0) -> nn.Module:
    """An alexnet-tiny-shaped net at a quarter of its widths: conv/ReLU/LRN/pool blocks, grouped convs, dropout."""
    mg.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(4, 12, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 12, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(12 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.25), nn.Linear(64, 10),
    )  # fmt: skip
    last = net[len(net) - 1]
    last.weight.data = last.weight.data * np.float32(0.05)  # near-uniform first predictions, as alexnet's fc8
    return net


def batches(n: int, batch: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """n batches of the bundled Fashion-MNIST subset, normalised to mean 0 and standard deviation 1."""
    from alexnet.data import load_fashion_mnist_subset

    data = load_fashion_mnist_subset().train
    x = data.images[: n * batch].astype(np.float32) / np.float32(255)
    x = (x - x.mean()) / x.std()
    return [(x[i * batch : (i + 1) * batch], data.labels[i * batch : (i + 1) * batch]) for i in range(n)]


def train(precision: str, steps: int, device: str = "cpu", lr: float = 0.05) -> tuple[list[float], MixedPrecision]:
    model = small_net().to(device).train()
    mp = MixedPrecision(model, precision)
    opt = optim.SGD(mp.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    losses = []
    for step, (x, y) in enumerate(batches(steps)):
        mg.manual_seed(100 + step)  # the same dropout masks in both precisions
        mp.zero_grad()
        loss = F.cross_entropy(mp(Tensor(backend.to_device(x, device))), backend.to_device(y, device))
        mp.backward(loss)
        mp.step(opt)
        losses.append(loss.item())
    return losses, mp


def test_fp32_is_plain_training_bit_for_bit():
    losses, mp = train("fp32", 3)
    model = small_net().train()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    plain = []
    for step, (x, y) in enumerate(batches(3)):
        mg.manual_seed(100 + step)
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), y)
        loss.backward()
        opt.step()
        plain.append(loss.item())
    assert losses == plain
    for a, b in zip(mp.model.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert mp.skipped_steps == 0 and mp.loss_scale is None


def test_fp16_loss_tracks_fp32_on_a_short_run():
    reference, _ = train("fp32", 24)
    losses, mp = train("fp16", 24)
    gaps = np.abs(np.subtract(losses, reference))
    assert gaps[0] <= 0.01
    assert gaps.mean() <= 0.01
    assert abs(np.mean(losses[-5:]) - np.mean(reference[-5:])) <= 0.05
    assert np.mean(losses[-5:]) < losses[0] - 0.1  # and it learns
    assert mp.skipped_steps <= 2


def test_fp16_keeps_float32_master_weights_and_float16_compute(device):
    model = small_net().to(device)
    mp = MixedPrecision(model, "fp16")
    assert all(p.dtype == np.float16 for p in model.parameters())
    assert all(p.dtype == np.float32 for p in mp.parameters())
    for p, master in zip(model.parameters(), mp.parameters()):
        assert master.device == p.device
        np.testing.assert_array_equal(p.numpy(), master.numpy().astype(np.float16))
    x, y = batches(1, batch=4)[0]
    logits = mp(Tensor(backend.to_device(x, device)))
    assert logits.dtype == np.float32  # the loss sees float32 logits
    mp.backward(F.cross_entropy(logits, backend.to_device(y, device)))
    assert all(p.grad.dtype == np.float16 for p in model.parameters())


def test_fp16_runs_local_response_norm_in_float32():
    """x**2 overflows float16 above 256: LRN in float16 would give 0 for an activation of 300."""
    lrn = nn.LocalResponseNorm(1, 1e-4, 0.75, 2.0)
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), lrn)
    model[0].weight.data[...] = 1
    mp = MixedPrecision(model, "fp16")
    out = mp(mg.ones((1, 1, 1, 1)) * 300.0).item()
    expected = 300.0 / (2.0 + 1e-4 * 300.0**2) ** 0.75
    assert out == pytest.approx(expected, rel=2e-3)
    mp.restore()
    assert "forward" not in vars(lrn)  # the layer's own forward again


def test_an_overflow_skips_the_step_leaves_the_weights_and_halves_the_scale():
    model = small_net()
    mp = MixedPrecision(model, "fp16", scaler=LossScaler(init_scale=1024.0))
    opt = optim.SGD(mp.parameters(), lr=0.1)
    before = [p.numpy().copy() for p in mp.parameters()]
    x, y = batches(1, batch=4)[0]
    mp.backward(F.cross_entropy(mp(Tensor(x)), y))
    model[0].weight.grad.data[0, 0, 0, 0] = np.inf  # as an overflow in the backward pass leaves it
    assert mp.step(opt) is False
    assert mp.skipped_steps == 1 and mp.loss_scale == 512.0
    for p, b in zip(mp.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
    mp.zero_grad()
    mp.backward(F.cross_entropy(mp(Tensor(x)), y))
    assert mp.step(opt) is True
    assert not np.array_equal(mp.parameters()[0].numpy(), before[0])
    np.testing.assert_array_equal(model[0].weight.numpy(), mp.parameters()[0].numpy().astype(np.float16))


def test_fp16_gradients_reach_the_master_weights_unscaled():
    """The master gradient is the fp16 gradient of (loss * scale), divided by scale: about fp32's gradient."""
    x, y = batches(1, batch=8)[0]
    reference = small_net().eval()
    F.cross_entropy(reference(Tensor(x)), y).backward()
    mp = MixedPrecision(small_net().eval(), "fp16")
    mp.backward(F.cross_entropy(mp(Tensor(x)), y))
    mp.step(optim.SGD(mp.parameters(), lr=1e-9))
    for p, ref in zip(mp.parameters(), reference.parameters()):
        norm = np.linalg.norm(ref.grad.numpy())
        # float16 rounding, and units whose ReLU input rounds across zero
        assert np.linalg.norm(p.grad.numpy() - ref.grad.numpy()) <= 0.1 * norm


def test_restore_gives_back_a_float32_model_with_the_trained_weights():
    _, mp = train("fp16", 2)
    masters = [p.numpy().copy() for p in mp.parameters()]
    state = mp.master_state_dict()
    model = mp.restore()
    assert all(p.dtype == np.float32 for p in model.parameters())
    for p, m in zip(model.parameters(), masters):
        np.testing.assert_array_equal(p.numpy(), m)
    assert list(state) == [name for name, _ in model.named_parameters()]


def test_master_state_loads_into_a_new_fp16_run():
    _, trained = train("fp16", 2)
    state, scaler_state = trained.master_state_dict(), trained.state_dict()
    mp = MixedPrecision(small_net(seed=5), "fp16")
    mp.load_master_state_dict(state)
    mp.load_state_dict(scaler_state)
    for p, m in zip(mp.parameters(), trained.parameters()):
        np.testing.assert_array_equal(p.numpy(), m.numpy())
    assert mp.loss_scale == trained.loss_scale
    with pytest.raises(ValueError, match="fp16 run loaded into a fp32"):
        MixedPrecision(small_net(), "fp32").load_state_dict(scaler_state)


def test_fp16_needs_a_float32_model():
    with pytest.raises(TypeError, match="float32 model"):
        MixedPrecision(small_net().astype(np.float64), "fp16")


def test_float32_layers_must_be_parameter_free():
    with pytest.raises(ValueError, match="parameter-free"):
        MixedPrecision(small_net(), "fp16", float32_layers=(nn.Linear,))


def test_tf32_on_the_cpu_is_fp32():
    losses_tf32, mp = train("tf32", 2)
    losses_fp32, _ = train("fp32", 2)
    assert losses_tf32 == losses_fp32
    assert mp.tf32 is False  # nothing was switched: NumPy has no TF32
    assert backend.set_tf32(True) is False
    assert backend.gemm_compute_type() == "numpy"


def test_tf32_with_the_stand_in_switches_nothing():
    with backend.use_gpu_module(strict_cupy):
        mp = MixedPrecision(small_net().to("gpu"), "tf32")
        assert mp.tf32 is False and backend.gemm_compute_type() == "numpy"


def test_fp16_trains_on_the_strict_stand_in():
    """Everything stays on the device; the first loss is fp32's (the device draws its own dropout masks)."""
    with backend.use_gpu_module(strict_cupy):
        reference, _ = train("fp32", 3, device="gpu")
        losses, mp = train("fp16", 3, device="gpu")
        assert all(isinstance(p.data, strict_cupy.ndarray) for p in [*mp.parameters(), *mp.model.parameters()])
    assert abs(losses[0] - reference[0]) <= 0.01
    assert all(np.isfinite(losses)) and mp.skipped_steps == 0


# ----------------------------------------------------------------------------- a real GPU


@pytest.mark.gpu
def test_tf32_switches_cupy_float32_products_and_back():
    model = small_net().to("gpu")
    mp = MixedPrecision(model, "tf32")
    try:
        assert mp.tf32 is True
        assert backend.gemm_compute_type(np.float32) == "COMPUTE_TYPE_TF32"
    finally:
        mp.restore()
    assert backend.gemm_compute_type(np.float32) == "COMPUTE_TYPE_DEFAULT"


@pytest.mark.gpu
def test_fp16_loss_tracks_fp32_on_the_gpu():
    reference, _ = train("fp32", 24, device="gpu")
    losses, mp = train("fp16", 24, device="gpu")
    gaps = np.abs(np.subtract(losses, reference))
    assert gaps[0] <= 0.01 and gaps.mean() <= 0.01
    assert abs(np.mean(losses[-5:]) - np.mean(reference[-5:])) <= 0.05
    assert mp.skipped_steps <= 2
