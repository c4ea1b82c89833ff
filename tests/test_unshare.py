"""DeepLift and LRP on ResNet-family models: run on a copy with one module per call, the user's model untouched."""

from __future__ import annotations

import copy
import types
import warnings

import pytest
import torch
from conftest import assert_same_state, hook_count, model_state
from torch import nn

import fmapviz
from fmapviz.engines.saliency.unshare import PASS_THROUGH, UnshareError, reused_modules, unshared_copy


def _first_relu_forward(self, x):
    """torchvision's BasicBlock.forward with its first ReLU call on a module of its own."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu_first(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += identity
    return self.relu(out)


def hand_unshared(resnet: nn.Module) -> nn.Module:
    """A copy of a torchvision resnet18 whose blocks each call two ReLU modules, written by hand."""
    resnet = copy.deepcopy(resnet)
    for block in resnet.modules():
        if type(block).__name__ == "BasicBlock":
            block.relu_first = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_first_relu_forward, block)
    return resnet


@pytest.fixture
def resnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture
def timm_resnet():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).eval()


def _saliency(model, x, method, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum's "did not require gradients" and "hooks on non-linear" notes
        return fmapviz.saliency(model, x, method, target=target).attributions


def test_the_copy_computes_what_the_model_computes_with_one_module_per_call(resnet, timm_resnet):
    x = torch.randn(2, 3, 32, 32)
    for model, drop in ((resnet, ()), (timm_resnet, PASS_THROUGH)):
        before = model_state(model)
        unshared = unshared_copy(model, drop)
        with torch.no_grad():
            assert (unshared(x) - model(x)).abs().max() <= 1e-6
        assert reused_modules(unshared, x) == []
        assert not any(isinstance(m, drop) for m in unshared.modules()) if drop else True
        assert_same_state(before, model_state(model))
        assert hook_count(model) == 0
    names = dict(unshared_copy(resnet).named_modules())
    assert names["layer1.0.relu"] is not names["layer1.0.relu_call1"]
    assert "layer1.0.relu" in dict(resnet.named_modules()) and "layer1.0.relu_call1" not in dict(resnet.named_modules())
    assert any(isinstance(m, nn.Identity) for m in timm_resnet.modules())  # the user's model keeps its layers


@pytest.mark.parametrize("method", ["deeplift", "lrp"])
def test_deeplift_and_lrp_on_torchvision_resnet_equal_a_hand_unshared_resnet(resnet, method):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    before = model_state(resnet)
    result = _saliency(resnet, x, method, [3, 7])
    expected = _saliency(hand_unshared(resnet), x, method, [3, 7])
    assert result.abs().max() > 0
    assert torch.allclose(result, expected, atol=1e-6 * expected.abs().max().item())
    assert_same_state(before, model_state(resnet))
    assert hook_count(resnet) == 0 and reused_modules(resnet, x)  # still the user's shared ReLUs


@pytest.mark.parametrize("method", ["deeplift", "lrp"])
def test_deeplift_and_lrp_on_timm_resnet_equal_torchvision_s_with_the_same_weights(resnet, timm_resnet, method):
    resnet.load_state_dict(timm_resnet.state_dict())  # the same parameter names: conv1, layer1.0.bn2, fc, ...
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    before = model_state(timm_resnet)
    result = _saliency(timm_resnet, x, method, 5)
    expected = _saliency(hand_unshared(resnet), x, method, 5)
    assert result.abs().max() > 0
    assert torch.allclose(result, expected, atol=1e-5 * expected.abs().max().item())
    assert_same_state(before, model_state(timm_resnet))


class Untraceable(nn.Module):
    """One ReLU called twice behind data-dependent control flow, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.relu(self.conv(x))
        if y.sum() > 0:
            y = self.relu(y - 0.1)
        return self.fc(y.mean((2, 3)))


def test_a_reused_module_in_a_model_fx_cannot_trace_or_with_hooks_is_one_clear_line(resnet):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"DeepLift: module 'relu' runs more than once .* torch.fx cannot trace"):
        fmapviz.saliency(Untraceable().eval(), x, "deeplift", target=0)
    handle = resnet.layer2.register_forward_hook(lambda *_: None)
    try:
        with pytest.raises(ValueError, match=r"LRP: module 'layer1.0.relu' .* module 'layer2' has hooks"):
            fmapviz.saliency(resnet, x, "lrp", target=0)
        assert hook_count(resnet) == 1
    finally:
        handle.remove()
    with pytest.raises(UnshareError, match="torch.fx cannot trace Untraceable"):
        unshared_copy(Untraceable())
