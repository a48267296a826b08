"""Specification of `minigrad.nn.Module` and the optimizers.

Modules: parameter names, modes, devices, dtypes, state dicts and their error messages.
Optimizers: SGD and Adam against their update rules written out by hand in NumPy, state round trips,
ReduceLROnPlateau's schedule, and a tiny network that really learns.
Tests that take `device` run on NumPy, the strict CuPy stand-in and real CuPy (skipped without a GPU).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_host

import minigrad as mg
import minigrad.functional as F
from minigrad import backend, nn, optim

TOL = {
    np.float32: {"rtol": 1e-5, "atol": 1e-6},
    np.float64: {"rtol": 1e-12, "atol": 1e-14},
}


def mlp(hidden=3):
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))


class Net(nn.Module):
    """A module with a nested Sequential and a direct child, as a model file would write it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.head = nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.head(self.drop(self.flatten(self.features(x))))


# ----------------------------------------------------------------------------- Module


def test_sequential_names_parameters_by_position():
    names = [name for name, _ in mlp().named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_named_parameters_follow_attribute_names_in_definition_order():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["features.0.weight", "features.0.bias", "head.weight", "head.bias"]
    assert net.parameters() == [p for _, p in net.named_parameters()]
    assert net.num_parameters() == sum(p.size for p in net.parameters())


def test_parameters_require_grad_and_a_missing_bias_is_not_one():
    layer = nn.Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert all(p.requires_grad for p in mlp().parameters())


def test_module_subclasses_must_call_super_init():
    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.zeros(2))

    with pytest.raises(RuntimeError, match=r"Forgetful.__init__ must call super\(\).__init__\(\)"):
        Forgetful()


def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert net.eval() is net
    assert all(not m.training for _, m in net.named_modules())
    assert net.train() is net
    assert all(m.training for _, m in net.named_modules())
    assert len(list(net.named_modules())) == 8  # net, features, its three layers, flatten, head, drop


def test_eval_mode_makes_the_output_deterministic():
    net = Net().eval()
    x = mg.randn((2, 1, 4, 4))
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())


def test_zero_grad_clears_every_parameter(device):
    model = mlp().to(device)
    F.cross_entropy(model(mg.randn((5, 4), device=device)), [0, 1, 1, 0, 1]).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_to_device_moves_the_parameters_in_place(device):
    model = mlp()
    before = model.parameters()
    values = [p.numpy().copy() for p in before]
    assert model.to(device) is model
    after = model.parameters()
    assert all(a is b for a, b in zip(after, before))  # the same Parameter objects (optimizers keep them)
    assert all(p.device == device for p in after)
    assert model.device == device
    for p, value in zip(after, values):
        np.testing.assert_array_equal(p.numpy(), value)
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())


def test_an_optimizer_made_before_to_device_still_updates_the_model(device):
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    model.to(device)
    before = [p.numpy().copy() for p in model.parameters()]
    F.cross_entropy(model(mg.randn((4, 4), device=device)), [0, 1, 0, 1]).backward()
    opt.step()
    assert any(not np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before))


def test_a_shared_parameter_is_listed_once_and_updated_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)  # weight tying: one layer used twice
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert model.num_parameters() == 6
    w = shared.weight.numpy().copy()
    shared.weight.grad = mg.tensor(np.ones((2, 2), np.float32))
    optim.SGD(model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0).step()
    np.testing.assert_allclose(shared.weight.numpy(), w - 0.1)  # once, not twice


def test_reassigning_a_parameter_keeps_its_place_in_the_order():
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter(mg.zeros((2, 3)))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_replacing_a_parameter_by_a_plain_tensor_is_refused():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"Linear.weight is a Parameter"):
        layer.weight = mg.zeros((2, 3))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_a_parameter_moved_to_a_device_is_still_a_parameter(device):
    layer = nn.Linear(3, 2)
    moved = layer.weight.to(device)
    assert isinstance(moved, nn.Parameter) and moved.requires_grad and moved.device == device
    layer.bias.requires_grad = False  # frozen
    assert layer.bias.to(device).requires_grad is False
    layer.weight = moved
    assert [p is moved for p in layer.parameters()] == [True, False]


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam], ids=["SGD", "Adam"])
def test_optimizer_buffers_follow_a_model_moved_after_a_step(make, device):
    """Momentum and Adam's moments made on the CPU are moved along with the model: same result as a
    run that was on the device from the start."""
    gen = np.random.default_rng(4)
    x, labels = gen.standard_normal((4, 4)).astype(np.float32), [0, 1, 0, 1]

    def train(move_after_first_step):
        backend.manual_seed(0)
        model = mlp()
        if not move_after_first_step:
            model.to(device)
        opt = make(model.parameters(), lr=0.05)
        for step in range(3):
            model.zero_grad()
            F.cross_entropy(model(mg.tensor(x, device=model.device)), labels).backward()
            opt.step()
            if move_after_first_step and step == 0:
                model.to(device)
        return [p.numpy() for p in model.parameters()]

    for moved, direct in zip(train(True), train(False)):
        np.testing.assert_allclose(moved, direct, rtol=1e-6, atol=1e-7)


