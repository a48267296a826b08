"""The registry of gradient checks: every op and every layer, on small float64 inputs.

`minigrad gradcheck` runs them and prints a table; the test suite runs the same
registry on every backend, so the command and the tests can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minigrad import backend, nn
from minigrad import functional as F
from minigrad.backend import Device
from minigrad.gradcheck import GradcheckReport, gradcheck
from minigrad.tensor import Tensor


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # "op" or "layer"
    build: Callable[[Device], tuple[Callable[..., Tensor], tuple[Any, ...]]]


CHECKS: dict[str, Check] = {}


def _register(name: str, kind: str = "op") -> Callable:
    def decorate(build: Callable[[Device], tuple]) -> Callable:
        if name in CHECKS:
            raise ValueError(f"check {name!r} registered twice")
        CHECKS[name] = Check(name, kind, build)
        return build

    return decorate


def _inputs(device: Device, seed: int, *shapes: tuple[int, ...], positive: bool = False) -> list[Tensor]:
    """float64 leaves with seeded normal values (or values in [0.5, 2) when `positive`)."""
    gen = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        data = gen.uniform(0.5, 2.0, shape) if positive else gen.standard_normal(shape)
        out.append(Tensor(backend.to_device(data, device), requires_grad=True))
    return out


# ----------------------------------------------------------------------------- elementwise


def _binary(name: str, op: Callable, a_shape: tuple, b_shape: tuple, positive_b: bool = False) -> None:
    @_register(name)
    def build(device: Device) -> tuple:
        (a,) = _inputs(device, 1, a_shape)
        (b,) = _inputs(device, 2, b_shape, positive=positive_b)
        return op, (a, b)


_binary("add", F.add, (3, 4), (3, 4))
_binary("add_broadcast", F.add, (2, 3, 4), (3, 1))
_binary("sub_broadcast", F.sub, (3, 1), (2, 3, 4))
_binary("mul", F.mul, (3, 4), (3, 4))
_binary("mul_broadcast", F.mul, (4,), (2, 3, 4))
_binary("div_broadcast", F.div, (2, 3, 4), (1, 4), positive_b=True)
_binary("matmul", F.matmul, (3, 5), (5, 4))
_binary("matmul_batched", F.matmul, (2, 3, 5), (5, 4))
_binary("maximum", F.maximum, (3, 4), (4,))


def _unary(name: str, op: Callable, shape: tuple = (3, 4), positive: bool = False) -> None:
    @_register(name)
    def build(device: Device) -> tuple:
        return op, tuple(_inputs(device, 3, shape, positive=positive))


_unary("neg", F.neg)
_unary("pow", lambda x: F.pow(x, 3))
_unary("pow_fractional", lambda x: F.pow(x, -1.5), positive=True)
_unary("exp", F.exp)
_unary("log", F.log, positive=True)
_unary("sqrt", F.sqrt, positive=True)
_unary("relu", F.relu)
_unary("tanh", F.tanh)
_unary("sigmoid", F.sigmoid)
_unary("sum", lambda x: F.sum(x))
_unary("sum_axis_keepdims", lambda x: F.sum(x, axis=(0, 2), keepdims=True), shape=(2, 3, 4))
_unary("mean_axis", lambda x: F.mean(x, axis=1), shape=(2, 3, 4))
_unary("max_axis", lambda x: F.max(x, axis=-1), shape=(2, 3, 4))
_unary("max_all", lambda x: F.max(x))
_unary("reshape", lambda x: F.reshape(x, (4, -1)), shape=(2, 3, 4))
_unary("transpose", lambda x: F.transpose(x, (2, 0, 1)), shape=(2, 3, 4))
_unary("getitem_slices", lambda x: x[1:, ::2, -1], shape=(3, 4, 5))
_unary("getitem_int_array", lambda x: x[np.array([0, 2, 2, 1]), 1:], shape=(3, 4))
_unary("pad", lambda x: F.pad(x, ((0, 0), (1, 2), (2, 0))), shape=(2, 3, 4))
_unary("reuse", lambda x: x * x + F.exp(x) * x - x / 3)  # one tensor used several times
_unary("where", lambda x: F.where(x.data > 0, x * 2, F.exp(x)))


@_register("concatenate")
def _concatenate(device: Device) -> tuple:
    a, b = _inputs(device, 4, (2, 3), (2, 5))
    return (lambda a, b: F.concatenate([a, b, a], axis=1)), (a, b)


@_register("stack")
def _stack(device: Device) -> tuple:
    a, b = _inputs(device, 5, (2, 3), (2, 3))
    return (lambda a, b: F.stack([a, b], axis=1)), (a, b)


# ----------------------------------------------------------------------------- network ops


@_register("conv2d")
def _conv2d(device: Device) -> tuple:
    x, w, b = _inputs(device, 6, (2, 3, 7, 6), (4, 3, 3, 3), (4,))
    return (lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1)), (x, w, b)


@_register("conv2d_stride_groups")
def _conv2d_groups(device: Device) -> tuple:
    x, w, b = _inputs(device, 7, (2, 4, 9, 9), (6, 2, 3, 3), (6,))
    return (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2)), (x, w, b)


@_register("conv2d_no_bias")
def _conv2d_nobias(device: Device) -> tuple:
    x, w = _inputs(device, 8, (1, 2, 6, 5), (3, 2, 1, 2))
    return (lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(0, 1))), (x, w)


@_register("max_pool2d")
def _max_pool(device: Device) -> tuple:
    return (lambda x: F.max_pool2d(x, 3, 2)), tuple(_inputs(device, 9, (2, 2, 7, 7)))


@_register("max_pool2d_padded")
def _max_pool_pad(device: Device) -> tuple:
    return (lambda x: F.max_pool2d(x, 3, 2, padding=1)), tuple(_inputs(device, 10, (1, 2, 6, 5)))


@_register("avg_pool2d")
def _avg_pool(device: Device) -> tuple:
    return (lambda x: F.avg_pool2d(x, 3, 2, padding=1)), tuple(_inputs(device, 11, (2, 2, 6, 7)))


@_register("adaptive_avg_pool2d")
def _adaptive(device: Device) -> tuple:
    return (lambda x: F.adaptive_avg_pool2d(x, (3, 2))), tuple(_inputs(device, 12, (2, 2, 7, 5)))


@_register("local_response_norm")
def _lrn(device: Device) -> tuple:
    # Large activations so the normaliser really varies (with alpha 1e-4 it is nearly constant otherwise).
    return (lambda x: F.local_response_norm(x * 30, 5)), tuple(_inputs(device, 13, (2, 7, 3, 3)))


@_register("local_response_norm_caffe")
def _lrn_caffe(device: Device) -> tuple:
    return (lambda x: F.local_response_norm(x, 4, 0.5, 0.75, 1.0, alpha_over_size=True)), tuple(
        _inputs(device, 14, (2, 6, 2, 3))
    )


@_register("dropout")
def _dropout(device: Device) -> tuple:
    def fn(x: Tensor) -> Tensor:
        backend.manual_seed(0)  # the same mask on every evaluation
        return F.dropout(x, 0.4, training=True)

    return fn, tuple(_inputs(device, 15, (4, 5)))


@_register("linear")
def _linear(device: Device) -> tuple:
    x, w, b = _inputs(device, 16, (3, 5), (4, 5), (4,))
    return F.linear, (x, w, b)


@_register("flatten")
def _flatten(device: Device) -> tuple:
    return F.flatten, tuple(_inputs(device, 17, (2, 3, 2, 2)))


@_register("log_softmax")
def _log_softmax(device: Device) -> tuple:
    return F.log_softmax, tuple(_inputs(device, 18, (3, 5)))


@_register("softmax")
def _softmax(device: Device) -> tuple:
    return (lambda x: F.softmax(x, axis=0)), tuple(_inputs(device, 19, (3, 5)))


@_register("cross_entropy")
def _cross_entropy(device: Device) -> tuple:
    labels = backend.to_device(np.array([0, 4, 2, 2]), device)
    return (lambda x: F.cross_entropy(x, labels)), tuple(_inputs(device, 20, (4, 5)))


# ----------------------------------------------------------------------------- layers


def _layer(name: str, make: Callable[[], nn.Module], x_shape: tuple, train: bool = True) -> None:
    @_register(name, kind="layer")
    def build(device: Device) -> tuple:
        backend.manual_seed(1)
        module = make().astype(np.float64).to(device).train(train)
        (x,) = _inputs(device, 21, x_shape)

        def fn(x: Tensor, *params: Tensor) -> Tensor:
            backend.manual_seed(0)  # dropout draws the same mask each time
            return module(x)

        return fn, (x, *module.parameters())


_layer("Conv2d", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 7, 7))
_layer("Linear", lambda: nn.Linear(5, 3), (4, 5))
_layer("ReLU", nn.ReLU, (3, 4))
_layer("Tanh", nn.Tanh, (3, 4))
_layer("MaxPool2d", lambda: nn.MaxPool2d(3, 2), (1, 2, 7, 7))
_layer("AvgPool2d", lambda: nn.AvgPool2d(2), (1, 2, 6, 6))
_layer("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d(2), (1, 2, 5, 5))
_layer("LocalResponseNorm", lambda: nn.LocalResponseNorm(3, alpha=0.1), (2, 5, 2, 2))
_layer("Dropout", lambda: nn.Dropout(0.5), (3, 4))
_layer("Flatten", nn.Flatten, (2, 3, 2, 2))
_layer(
    "Sequential",
    lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 3)
    ),
    (2, 1, 4, 4),
)


def run_check(name: str, device: str | Device = "cpu") -> GradcheckReport:
    """Build and run one registered check on `device`."""
    check = CHECKS[name]
    fn, inputs = check.build(Device(device))
    return gradcheck(fn, *inputs, name=name)
