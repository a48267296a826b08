"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) and its small variants, built by one function.

The paper's network, layer by layer (input 3x227x227):

    conv1  96 11x11 stride 4        -> ReLU -> LRN -> max-pool 3x3/2     55 -> 27
    conv2 256  5x5  pad 2, 2 groups -> ReLU -> LRN -> max-pool 3x3/2     27 -> 13
    conv3 384  3x3  pad 1           -> ReLU
    conv4 384  3x3  pad 1, 2 groups -> ReLU
    conv5 256  3x3  pad 1, 2 groups -> ReLU -> max-pool 3x3/2            13 -> 6
    fc6 4096 -> ReLU -> dropout -> fc7 4096 -> ReLU -> dropout -> fc8 1000

"2 groups" is the paper's two-GPU split: each GPU's half of conv2, conv4 and conv5
sees only the channels on its own GPU. The small variants change the input size and
the widths, not the structure, so a learner can train them on a laptop and switch
the paper's choices (LRN, groups, overlapping pooling, ReLU or tanh) on and off.

May import: minigrad's public API (Tensor, nn, backend, no_grad), NumPy, the standard library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigrad import Tensor, backend, nn, no_grad, zeros

# The unit after every conv and hidden fully connected layer. The paper uses ReLU and shows (Fig. 1) that it
# reaches a given training error several times sooner than the saturating tanh; "tanh" repeats that comparison.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class ConvSpec:
    """One conv block: conv -> activation (ReLU in the paper) [-> LRN] [-> max-pool]."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    grouped: bool = False  # split in two as on the paper's two GPUs
    lrn: bool = False
    pool: bool = False
    bias_one: bool = False  # the paper initialises these biases to 1


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything that defines a network of the AlexNet family."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    convs: tuple[ConvSpec, ...]
    fc_width: int
    dropout: float = 0.5
    groups: int = 2  # used by the grouped convs
    pool_kernel: int = 3  # 3x3 stride 2: overlapping; 2x2 stride 2: the non-overlapping baseline
    pool_stride: int = 2
    lrn_alpha_over_size: bool = False
    init: str = "paper"  # "paper": N(0, 0.01) and biases of 1; "he": N(0, 2/fan_in) and biases of 0
    activation: str = "relu"  # "tanh": the saturating unit the paper's Fig. 1 compares ReLU against
    class_names: tuple[str, ...] = field(default=())

    def with_options(
        self,
        *,
        lrn: bool | None = None,
        groups: int | None = None,
        overlap: bool | None = None,
        width: float | None = None,
        num_classes: int | None = None,
        init: str | None = None,
        activation: str | None = None,
        dropout: float | None = None,
    ) -> AlexNetConfig:
        """A copy with the paper's switches changed (None keeps the current value)."""
        cfg = self
        if lrn is not None:
            cfg = dataclasses.replace(cfg, convs=tuple(dataclasses.replace(c, lrn=lrn and c.lrn) for c in cfg.convs))
            if lrn and not any(c.lrn for c in cfg.convs):  # turning LRN back on: after conv1 and conv2
                cfg = dataclasses.replace(
                    cfg, convs=tuple(dataclasses.replace(c, lrn=i < 2) for i, c in enumerate(cfg.convs))
                )
        if groups is not None:
            if groups < 1:
                raise ValueError(f"groups must be >= 1, got {groups}")
            cfg = dataclasses.replace(cfg, groups=groups)
        if overlap is not None:
            cfg = dataclasses.replace(cfg, pool_kernel=3 if overlap else 2, pool_stride=2)
        if width is not None:
            if width <= 0:
                raise ValueError(f"width multiplier must be positive, got {width}")
            g = max(cfg.groups, 2)  # keep channel counts divisible by the split

            def scale(n: int) -> int:
                return max(g, round(n * width / g) * g)

            cfg = dataclasses.replace(
                cfg,
                convs=tuple(dataclasses.replace(c, channels=scale(c.channels)) for c in cfg.convs),
                fc_width=scale(cfg.fc_width),
            )
        if num_classes is not None:
            if num_classes < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}")
            cfg = dataclasses.replace(cfg, num_classes=num_classes, class_names=())
        if init is not None:
            if init not in ("paper", "he"):
                raise ValueError(f"init must be 'paper' or 'he', got {init!r}")
            cfg = dataclasses.replace(cfg, init=init)
        if activation is not None:
            if activation not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
            cfg = dataclasses.replace(cfg, activation=activation)
        if dropout is not None:
            if not 0 <= dropout < 1:
                raise ValueError(f"dropout must be in [0, 1), got {dropout}")
            cfg = dataclasses.replace(cfg, dropout=float(dropout))
        for c in cfg.convs:
            if c.grouped and c.channels % cfg.groups:
                raise ValueError(f"{c.channels} channels cannot be split into {cfg.groups} groups")
        return cfg


