"""The AlexNet family: the paper's exact architecture, its initialisation, and the ablation switches."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from alexnet.model import CONFIGS, build_model, format_summary, model_from_config, summarize
from minigrad import nn


def test_the_paper_model_has_60965224_parameters():
    assert build_model("alexnet").num_parameters() == 60_965_224


def test_the_paper_model_has_the_papers_layers():
    model = build_model("alexnet")
    convs = model.conv_layers
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.kernel_size for c in convs] == [(11, 11), (5, 5), (3, 3), (3, 3), (3, 3)]
    assert [c.stride for c in convs] == [(4, 4), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # the two-GPU split of conv2, conv4, conv5
    lrn = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k, m.alpha_over_size) for m in lrn] == [(5, 1e-4, 0.75, 2.0, False)] * 2
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [((3, 3), (2, 2))] * 3  # overlapping
    assert (model.fc6.in_features, model.fc6.out_features, model.fc8.out_features) == (9216, 4096, 1000)
    dropouts = [m.p for m in model.classifier if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_lrn_comes_after_the_relu_of_conv1_and_conv2_and_before_pooling():
    names = [type(m).__name__ for m in build_model("alexnet").features]
    assert names[:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d", "Conv2d", "ReLU", "LocalResponseNorm",
                         "MaxPool2d"]  # fmt: skip


def test_the_paper_initialisation():
    mg.manual_seed(0)
    model = build_model("alexnet")
    layers = [*model.conv_layers, model.fc6, model.fc7, model.fc8]
    for layer in layers:
        w = layer.weight.numpy()
        assert w.dtype == np.float32
        assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
    biases = [float(layer.bias.numpy().mean()) for layer in layers]
    # biases of 1 in conv2, conv4, conv5, fc6 and fc7 ("accelerates the early stages of learning"), 0 elsewhere
    assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_variant_maps_its_input_to_class_scores(name):
    model = build_model(name)
    cfg = model.config
    x = mg.zeros((2, cfg.in_channels, cfg.image_size, cfg.image_size))
    with mg.no_grad():
        assert model.eval()(x).shape == (2, cfg.num_classes)


def test_the_small_variants_are_built_by_the_same_code():
    tiny = build_model("alexnet-tiny")
    assert type(tiny) is type(build_model("alexnet"))
    assert (tiny.config.in_channels, tiny.config.image_size, tiny.config.num_classes) == (1, 28, 10)
    assert [c.groups for c in tiny.conv_layers] == [1, 2, 1, 2, 2]


def test_the_ablation_switches():
    plain = build_model("alexnet-tiny", lrn=False, groups=1, overlap=False, width=0.5, num_classes=7)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in plain.features)
    assert all(c.groups == 1 for c in plain.conv_layers)
    assert all(m.kernel_size == (2, 2) for m in plain.features if isinstance(m, nn.MaxPool2d))
    assert plain.conv_layers[0].out_channels == 8 and plain.fc8.out_features == 7
    assert plain(mg.zeros((1, 1, 28, 28))).shape == (1, 7)


def test_wrong_input_shapes_and_options_are_named():
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        build_model("alexnet-tiny")(mg.zeros((2, 3, 28, 28)))
    with pytest.raises(ValueError, match="unknown model 'alexnet-huge'"):
        build_model("alexnet-huge")
    with pytest.raises(ValueError, match="cannot be split into 3 groups"):
        build_model("alexnet-tiny", groups=3)


def test_a_model_rebuilds_from_its_saved_config():
    import dataclasses

    model = build_model("alexnet-tiny", lrn=False, width=0.5)
    again = model_from_config(dataclasses.asdict(model.config))
    assert again.config == model.config
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_the_summary_counts_flops_and_parameters():
    model = build_model("alexnet")
    rows = {r.name: r for r in summarize(model)}
    assert rows["conv1"].output_shape == (96, 55, 55)
    assert rows["conv1"].flops == 2 * 96 * 55 * 55 * 3 * 11 * 11 + 96 * 55 * 55
    assert rows["fc6"].params == 9216 * 4096 + 4096
    text = format_summary(model)
    assert "60,965,224" in text and "conv5" in text and "256x6x6" in text


def test_fc7_features_for_nearest_neighbours_are_fc7_after_its_relu():
    model = build_model("alexnet-tiny").eval()
    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    with mg.no_grad():
        feats = model.extract_features(x).numpy()
        # the same by hand: the features, flattened, then the classifier up to fc7 (dropout is off in eval)
        h = model.features(x).reshape(3, -1)
        fc7_in = model.fc6(h).relu()
        before_relu = model.fc7(fc7_in).numpy()
    assert feats.shape == (3, model.config.fc_width)
    assert (before_relu < 0).any()  # so the comparison below can tell before from after the ReLU
    np.testing.assert_allclose(feats, np.maximum(before_relu, 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("activation", "unit"), [("relu", nn.ReLU), ("tanh", nn.Tanh)])
def test_the_activation_switch_puts_one_unit_after_every_conv_and_hidden_fc(activation, unit):
    model = build_model("alexnet-tiny", width=0.25, activation=activation)
    units = [m for m in [*model.features, *model.classifier] if isinstance(m, (nn.ReLU, nn.Tanh))]
    assert len(units) == 5 + 2 and all(type(m) is unit for m in units)
    assert model.config.activation == activation
    rows = [r.name for r in summarize(model)]
    assert rows.count(activation) == 7


def test_tanh_outputs_stay_within_minus_one_and_one():
    mg.manual_seed(0)
    model = build_model("alexnet-tiny", width=0.25, activation="tanh").eval()
    x = mg.tensor(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32) * 10)
    with mg.no_grad():
        feats = model.extract_features(x).numpy()
    assert feats.min() >= -1.0 and feats.max() <= 1.0 and (feats < 0).any()  # not a ReLU: negative values too


def test_the_alexnet_constructor_takes_the_activation_and_records_it():
    from alexnet.model import TINY, AlexNet

    model = AlexNet(TINY.with_options(width=0.25), activation="tanh")
    assert model.config.activation == "tanh" and isinstance(model.features[1], nn.Tanh)
    assert AlexNet(TINY.with_options(width=0.25)).config.activation == "relu"  # the paper's by default


def test_the_activation_survives_a_saved_config_and_old_configs_mean_relu():
    import dataclasses

    model = build_model("alexnet-tiny", width=0.25, activation="tanh")
    saved = dataclasses.asdict(model.config)
    assert isinstance(model_from_config(saved).features[1], nn.Tanh)
    del saved["activation"]  # a checkpoint written before the switch existed
    assert isinstance(model_from_config(saved).features[1], nn.ReLU)


def test_an_unknown_activation_is_named():
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'tanh'\], got 'sigmoid'"):
        build_model("alexnet-tiny", activation="sigmoid")
