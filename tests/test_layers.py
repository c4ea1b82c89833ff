"""summary: shapes, parameters, stride and receptive field checked against gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import hook_count
from torch import nn

import fmapviz


def vgg_style() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 4, 5, padding=2),
    ).eval()


def empirical_window(model: nn.Module, layer: str, size: int, row: int, col: int, trials: int = 6) -> tuple:
    """Bounding box of input pixels with nonzero gradient for one output unit, over random inputs.

    Weights are made positive on a copy so no ReLU hides part of the field; max pooling
    routes gradient to one pixel per window, so several random inputs are united.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    support = torch.zeros(size, size, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    for _ in range(trials):
        x = torch.rand(1, 3, size, size, generator=generator, requires_grad=True)
        with fmapviz.capture(model, layer, keep_grad=True, stop_early=True) as maps:
            model(x)
        (gradient,) = torch.autograd.grad(maps[layer][0, 0, row, col], x)
        support |= gradient.abs().sum((0, 1)) > 0
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    return rows.min().item(), cols.min().item(), rows.max().item(), cols.max().item()


@pytest.mark.parametrize(
    ("factory", "layer", "size"),
    [
        (vgg_style, "8", 48),
        (vgg_style, "5", 48),
        (lambda: torchvision.models.resnet18(weights=None).eval(), "layer2", 160),
        (lambda: torchvision.models.resnet18(weights=None).eval(), "layer3.0.conv1", 224),
    ],
)
def test_receptive_field_matches_the_gradient_receptive_field(factory, layer, size):
    torch.manual_seed(0)
    model = factory()
    row_info = fmapviz.summary(model, (1, 3, size, size))[layer]
    _, _, height, width = row_info.output_shape
    row, col = height // 2, width // 2
    top, left, bottom, right = row_info.geometry.window(row, col)
    assert 0 <= top and bottom < size, "choose a size where the whole field fits"
    assert empirical_window(model, layer, size, row, col) == (top, left, bottom, right)
    assert hook_count(model) == 0


def test_summary_rows_shapes_parameters_and_table():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    rows = fmapviz.summary(model)
    assert model.training  # mode restored
    assert rows["layer4"].output_shape == (1, 512, 7, 7)
    assert rows["layer4"].stride == (32, 32)
    assert rows["layer4"].receptive_field == (435, 435)
    assert rows["conv1"].parameters == 64 * 3 * 7 * 7
    assert rows["fc"].geometry is None
    table = str(rows)
    assert "layer4.1.conv2" in table and "receptive field" in table.splitlines()[0]


def test_output_size_formula_holds_for_every_conv_of_vgg_style():
    model = vgg_style()
    rows = fmapviz.summary(model, (1, 3, 37, 37))
    size = 37
    for module, row in zip(model, rows):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            settings = (module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))
            k, s, p, d = [v if isinstance(v, int) else v[0] for v in settings]
            size = (size + 2 * p - d * (k - 1) - 1) // s + 1
        assert row.output_shape[-1] == size, row.name


def test_layer_geometry_equals_summary_for_the_chosen_layers_and_stops_after_them():
    from fmapviz.layers import layer_geometry

    model = torchvision.models.resnet18(weights=None).eval()
    ran = []
    model.fc.register_forward_hook(lambda module, args, output: ran.append("fc"))
    rows = fmapviz.summary(model, (1, 3, 96, 96))
    ran.clear()
    found = layer_geometry(model, ["layer2.*.conv2", "layer3"], (1, 3, 96, 96))
    assert list(found) == ["layer2.0.conv2", "layer2.1.conv2", "layer3"]
    assert all(found[name] == rows[name].geometry for name in found)
    assert found["layer3"].stride == (16, 16)
    assert ran == [] and hook_count(model) == 1  # stopped before fc; only the test's own hook is left
