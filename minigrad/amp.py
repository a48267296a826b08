"""Training precision: fp32, tf32, or fp16 compute with fp32 master weights and dynamic loss scaling.

    mp = MixedPrecision(model, "fp16")          # "fp32" (the default), "tf32" or "fp16"
    opt = optim.SGD(mp.parameters(), lr=0.01)   # the optimizer updates the float32 master weights
    for x, y in batches:
        mp.zero_grad()
        loss = F.cross_entropy(mp(x), y)        # mp(x): the model in fp16, logits back in float32
        mp.backward(loss)                       # backward of loss * scale
        mp.step(opt)                            # False when the step was skipped (inf/NaN gradients)

- **fp32**: everything in float32; `mp(x)` is `model(x)` and `mp.step(opt)` is `opt.step()`.
- **tf32**: fp32, but on a GPU CuPy's float32 matrix products use TF32 tensor cores (inputs rounded to a
  10-bit mantissa, fp32 accumulation: `backend.set_tf32`). NumPy has no TF32: on the CPU this is fp32.
- **fp16**: the model's parameters become float16 copies and the forward and backward passes run in
  float16 (half the memory traffic; tensor cores on a GPU). The optimizer keeps float32 "master" weights:
  an update of lr * grad is often smaller than float16's spacing near w (about w/1000) and would round
  away. After each step the master weights are rounded into the float16 copies. Matrix products of float16
  accumulate in float32 on both backends (NumPy's float16 matmul does; CuPy calls cuBLAS with
  CUBLAS_COMPUTE_32F), so long dot products do not lose their small terms. The loss is computed from the
  logits cast back to float32. LocalResponseNorm runs in float32: its sum of squares overflows float16
  (65504) once an activation passes 256.

Dynamic loss scaling (`LossScaler`): float16 gradients smaller than ~6e-8 become zero. So the loss is
multiplied by a large `scale` before the backward pass (every gradient with it) and the float32 gradients
are divided by it again. If any gradient came out inf or NaN, the scale was too large: the step is skipped
(counted in `skipped_steps`) and the scale halved. After `growth_interval` good steps in a row it doubles,
so it stays near the largest scale that does not overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from minigrad import backend, nn
from minigrad.nn import Module, Parameter
from minigrad.optim import Optimizer
from minigrad.tensor import Tensor

PRECISIONS = ("fp32", "tf32", "fp16")
COMPUTE_DTYPES = {"fp32": np.dtype(np.float32), "tf32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else a ValueError that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


class LossScaler:
    """Dynamic loss scaling for float16 training.

    Args:
        init_scale: the first scale (2**16: float16 gradients of a mean loss start well inside its range).
        growth_factor: multiply the scale by this after `growth_interval` finite steps in a row.
        backoff_factor: multiply the scale by this when a step's gradients hold inf or NaN (that step is skipped).
        growth_interval: finite steps in a row before the scale grows.
        min_scale: the scale never goes below this.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
    ) -> None:
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive finite number, got {init_scale}")
        if not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError(
                f"need growth_factor > 1 and 0 < backoff_factor < 1, got {growth_factor} and {backoff_factor}"
            )
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be at least 1, got {growth_interval}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.min_scale = int(growth_interval), float(min_scale)
        self.good_steps = 0  # finite steps since the scale last changed
        self.skipped_steps = 0  # steps skipped for inf/NaN gradients, over the whole run
        self.steps = 0  # steps seen (taken or skipped)

    def update(self, finite: bool) -> None:
        """Record one step: halve the scale after an overflow, grow it after enough good steps."""
        self.steps += 1
        if not finite:
            self.skipped_steps += 1
            self.good_steps = 0
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            return
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0

    def state_dict(self) -> dict[str, float | int]:
        return {
            "scale": self.scale,
            "good_steps": self.good_steps,
            "skipped_steps": self.skipped_steps,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps, self.skipped_steps = int(state["good_steps"]), int(state["skipped_steps"])
        self.steps = int(state.get("steps", 0))


def all_finite(arrays: list[Any]) -> bool:
    """True when no array holds an inf or NaN: one device-to-host transfer for all of them."""
    if not arrays:
        return True
    xp = backend.get_array_module(arrays[0])
    flags = xp.stack([xp.isfinite(a).all() for a in arrays])
    return bool(flags.all().item())


def _float32_forward(module: Module) -> Callable[[Tensor], Tensor]:
    """`module`'s forward, run in float32 and cast back to the input's dtype (a parameter-free module)."""
    forward = module.forward

    def run_in_float32(x: Tensor) -> Tensor:
        return forward(x.astype(np.float32)).astype(x.dtype)

    return run_in_float32


class MixedPrecision:
    """Runs a model's training steps in one of PRECISIONS (see the module docstring for the recipe).

    Args:
        model: the model; with "fp16" its parameters become float16 in place (`restore()` undoes it).
        precision: "fp32", "tf32" or "fp16".
        scaler: the loss scaler for fp16 (default: `LossScaler()`); unused otherwise.
        float32_layers: parameter-free layer types that run in float32 inside an fp16 model.
    """

    def __init__(
        self,
        model: Module,
        precision: str = "fp32",
        scaler: LossScaler | None = None,
        float32_layers: tuple[type[Module], ...] = (nn.LocalResponseNorm,),
    ) -> None:
        self.model, self.precision = model, check_precision(precision)
        self.compute_dtype = COMPUTE_DTYPES[precision]
        self.scaler = scaler if scaler is not None else LossScaler()
        # whether CuPy's float32 products use TF32 now (on the CPU there is nothing to switch)
        self.tf32 = precision == "tf32" and model.device.kind == "gpu" and backend.set_tf32(True)
        self._float32_modules: list[Module] = []
        if precision != "fp16":
            self.master = model.parameters()
            return
        params = model.parameters()
        if any(p.dtype != np.float32 for p in params):
            raise TypeError("MixedPrecision('fp16') starts from a float32 model: its float32 weights become the master")
        self.master = [Parameter(p.data.copy()) for p in params]
        for p in params:
            p.data = p.data.astype(np.float16)
            p.grad = None
        for _, module in model.named_modules():
            if isinstance(module, float32_layers):
                if module.parameters():
                    raise ValueError(f"float32_layers must be parameter-free, {type(module).__name__} has parameters")
                module.forward = _float32_forward(module)
                self._float32_modules.append(module)

    # -------------------------------------------------------------- the step
    def parameters(self) -> list[Parameter]:
        """What the optimizer updates: the float32 master weights (the model's own parameters unless fp16)."""
        return self.master

    def __call__(self, x: Tensor) -> Tensor:
        """The model on x in the compute dtype; the output (logits) in float32, ready for the loss."""
        if self.precision != "fp16":
            return self.model(x)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow shows up as a skipped step instead
            return self.model(x.astype(self.compute_dtype)).astype(np.float32)

    def zero_grad(self) -> None:
        """Drop the gradients of the model and of the master weights."""
        for p in self.model.parameters():
            p.grad = None
        for p in self.master:
            p.grad = None

    def backward(self, loss: Tensor) -> None:
        """loss.backward(), of the scaled loss in fp16 (the gradients then carry the factor `scale`)."""
        if self.precision != "fp16":
            loss.backward()
            return
        with np.errstate(over="ignore", invalid="ignore"):  # overflows are what the loss scaler looks for
            (loss * np.float32(self.scaler.scale)).backward()

    def step(self, optimizer: Optimizer) -> bool:
        """One optimizer step. fp16: unscale the gradients into the float32 master weights; when one is inf
        or NaN, skip the step (the scale halves); else step and copy the master weights into the model.
        Returns whether the step was taken."""
        if self.precision != "fp16":
            optimizer.step()
            return True
        model_params = self.model.parameters()
        unscale = np.float32(1.0 / self.scaler.scale)
        grads = []
        for p, master in zip(model_params, self.master):
            if p.grad is None:
                master.grad = None
                continue
            g = p.grad.data.astype(np.float32)
            g *= unscale
            master.grad = Tensor(g)
            grads.append(g)
        finite = all_finite(grads)
        self.scaler.update(finite)
        if finite:
            optimizer.step()
            for p, master in zip(model_params, self.master):
                p.data[...] = master.data  # rounded to float16 in place
        return finite

    # -------------------------------------------------------------- reporting and state
    @property
    def skipped_steps(self) -> int:
        """Steps skipped for inf/NaN gradients (always 0 unless fp16)."""
        return self.scaler.skipped_steps if self.precision == "fp16" else 0

    @property
    def loss_scale(self) -> float | None:
        """The current loss scale (None unless fp16)."""
        return self.scaler.scale if self.precision == "fp16" else None

    def master_state_dict(self) -> dict[str, np.ndarray]:
        """The float32 weights by the model's parameter names (what a checkpoint keeps)."""
        names = [name for name, _ in self.model.named_parameters()]
        return {name: backend.to_numpy(p.data).copy() for name, p in zip(names, self.master)}

    def state_dict(self) -> dict[str, Any]:
        """The precision and the loss scaler's state (the weights are in the model's or the master state)."""
        return {"precision": self.precision, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["precision"] != self.precision:
            raise ValueError(f"state of a {state['precision']} run loaded into a {self.precision} one")
        self.scaler.load_state_dict(state["scaler"])

    def load_master_state_dict(self, state: dict[str, Any]) -> None:
        """Set the master weights (and, in fp16, the model's float16 copies) from float32 arrays by name."""
        if self.precision != "fp16":
            self.model.load_state_dict(state)
            return
        names = [name for name, _ in self.model.named_parameters()]
        missing = sorted(set(names) - set(state))
        if missing:
            raise KeyError(f"master state lacks {missing}")
        for name, master, p in zip(names, self.master, self.model.parameters()):
            value = backend.to_numpy(state[name])
            if tuple(value.shape) != master.shape:
                raise ValueError(f"master entry {name!r} has shape {tuple(value.shape)}, the parameter {master.shape}")
            master.data = backend.to_device(value.astype(np.float32), master.device)
            p.data[...] = master.data  # rounded to float16 in place

    def restore(self) -> Module:
        """Undo fp16: the model gets its float32 (master) weights and its layers their own forward. Returns it."""
        if self.precision == "fp16":
            for p, master in zip(self.model.parameters(), self.master):
                p.data, p.grad = master.data, None
            for module in self._float32_modules:
                del module.forward
            self._float32_modules = []
            self.precision, self.compute_dtype = "fp32", COMPUTE_DTYPES["fp32"]
            self.master = self.model.parameters()
        elif self.tf32:
            backend.set_tf32(False)
            self.tf32 = False
        return self.model