def test_astype_converts_every_parameter_in_place(device):
    model = mlp().to(device)
    before = model.parameters()
    F.cross_entropy(model(mg.randn((4, 4), device=device)), [0, 1, 0, 1]).backward()
    assert model.astype(np.float64) is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(a is b for a, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())  # old float32 gradients would not fit
    assert model(mg.randn((2, 4), dtype=np.float64, device=device)).dtype == np.float64


def test_state_dict_returns_numpy_copies(device):
    model = mlp().to(device)
    state = model.state_dict()
    assert list(state) == [name for name, _ in model.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    original = model.parameters()[0].numpy().copy()
    state["0.weight"] += 1  # changing the copy leaves the model alone
    np.testing.assert_array_equal(model.parameters()[0].numpy(), original)


def test_load_state_dict_round_trip_gives_the_same_function(device):
    backend.manual_seed(1)
    source = mlp().to(device)
    backend.manual_seed(2)
    target = mlp().to(device)
    x = mg.randn((3, 4), device=device)
    assert not np.array_equal(source(x).numpy(), target(x).numpy())
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())
    assert all(p.device == device for p in target.parameters())  # loading keeps the target's device


def test_load_state_dict_lists_missing_and_unexpected_keys():
    model = mlp()
    state = model.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['0.bias'\], unexpected keys \['extra'\]"):
        model.load_state_dict(state)


def test_load_state_dict_names_the_key_and_both_shapes_on_a_mismatch():
    model = mlp()
    state = model.state_dict()
    state["2.weight"] = np.zeros((5, 3), np.float32)
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(5, 3\), the parameter \(2, 3\)"):
        model.load_state_dict(state)
    # Nothing was loaded: the check comes before any copy.
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)


def test_repr_of_a_sequential_shows_each_layer():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)))
    assert text.splitlines() == [
        "Sequential(",
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))",
        "  (1): ReLU()",
        "  (2): Flatten()",
        "  (3): Linear(in_features=8, out_features=2, bias=True)",
        ")",
    ]


def test_repr_of_nested_modules_indents_children():
    lines = repr(Net()).splitlines()
    assert lines[0] == "Net("
    assert lines[1] == "  (features): Sequential("
    assert lines[2].startswith("    (0): Conv2d(1, 2")
    assert "  (drop): Dropout(p=0.5)" in lines


# ----------------------------------------------------------------------------- optimizers

STEPS = 3


