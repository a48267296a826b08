"""Optimizers (SGD with the paper's update rule, Adam) and ReduceLROnPlateau.

Updates work in place on the parameters' raw arrays, so they run on whatever
device the model lives on, and no graph is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minigrad import backend
from minigrad.kernels import sgd_momentum_step
from minigrad.nn import Parameter


class Optimizer:
    """Holds the parameters and the learning rate; subclasses implement `step`."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError

    def _buffers(self) -> dict[str, list[Any]]:
        return {}

    def _buffer(self, buffers: list[Any], i: int) -> Any:
        """buffers[i] for parameter i: zeros on first use, and moved along when the model moved since
        (`Module.to(device)` or `astype` after the optimizer was made)."""
        p, b = self.params[i], buffers[i]
        if b is None:
            b = p.xp.zeros_like(p.data)
        elif (
            type(b) is not type(p.data)
            or b.dtype != p.dtype
            or (backend.is_gpu_array(b) and backend.device_of(b) != p.device)  # another GPU
        ):
            b = backend.to_device(b, p.device).astype(p.dtype, copy=False)
        buffers[i] = b
        return b

    def state_dict(self) -> dict[str, Any]:
        """lr, step count and every per-parameter buffer, as NumPy arrays."""
        state: dict[str, Any] = {"lr": self.lr, "steps": getattr(self, "steps", 0)}
        for name, buffers in self._buffers().items():
            state[name] = [None if b is None else backend.to_numpy(b).copy() for b in buffers]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.steps = int(state.get("steps", 0))
        for name, buffers in self._buffers().items():
            saved = state[name]
            if len(saved) != len(buffers):
                raise ValueError(f"optimizer state has {len(saved)} '{name}' buffers for {len(buffers)} parameters")
            for i, (p, value) in enumerate(zip(self.params, saved)):
                if value is not None and tuple(value.shape) != p.shape:
                    raise ValueError(f"optimizer '{name}' buffer {i} has shape {value.shape}, the parameter {p.shape}")
                buffers[i] = None if value is None else backend.to_device(value.astype(p.dtype), p.device)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, in the paper's form (Krizhevsky et al. 2012, Sec. 5):

        v <- momentum * v - weight_decay * lr * w - lr * grad
        w <- w + v

    Weight decay sits inside the velocity, as the paper writes it.
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4
    ) -> None:
        super().__init__(params, lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity: list[Any] = [None] * len(self.params)
        self.steps = 0

    def _buffers(self) -> dict[str, list[Any]]:
        return {"velocity": self.velocity}

    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            v = self._buffer(self.velocity, i)
            # one pass over memory on the CPU (a Numba loop), four xp statements elsewhere; same result
            sgd_momentum_step(p.data, p.grad.data, v, self.momentum, self.weight_decay * self.lr, self.lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight_decay adds an L2 term to the gradient.

    The bias correction counts each parameter's own updates: one that first gets a gradient late
    (a layer frozen for a while) starts with a corrected step too.
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m: list[Any] = [None] * len(self.params)
        self.v: list[Any] = [None] * len(self.params)
        self.param_steps = [0] * len(self.params)
        self.steps = 0

    def _buffers(self) -> dict[str, list[Any]]:
        return {"m": self.m, "v": self.v}

    def state_dict(self) -> dict[str, Any]:
        # one entry per parameter, as NumPy arrays like the moments (0-d: a count)
        return {**super().state_dict(), "param_steps": [np.asarray(n, dtype=np.int64) for n in self.param_steps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # states saved before per-parameter counts: every parameter with moments had taken every step
        default = [0 if m is None else self.steps for m in self.m]
        self.param_steps = [int(n) for n in state.get("param_steps", default)]

    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            self.param_steps[i] += 1
            n = self.param_steps[i]
            step_size = self.lr * math.sqrt(1 - b2**n) / (1 - b1**n)
            t, xp = p.dtype.type, p.xp
            g = p.grad.data
            if self.weight_decay:
                g = g + t(self.weight_decay) * p.data
            m, v = self._buffer(self.m, i), self._buffer(self.v, i)
            m *= t(b1)
            m += t(1 - b1) * g
            v *= t(b2)
            v += t(1 - b2) * g * g
            p.data -= t(step_size) * m / (xp.sqrt(v) + t(self.eps))


class ReduceLROnPlateau:
    """Divide the learning rate by 1/factor when a metric stops improving (the paper: by 10, on validation error).

    Args:
        optimizer: whose `lr` to change.
        factor: multiply lr by this (0.1 = divide by 10).
        patience: epochs without improvement to wait before reducing.
        min_lr: never go below this.
        threshold: relative improvement that counts (1e-4 = 0.01%).
        mode: 'min' for errors and losses, 'max' for accuracies.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 0.1,
        patience: int = 2,
        min_lr: float = 1e-6,
        threshold: float = 1e-4,
        mode: str = "min",
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.optimizer, self.factor, self.patience = optimizer, factor, patience
        self.min_lr, self.threshold, self.mode = min_lr, threshold, mode
        self.best: float | None = None
        self.bad_epochs = 0
        self.reductions = 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best * (1 - self.threshold) if self.best > 0 else value < self.best
        return value > self.best * (1 + self.threshold) if self.best > 0 else value > self.best

    def step(self, value: float) -> bool:
        """Record this epoch's metric; returns True when the learning rate was reduced."""
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.patience and self.optimizer.lr > self.min_lr:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.bad_epochs = 0
            self.reductions += 1
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        self.reductions = int(state.get("reductions", 0))
