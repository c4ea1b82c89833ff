"""Initialization diagnostics on deep plain CNNs."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_state, hook_count, model_state
from torch import nn

from fmapviz.engines.training import init_report


def plain_cnn(depth: int = 20, init: str = "he") -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth):
        conv = nn.Conv2d(channels, 16, 3, padding=1)
        if init == "he":
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        else:
            nn.init.normal_(conv.weight, 0.0, 0.01)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = 16
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)]
    return nn.Sequential(*layers).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_small_normal_init_flags_vanishing_activations_and_he_does_not(x):
    small = init_report(plain_cnn(init="normal"), x)
    assert len(small.layers) == 20
    vanishing = small.flagged_as("vanishing activations")
    assert "39" in vanishing and "1" not in vanishing  # the last ReLU, not the first
    assert small.layers[-1].std < 1e-10 < small.layers[0].std
    he = init_report(plain_cnn(init="he"), x)
    assert he.flagged_as("vanishing activations") == [] and he.flagged_as("vanishing gradients") == []
    assert 0.01 < he.layers[-1].std / he.input_std < 10
    assert all(0.3 < layer.zero_fraction < 0.8 for layer in he.layers)


def test_gradients_shrink_towards_the_input_under_small_init(x):
    small = init_report(plain_cnn(init="normal"), x)
    assert small.layers[0].grad_rms < 1e-6 * small.layers[-1].grad_rms
    assert "1" in small.flagged_as("vanishing gradients")


def test_histograms_count_every_value(x):
    report = init_report(plain_cnn(depth=3), x, bins=10)
    assert [layer.layer for layer in report.layers] == ["1", "3", "5"]
    assert all(layer.histogram.shape == (10,) and layer.edges.shape == (11,) for layer in report.layers)
    assert float(report.layers[0].histogram.sum()) == 4 * 16 * 32 * 32
    assert "vanishing" not in str(report) and "grad rms" in str(report)


def test_init_report_leaves_the_model_untouched(x):
    model = plain_cnn(depth=3).train()
    before = model_state(model)
    init_report(model, x)
    assert_same_state(before, model_state(model))
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError):
        init_report(model, torch.randn(2, 5, 16, 16))
    assert_same_state(before, model_state(model))
    assert hook_count(model) == 0


def test_init_report_rejects_integer_input():
    with pytest.raises(ValueError, match="floating-point batch"):
        init_report(plain_cnn(depth=2), torch.zeros(1, 3, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_a_stock_torchvision_initialisation_is_healthy_and_its_statistics_come_back(name):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()  # kaiming convolutions, BatchNorm
    before = model_state(model)
    running = [buffer.clone() for buffer in model.buffers()]
    report = init_report(model, torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    assert len(report.layers) > 10
    assert report.flagged_as("vanishing activations") == [] and report.flagged_as("exploding activations") == []
    assert all(0.1 < layer.std / report.input_std < 10 for layer in report.layers)  # BatchNorm: batch statistics
    assert_same_state(before, model_state(model))
    assert not model.training and all(torch.equal(a, b) for a, b in zip(running, model.buffers(), strict=True))


def test_large_gains_without_normalisation_flag_exploding_activations(x):
    model = plain_cnn(depth=20, init="he")
    with torch.no_grad():
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.mul_(3.0)  # three times the gain that keeps the signal's scale
    report = init_report(model, x)
    exploding = report.flagged_as("exploding activations")
    assert "39" in exploding and "1" not in exploding and report.flagged_as("vanishing activations") == []
    assert report.layers[-1].std > 1e6 * report.input_std


def test_small_normal_convolutions_without_normalisation_vanish_in_training_mode_too(x):
    model = plain_cnn(init="normal").train()
    report = init_report(model, x)
    assert "39" in report.flagged_as("vanishing activations") and model.training


def test_dropout_does_not_read_as_dead_units(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.9), nn.ReLU()).train()
    report = init_report(model, x)
    assert report.layers[0].zero_fraction < 0.8 and model[1].training
