"""inference_copy: BatchNorm folded into convolutions for gradient-free forwards, the user's model untouched."""

from __future__ import annotations

import torch
import torchvision
from conftest import assert_same_state, hook_count, model_state
from torch import nn

from fmapviz.engines import inference
from fmapviz.engines.inference import PackedLayer, channels_last, fast_forward, inference_copy


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


def test_convolutions_run_packed_with_their_clamp_fused_and_give_the_plain_result():
    model = with_running_statistics(torchvision.models.mobilenet_v2(num_classes=10))
    fast = inference_copy(model)
    called = [fast.get_submodule(node.target) for node in fast.graph.nodes if node.op == "call_module"]
    packed = [module for module in called if isinstance(module, PackedLayer)]
    assert len(packed) == sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    assert not any(isinstance(module, nn.ReLU6) for module in called)  # each ReLU6 runs inside its convolution
    assert sum(p.pointwise == "hardtanh" for p in packed) == sum(isinstance(m, nn.ReLU6) for m in model.modules())
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast(channels_last(x[:1])), expected[:1], rtol=1e-4, atol=1e-4)  # other batch
    assert all(p.packed_weight is not None for p in packed) == torch.backends.mkldnn.is_available()


def test_packed_convolution_falls_back_to_the_plain_one_outside_its_domain():
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 9, 9, generator=generator)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    packed = PackedLayer(conv, nn.ReLU6())
    expected = torch.clamp(conv(x), 0, 6)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), expected, rtol=1e-5, atol=1e-5)
    grad_path = packed(x.requires_grad_())  # gradients enabled: the plain conv, so autograd works
    grad_path.sum().backward()
    torch.testing.assert_close(grad_path, expected, rtol=1e-5, atol=1e-5)
    assert x.grad is not None and conv.weight.grad is not None
    same = PackedLayer(nn.Conv2d(4, 6, 3, padding="same"), nn.ReLU())
    assert not same.packable
    with torch.no_grad():
        torch.testing.assert_close(same(x), same.layer(x).relu())
        conv.double()  # float64: the plain path
        torch.testing.assert_close(packed(x.double()), torch.clamp(conv(x.double()), 0, 6))


def test_packed_linear_serves_any_batch_and_leaves_other_shapes_to_the_plain_layer():
    generator = torch.Generator().manual_seed(8)
    linear = nn.Linear(12, 5)
    packed = PackedLayer(linear, nn.ReLU())
    with torch.no_grad():
        for rows in (7, 2, 16):  # the weight is reordered for the first batch and serves the others
            x = torch.randn(rows, 12, generator=generator)
            torch.testing.assert_close(packed(x), linear(x).relu(), rtol=1e-5, atol=1e-5)
        tokens = torch.randn(2, 3, 12, generator=generator)  # 3-D: the plain layer
        torch.testing.assert_close(packed(tokens), linear(tokens).relu())
    assert packed.packable and (packed.packed_weight is not None) == torch.backends.mkldnn.is_available()


def test_packed_layer_falls_back_for_good_when_its_oneDNN_op_is_missing(monkeypatch):
    def missing_op(self, x):
        raise AttributeError("'_OpNamespace' 'mkldnn' object has no attribute '_convolution_pointwise'")

    monkeypatch.setattr(PackedLayer, "_packed_call", missing_op)  # as on a PyTorch without these private ops
    conv = nn.Conv2d(3, 4, 3)
    packed = PackedLayer(conv, nn.ReLU())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        torch.testing.assert_close(packed(x), conv(x).relu())
    assert not packed.packable


def test_a_convolution_read_twice_keeps_its_clamp_apart():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.relu(y) + y

    model = Residual().eval()
    fast = inference_copy(model)
    packed = [m for m in fast.modules() if isinstance(m, PackedLayer)]
    assert len(packed) == 1 and packed[0].pointwise == "none"
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))


def test_fast_forward_runs_big_batches_in_slices_under_the_byte_budget(monkeypatch):
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    row_bytes = 8 * 16 * 16 * 4  # the conv's output for one row is the largest tensor
    monkeypatch.setattr(inference, "SLICE_BYTES", 3 * row_bytes)
    fast = fast_forward(model)
    calls = []
    fast.copy.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    assert fast.row_bytes == {((3, 16, 16), torch.float32, x.device): row_bytes}
    assert calls == [3, 3, 3, 1]  # ceil(10 / 3) rows per slice over ceil(10 * row / budget) = 4 slices
    monkeypatch.setattr(inference, "SLICE_BYTES", 1 << 30)
    calls.clear()
    with torch.no_grad():
        fast(x)
    assert calls == [10]


def test_fast_forward_keeps_batches_whole_when_slices_could_not_be_joined():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return {"mean": y.mean((2, 3)), "max": y.amax((2, 3))}

    class BatchMean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((0, 2, 3))[None]  # one row whatever the batch: slicing would change it

    x = torch.randn(4, 3, 64, 64)
    assert fast_forward(TwoHeads().eval()).rows_per_slice(x) == 4  # a dict output: one forward for the batch
    assert fast_forward(BatchMean().eval()).rows_per_slice(x) == 4
    assert fast_forward(Branchy().eval()).rows_per_slice(x) == 4  # untraced: the model as it is
