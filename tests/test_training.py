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
