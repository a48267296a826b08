"""Modules: layers that own their parameters.

A `Module` finds its parameters and sub-modules by looking at its attributes,
so a layer is written as plain Python: set `self.weight = Parameter(...)` in
`__init__` and use it in `forward`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from minigrad import backend
from minigrad import functional as F
from minigrad.backend import Device
from minigrad.kernels.shapes import IntPair, pair
from minigrad.tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module owns and an optimizer updates (requires_grad is always on)."""

    def __init__(self, data: Any, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=True, dtype=dtype)

    def to(self, device: str | Device) -> Tensor:
        """This parameter on `device`: itself when already there, else a new Parameter (a Module keeps it)."""
        moved = super().to(device)
        if moved is self:
            return self
        param = Parameter(moved.data)
        param.requires_grad = self.requires_grad  # a frozen parameter stays frozen
        return param

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__().removeprefix("Tensor")


class Module:
    """Base class of every layer and model."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name}")
        if name in self._parameters and isinstance(value, Tensor) and not isinstance(value, Parameter):
            # a plain tensor would silently drop out of parameters(), state_dict() and the optimizer
            raise TypeError(
                f"{type(self).__name__}.{name} is a Parameter; assign a Parameter (wrap it: Parameter(t)) "
                f"or move the whole module with .to(device)"
            )
        # A name that stays a parameter (or module) keeps its place in the order of parameters() and state_dict().
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def forward(self, *args: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any) -> Tensor:
        return self.forward(*args)

    # -------------------------------------------------------------- parameters
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, in definition order, e.g. ('features.0.weight', p).

        A parameter shared by two layers (weight tying) is listed once, under its first name: an optimizer
        must update it once per step.
        """
        seen: set[int] = set()
        for name, p in self._parameters_with_repeats(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _parameters_with_repeats(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m._parameters_with_repeats(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m.named_modules(prefix + name + ".")

    def children(self) -> list[Module]:
        return list(self._modules.values())

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -------------------------------------------------------------- modes, devices, dtypes
    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, device: str | Device) -> Module:
        """Move every parameter to `device`, in place (optimizers keep their references)."""
        device = Device(device)
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = Tensor(backend.to_device(p.grad.data, device))
        return self

    def astype(self, dtype: Any) -> Module:
        """Convert every parameter to `dtype`, in place (e.g. float64 for gradient checks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    @property
    def device(self) -> Device:
        params = self.parameters()
        return params[0].device if params else Device("cpu")

    # -------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Every parameter as a NumPy array (copied), by dotted name."""
        return OrderedDict((name, p.numpy().copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy arrays into the parameters. Keys and shapes must match exactly."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"state_dict does not fit {type(self).__name__}: missing keys {missing}, unexpected keys {unexpected}"
            )
        for name, p in own.items():
            value = backend.to_numpy(state[name].data if isinstance(state[name], Tensor) else state[name])
            if tuple(value.shape) != p.shape:
                raise ValueError(f"state_dict entry {name!r} has shape {tuple(value.shape)}, the parameter {p.shape}")
        for name, p in own.items():
            value = backend.to_numpy(state[name].data if isinstance(state[name], Tensor) else state[name])
            p.data = backend.to_device(value.astype(p.dtype), p.device)

    # -------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Calls its modules one after the other."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: Tensor) -> Tensor:
        for m in self._modules.values():
            x = m(x)
        return x


def _he_normal(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """N(0, 2/fan_in): keeps activations' scale through ReLU layers (He et al. 2015)."""
    std = math.sqrt(2.0 / fan_in)
    return backend.rng("cpu").standard_normal(shape, dtype=backend.DEFAULT_DTYPE) * np.float32(std)


class Conv2d(Module):
    """2-D convolution layer. x: (N, in_channels, H, W) -> (N, out_channels, OH, OW)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and out={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self.groups = groups
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        self.weight = Parameter(_he_normal((out_channels, in_channels // groups, kh, kw), fan_in))
        self.bias = Parameter(np.zeros(out_channels, dtype=backend.DEFAULT_DTYPE)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """Fully connected layer. x: (N, in_features) -> (N, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_he_normal((out_features, in_features), in_features))
        self.bias = Parameter(np.zeros(out_features, dtype=backend.DEFAULT_DTYPE)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Tanh(Module):
    """The saturating activation the paper compares ReLU against (its Fig. 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, 1)


class MaxPool2d(Module):
    """Max pooling; overlapping when stride < kernel_size (the paper's 3x3 stride 2)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Average pooling (padded zeros count in the mean)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pool to a fixed output size (torchvision's AlexNet uses 6x6)."""

    def __init__(self, output_size: IntPair) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size")

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class LocalResponseNorm(Module):
    """Local response normalisation across channels (paper defaults: size 5, alpha 1e-4, beta 0.75, k 2).

    `alpha_over_size=True` switches to the Caffe/PyTorch convention (alpha divided by size).
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, alpha_over_size: bool = False
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.alpha_over_size = alpha_over_size

    def forward(self, x: Tensor) -> Tensor:
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.alpha_over_size)

    def extra_repr(self) -> str:
        conv = ", alpha_over_size=True" if self.alpha_over_size else ""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{conv}"


class Dropout(Module):
    """Inverted dropout in training mode, identity in eval mode. `rows`, `n_global`: this process's rows of a
    global batch split over processes (F.dropout)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        # Set by a data-parallel training loop before each step: this process's rows of a global batch of
        # n_global (see F.dropout). None: the input is the whole batch.
        self.rows: slice | None = None
        self.n_global: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.rows, self.n_global)

    def extra_repr(self) -> str:
        return f"p={self.p}"