def parameters_and_gradients(device, dtype):
    """Two parameters and, for each of 3 steps, a seeded gradient for each (host float64 copies too)."""
    gen = np.random.default_rng(3)
    shapes = [(3, 2), (4,)]
    values = [gen.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[gen.standard_normal(s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    # copy(): on the CPU a tensor wraps the very array it is given, and optimizers update in place.
    params = [nn.Parameter(mg.tensor(v.copy(), device=device)) for v in values]
    return params, values, grads


def run_steps(opt, params, grads, device):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = mg.tensor(g, device=device)
        opt.step()


def test_sgd_follows_the_papers_rule(device, dtype):
    lr, momentum, decay = 0.1, 0.9, 0.0005
    params, values, grads = parameters_and_gradients(device, dtype)
    run_steps(optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay), params, grads, device)
    for i, w in enumerate(values):
        w, v = w.astype(np.float64), np.zeros(w.shape)
        for step_grads in grads:
            v = momentum * v - decay * lr * w - lr * step_grads[i]  # Krizhevsky et al. 2012, Sec. 5
            w = w + v
        assert params[i].dtype == dtype
        np.testing.assert_allclose(to_host(params[i].data), w, **TOL[dtype])


def test_sgd_skips_parameters_without_a_gradient(device):
    params, values, _ = parameters_and_gradients(device, np.float32)
    opt = optim.SGD(params, lr=0.1)
    params[0].grad = mg.tensor(np.ones_like(values[0]), device=device)
    opt.step()
    np.testing.assert_array_equal(to_host(params[1].data), values[1])
    assert not np.array_equal(to_host(params[0].data), values[0])


def adam_reference(w, grads, lr, b1, b2, eps, weight_decay):
    """Adam as Kingma & Ba (2015) write it at the end of Sec. 2: the bias corrections folded into the step size.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);
    w <- w - lr_t m / (sqrt(v) + eps)      (g includes weight_decay * w)
    """
    m, v = np.zeros(w.shape), np.zeros(w.shape)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        w = w - lr_t * m / (np.sqrt(v) + eps)
    return w


def adam_algorithm_1(w, grads, lr, b1, b2, eps):
    """Adam as Algorithm 1 of the paper (and PyTorch) writes it: bias-corrected m_hat and v_hat."""
    m, v = np.zeros(w.shape), np.zeros(w.shape)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_follows_its_update_rule(weight_decay, device, dtype):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, values, grads = parameters_and_gradients(device, dtype)
    run_steps(optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay), params, grads, device)
    for i, w in enumerate(values):
        own = [step[i].astype(np.float64) for step in grads]
        expected = adam_reference(w.astype(np.float64), own, lr, b1, b2, eps, weight_decay)
        np.testing.assert_allclose(to_host(params[i].data), expected, **TOL[dtype])


def test_adam_agrees_with_algorithm_1_up_to_where_eps_sits(device):
    # The two forms differ only in eps (eps vs eps * sqrt(1 - b2^t)): relatively about eps / sqrt(v_hat).
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params, values, grads = parameters_and_gradients(device, np.float64)
    run_steps(optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps), params, grads, device)
    for i, w in enumerate(values):
        expected = adam_algorithm_1(w, [step[i] for step in grads], lr, b1, b2, eps)
        np.testing.assert_allclose(to_host(params[i].data), expected, rtol=1e-7)


def test_adam_corrects_each_parameters_bias_from_its_own_first_step(device):
    # b gets its first gradient at step 3: its first update is about -lr * sign(g), like a's first one
    lr = 0.01
    a, b = (nn.Parameter(mg.zeros((2,), device=device)) for _ in range(2))
    opt = optim.Adam([a, b], lr=lr)
    for step in range(3):
        a.grad = mg.tensor(np.full(2, 0.5, np.float32), device=device)
        b.grad = mg.tensor(np.full(2, 0.5, np.float32), device=device) if step == 2 else None
        opt.step()
        if step == 0:
            np.testing.assert_allclose(to_host(a.data), -lr, rtol=1e-5)
    np.testing.assert_allclose(to_host(b.data), -lr, rtol=1e-5)
    assert [int(n) for n in opt.state_dict()["param_steps"]] == [3, 1]


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam], ids=["SGD", "Adam"])
def test_optimizer_state_round_trip_continues_identically(make, device):
    params, _, grads = parameters_and_gradients(device, np.float32)
    opt = make(params, lr=0.05)
    run_steps(opt, params, grads[:2], device)
    state = opt.state_dict()
    assert state["steps"] == 2
    assert all(isinstance(b, np.ndarray) for key, bufs in state.items() if isinstance(bufs, list) for b in bufs)

    # A fresh copy of the parameters and a fresh optimizer, restored from the saved state.
    copies = [nn.Parameter(mg.tensor(p.numpy(), device=device)) for p in params]
    resumed = make(copies, lr=1.0)
    resumed.load_state_dict(state)
    assert resumed.lr == opt.lr
    run_steps(opt, params, grads[2:], device)
    run_steps(resumed, copies, grads[2:], device)
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(to_host(q.data), to_host(p.data))


def test_optimizer_state_with_the_wrong_shape_is_refused():
    params, _, grads = parameters_and_gradients("cpu", np.float32)
    opt = optim.SGD(params, lr=0.1)
    run_steps(opt, params, grads[:1], "cpu")
    state = opt.state_dict()
    state["velocity"] = state["velocity"][::-1]
    with pytest.raises(ValueError, match=r"'velocity' buffer 0 has shape \(4,\), the parameter \(3, 2\)"):
        optim.SGD(params, lr=0.1).load_state_dict(state)
    state["velocity"] = state["velocity"][:1]
    with pytest.raises(ValueError, match="1 'velocity' buffers for 2 parameters"):
        optim.SGD(params, lr=0.1).load_state_dict(state)


def test_optimizers_refuse_empty_parameter_lists_and_bad_learning_rates():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="learning rate must be positive, got 0"):
        optim.Adam(mlp().parameters(), lr=0)