PAPER = AlexNetConfig(
    name="alexnet",
    in_channels=3,
    image_size=227,
    num_classes=1000,
    convs=(
        ConvSpec(96, 11, stride=4, lrn=True, pool=True),
        ConvSpec(256, 5, padding=2, grouped=True, lrn=True, pool=True, bias_one=True),
        ConvSpec(384, 3, padding=1),
        ConvSpec(384, 3, padding=1, grouped=True, bias_one=True),
        ConvSpec(256, 3, padding=1, grouped=True, pool=True, bias_one=True),
    ),
    fc_width=4096,
)

# Colour 64x64 input (e.g. a downsampled ImageNet subset): conv1 5x5/2 instead of 11x11/4, a quarter of the widths.
SMALL = dataclasses.replace(
    PAPER.with_options(width=0.25),
    name="alexnet-small",
    image_size=64,
    convs=(
        ConvSpec(24, 5, stride=2, padding=2, lrn=True, pool=True),
        *PAPER.with_options(width=0.25).convs[1:],
    ),
    fc_width=512,
    init="he",
)

# 28x28 greyscale (Fashion-MNIST): conv1 5x5/1, a sixth of the widths; three overlapping pools: 28 -> 13 -> 6 -> 2.
TINY = dataclasses.replace(
    PAPER,
    name="alexnet-tiny",
    in_channels=1,
    image_size=28,
    num_classes=10,
    # conv2..conv5 are the paper's with fewer channels
    convs=(
        ConvSpec(16, 5, padding=2, lrn=True, pool=True),
        *(dataclasses.replace(c, channels=k) for c, k in zip(PAPER.convs[1:], (48, 64, 64, 48), strict=True)),
    ),
    fc_width=256,
    # The paper's 0.5 "roughly doubles the iterations needed to converge", too slow for a few-epoch demo;
    # 0.375 keeps most of its regularisation (the demo's measurements are in benchmarks/README.md).
    dropout=0.375,
    init="he",
)

