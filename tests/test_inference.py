"""inference_copy: BatchNorm folded into convolutions for gradient-free forwards, the user's model untouched."""

from __future__ import annotations

import torch
import torchvision
from conftest import assert_same_state, hook_count, model_state
from torch import nn

from fmapviz.engines.inference import channels_last, inference_copy


def with_running_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with non-trivial BatchNorm statistics and affine parameters (else folding is a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


def norms(model: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def test_traced_architectures_fold_every_norm_and_give_the_same_logits():
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for build in (torchvision.models.resnet18, torchvision.models.mobilenet_v2):
        model = with_running_statistics(build(num_classes=10))
        before = model_state(model)
        fast = inference_copy(model)
        with torch.no_grad():
            expected, folded = model(x), fast(channels_last(x))
        torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
        used = {node.target for node in fast.graph.nodes if node.op == "call_module"}
        assert not any(isinstance(fast.get_submodule(name), nn.BatchNorm2d) for name in used), build.__name__
        assert norms(model) > 0 and hook_count(model) == 0
        assert_same_state(before, model_state(model))


class Branchy(nn.Module):
    """Control flow on a tensor value: fx cannot trace it, so folding goes by nn.Sequential neighbours."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if x.mean() > 0:
            x = x * 2
        return self.head(x.mean((2, 3)))


def test_untraceable_model_is_folded_on_a_deep_copy():
    model = with_running_statistics(Branchy())
    fast = inference_copy(model)
    assert fast is not model and norms(fast) == 0 and norms(model) == 1
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_training_mode_or_hooks_keep_the_model_itself():
    model = with_running_statistics(Branchy()).train()
    assert inference_copy(model) is model
    model.eval()
    handle = model.stem[2].register_forward_hook(lambda module, args, output: output * 0)
    try:
        assert inference_copy(model) is model  # a copy would skip the user's hook
    finally:
        handle.remove()


def test_the_copy_is_reused_until_the_weights_change():
    model = with_running_statistics(torchvision.models.resnet18(num_classes=10))
    first = inference_copy(model)
    assert inference_copy(model) is first
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # an optimizer step, in place
        changed = inference_copy(model)
        assert changed is not first
        torch.testing.assert_close(changed(x), model(x), rtol=1e-4, atol=1e-4)
        model.layer1[0].bn1.running_mean.fill_(0.5)  # a buffer changes what folding gives
        assert inference_copy(model) is not changed
        torch.testing.assert_close(inference_copy(model)(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_flag_the_forward_reads_makes_a_new_copy():
    model = with_running_statistics(Branchy())
    model.scale = 1.0
    original_forward = Branchy.forward

    def forward(self, x):
        return original_forward(self, x) * self.scale

    model.forward = forward.__get__(model)
    first = inference_copy(model)
    model.scale = 3.0
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(inference_copy(model)(x), model(x), rtol=1e-5, atol=1e-5)
    assert inference_copy(model) is not first


def test_an_untraceable_model_without_foldable_pairs_is_not_copied():
    model = Branchy().eval()
    model.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    assert inference_copy(model) is model