def test_optimizer_zero_grad_clears_its_parameters():
    params, values, _ = parameters_and_gradients("cpu", np.float32)
    for p, v in zip(params, values):
        p.grad = mg.tensor(v)
    optim.SGD(params).zero_grad()
    assert all(p.grad is None for p in params)


# ----------------------------------------------------------------------------- ReduceLROnPlateau


def plateau(lr=0.01, **kwargs):
    opt = optim.SGD(mlp().parameters(), lr=lr)
    return opt, optim.ReduceLROnPlateau(opt, **kwargs)


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_plateau_divides_lr_by_10_after_patience_bad_epochs_not_before(patience):
    opt, sched = plateau(lr=0.01, patience=patience)
    assert sched.step(0.5) is False  # the first value sets the best
    for _ in range(patience):
        assert sched.step(0.5) is False  # bad epochs within the patience: nothing happens
        assert opt.lr == 0.01
    assert sched.step(0.5) is True  # one more bad epoch: reduce
    assert opt.lr == pytest.approx(0.001)
    assert sched.reductions == 1


def test_plateau_an_improvement_resets_the_count():
    opt, sched = plateau(lr=0.01, patience=2)
    for value in [0.9, 0.95, 0.95, 0.8, 0.85, 0.85]:  # never three bad epochs in a row
        assert sched.step(value) is False
    assert opt.lr == 0.01
    assert sched.best == 0.8
    assert sched.step(0.85) is True


def test_plateau_tiny_improvements_below_the_threshold_count_as_bad():
    opt, sched = plateau(lr=0.01, patience=0, threshold=0.01)
    sched.step(1.0)
    assert sched.step(0.995) is True  # 0.5% better, but 1% is needed
    assert opt.lr == pytest.approx(0.001)


def test_plateau_in_max_mode_waits_for_a_higher_metric():
    opt, sched = plateau(lr=0.01, patience=0, mode="max")
    sched.step(0.5)
    assert sched.step(0.6) is False  # higher accuracy is an improvement
    assert sched.step(0.55) is True
    assert opt.lr == pytest.approx(0.001)


def test_plateau_never_goes_below_min_lr():
    opt, sched = plateau(lr=1e-3, patience=0, min_lr=5e-5)
    sched.step(1.0)
    assert sched.step(1.0) is True
    assert opt.lr == pytest.approx(1e-4)
    assert sched.step(1.0) is True
    assert opt.lr == pytest.approx(5e-5)  # 1e-5 would be below min_lr
    assert sched.step(1.0) is False  # already at min_lr: no more reductions
    assert opt.lr == pytest.approx(5e-5)
    assert sched.reductions == 2


def test_plateau_state_round_trip_continues_identically():
    values = [1.0, 0.9, 0.95, 0.93, 0.97, 0.96, 0.99, 0.5, 0.6, 0.7, 0.8]
    opt, sched = plateau(lr=0.01, patience=1)
    for v in values[:5]:
        sched.step(v)
    opt2, sched2 = plateau(lr=0.01, patience=1)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    for v in values[5:]:
        assert sched2.step(v) == sched.step(v)
        assert opt2.lr == opt.lr
    assert sched2.reductions == sched.reductions >= 2


def test_plateau_refuses_bad_settings():
    opt, _ = plateau()
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\), got 10"):
        optim.ReduceLROnPlateau(opt, factor=10)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'up'"):
        optim.ReduceLROnPlateau(opt, mode="up")


# ----------------------------------------------------------------------------- learning for real


def test_a_tiny_mlp_learns_a_separable_problem(device):
    # Two classes on either side of the line x0 + 2 x1 = 0, at least 0.2 away from it.
    gen = np.random.default_rng(0)
    points = gen.uniform(-1, 1, (400, 2))
    margin = (points[:, 0] + 2 * points[:, 1]) / math.sqrt(5)
    points = points[np.abs(margin) > 0.2][:128].astype(np.float32)
    labels = (points[:, 0] + 2 * points[:, 1] > 0).astype(np.int64)

    backend.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = mg.tensor(points, device=device), mg.tensor(labels, device=device)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 < losses[0]
    with mg.no_grad():
        predicted = to_host(model(x).data).argmax(axis=1)
    assert (predicted == labels).mean() == 1.0


def test_tanh_module_is_elementwise_tanh():
    x = mg.tensor([[-2.0, 0.0, 0.5]])
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh(x.numpy()), rtol=1e-6)