CONFIGS = {cfg.name: cfg for cfg in (PAPER, SMALL, TINY)}


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class AlexNet(nn.Module):
    """The AlexNet family: `features` (5 conv blocks) then `classifier` (3 fully connected layers).

    x: (N, in_channels, image_size, image_size) -> logits (N, num_classes).
    `activation` ("relu" or "tanh"), when given, replaces the config's; it is kept in `model.config`.
    """

    def __init__(self, config: AlexNetConfig, *, activation: str | None = None) -> None:
        super().__init__()
        config = config.with_options(activation=activation)
        self.config = config
        unit = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        self.conv_layers: list[nn.Conv2d] = []
        channels, size = config.in_channels, config.image_size
        for spec in config.convs:
            groups = config.groups if spec.grouped else 1
            conv = nn.Conv2d(channels, spec.channels, spec.kernel, spec.stride, spec.padding, groups=groups)
            self.conv_layers.append(conv)
            layers += [conv, unit()]
            size = _out(size, spec.kernel, spec.stride, spec.padding)
            if spec.lrn:
                layers.append(nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0, alpha_over_size=config.lrn_alpha_over_size))
            if spec.pool:
                layers.append(nn.MaxPool2d(config.pool_kernel, config.pool_stride))
                size = _out(size, config.pool_kernel, config.pool_stride, 0)
            if size < 1:
                raise ValueError(f"{config.name}: input {config.image_size}x{config.image_size} shrinks to nothing")
            channels = spec.channels
        self.features = nn.Sequential(*layers)
        self.feature_shape = (channels, size, size)
        flat = channels * size * size
        w = config.fc_width
        self.fc6, self.fc7, self.fc8 = nn.Linear(flat, w), nn.Linear(w, w), nn.Linear(w, config.num_classes)
        p = config.dropout
        self.classifier = nn.Sequential(self.fc6, unit(), nn.Dropout(p), self.fc7, unit(), nn.Dropout(p), self.fc8)
        self.reset_parameters()

    def __setattr__(self, name: str, value: object) -> None:
        # conv_layers/fc6.. are shortcuts to layers that `features`/`classifier` already own:
        # keep them out of the module registry so each parameter is listed once.
        if name in ("conv_layers", "fc6", "fc7", "fc8", "config", "feature_shape"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        """The paper's init: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.

        With init="he" (the small variants' default): weights N(0, 2/fan_in), biases 0, which trains a
        narrow net faster from scratch; fc8 keeps N(0, 0.01) so the first predictions are near uniform
        (the loss starts at ln(classes) instead of wasting the first steps on oversized logits).
        """
        gen = backend.rng("cpu")
        ones = [spec.bias_one for spec in self.config.convs] + [True, True, False]
        for layer, bias_one in zip([*self.conv_layers, self.fc6, self.fc7, self.fc8], ones):
            shape = layer.weight.shape
            if self.config.init == "paper":
                std = 0.01
                bias = 1.0 if bias_one else 0.0
            else:
                std = 0.01 if layer is self.fc8 else float(np.sqrt(2.0 / (np.prod(shape[1:]))))
                bias = 0.0
            device = layer.weight.device
            w = gen.standard_normal(shape, dtype=np.float32) * np.float32(std)
            layer.weight.data = backend.to_device(w.astype(layer.weight.dtype), device)
            layer.bias.data = backend.to_device(np.full(layer.bias.shape, bias, dtype=layer.bias.dtype), device)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if x.shape[1:] != expected:
            raise ValueError(f"{cfg.name} expects input of shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        return self.classifier(self.features(x).flatten(1))

    def extract_features(self, x: Tensor) -> Tensor:
        """The fc7 activations (after its ReLU or tanh), as used for the paper's nearest-neighbour figure.

        x: (N, in_channels, image_size, image_size) -> (N, fc_width).
        """
        h = self.features(x).flatten(1)
        for layer in list(self.classifier)[:5]:  # fc6, activation, dropout, fc7, activation
            h = layer(h)
        return h


def build_model(name: str = "alexnet-tiny", **switches: Any) -> AlexNet:
    """Build a named model ('alexnet', 'alexnet-small', 'alexnet-tiny'), with the paper's switches changed.

    `switches` are the keywords of `AlexNetConfig.with_options`: lrn, groups, overlap, width, num_classes,
    init, activation ("relu", the paper's, or "tanh") and dropout (fc6's and fc7's, the paper's 0.5); None
    keeps the model's own setting. Example: `build_model("alexnet-tiny", lrn=False, groups=1)`.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(CONFIGS)}")
    return AlexNet(CONFIGS[name].with_options(**switches))


def model_from_config(config: dict) -> AlexNet:
    """Rebuild a model from `dataclasses.asdict(model.config)` (as stored in checkpoints)."""
    convs = tuple(ConvSpec(**c) for c in config["convs"])
    fields = {k: v for k, v in config.items() if k != "convs"}
    fields["class_names"] = tuple(fields.get("class_names", ()))
    return AlexNet(AlexNetConfig(convs=convs, **fields))


@dataclass
class LayerRow:
    name: str
    output_shape: tuple[int, ...]
    params: int
    flops: int  # forward floating-point operations for one image (a multiply-add counts 2)
    activation_bytes: int  # output size for one image, float32


def summarize(model: AlexNet) -> list[LayerRow]:
    """Walk one zero image through the model and record each layer's output, parameters and FLOPs."""
    cfg = model.config
    x = zeros((1, cfg.in_channels, cfg.image_size, cfg.image_size), device=model.device)
    rows: list[LayerRow] = []
    conv_i = 0
    with no_grad():
        for layer in [*model.features, nn.Flatten(), *model.classifier]:
            x = layer(x)
            out_elems = int(np.prod(x.shape[1:]))
            params = layer.num_parameters()
            kind = type(layer).__name__
            if isinstance(layer, nn.Conv2d):
                conv_i += 1
                name = f"conv{conv_i}"
                kh, kw = layer.kernel_size
                flops = 2 * out_elems * (layer.in_channels // layer.groups) * kh * kw + out_elems
            elif isinstance(layer, nn.Linear):
                name = {id(model.fc6): "fc6", id(model.fc7): "fc7", id(model.fc8): "fc8"}[id(layer)]
                flops = 2 * layer.in_features * layer.out_features + layer.out_features
            elif isinstance(layer, nn.MaxPool2d):
                name, flops = "maxpool", out_elems * layer.kernel_size[0] * layer.kernel_size[1]
            elif isinstance(layer, nn.LocalResponseNorm):
                name, flops = "lrn", out_elems * 10  # square, window sum, scale, pow, divide
            else:  # an activation counts one operation per element; dropout and flatten none
                name, flops = kind.lower(), out_elems if kind in ("ReLU", "Tanh") else 0
            rows.append(LayerRow(name, tuple(x.shape[1:]), params, flops, out_elems * 4))
    return rows


def format_summary(model: AlexNet) -> str:
    """The layer table that `alexnet summary` prints."""
    rows = summarize(model)
    lines = [
        f"{model.config.name}: input {model.config.in_channels}x{model.config.image_size}x{model.config.image_size}, "
        f"{model.config.num_classes} classes",
        f"{'layer':<9} {'output shape':<16} {'params':>12} {'MFLOPs':>10} {'act. KiB':>10}",
    ]
    lines.append("-" * len(lines[1]))
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(
            f"{r.name:<9} {shape:<16} {r.params:>12,} {r.flops / 1e6:>10.2f} {r.activation_bytes / 1024:>10.1f}"
        )
    lines.append("-" * len(lines[1]))
    total_p = sum(r.params for r in rows)
    total_f = sum(r.flops for r in rows)
    total_a = sum(r.activation_bytes for r in rows)
    lines.append(f"{'total':<9} {'':<16} {total_p:>12,} {total_f / 1e6:>10.2f} {total_a / 1024:>10.1f}")
    lines.append("(FLOPs and activation memory per image, forward pass; a multiply-add counts as 2 FLOPs)")
    return "\n".join(lines)
