"""capture and feature_maps: selectors, exact values next to in-place ops, hooks always removed."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision
from conftest import TinyCNN, assert_same_state, edge_image, hook_count, model_state, real_weights
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

import fmapviz
from fmapviz.errors import LayerNotFoundError
from fmapviz.hooks import layer_keys, resolve_layers

capture_module = importlib.import_module("fmapviz.hooks.recording")


@pytest.fixture
def watch_every_map(monkeypatch):
    """No map is copied as it is captured: every map is held by reference behind the copy-before-write guard."""
    monkeypatch.setattr(capture_module, "COPY_AT_ONCE_BYTES", 0)


@pytest.fixture(params=["copied at once", "watched"])
def either_path(request, monkeypatch):
    """Run the test with small maps copied as captured (the default) and with every map watched."""
    if request.param == "watched":
        monkeypatch.setattr(capture_module, "COPY_AT_ONCE_BYTES", 0)


def test_vertical_edge_filter_gives_exactly_the_expected_map():
    conv = nn.Conv2d(1, 1, 3, padding=0, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[-1.0, 0.0, 1.0]] * 3).view(1, 1, 3, 3))
    model = nn.Sequential(conv, nn.ReLU())
    image = edge_image(8)[:, :1]  # zeros on the left half, ones on the right
    maps = fmapviz.feature_maps(model, image, ["0", "1"])
    expected = torch.zeros(1, 1, 6, 6)
    expected[..., 2:4] = 3.0  # the two output columns whose window straddles the edge
    assert torch.equal(maps["0"], expected)
    assert torch.equal(maps["1"], expected)


@pytest.mark.parametrize(
    ("selector", "expected_names", "expected_shape"),
    [
        ("layer3", ["layer3"], (2, 256, 4, 4)),
        ("layer3.*.conv2", ["layer3.0.conv2", "layer3.1.conv2"], (2, 256, 4, 4)),
        (nn.AdaptiveAvgPool2d, ["avgpool"], (2, 512, 1, 1)),
        ("AdaptiveAvgPool2d", ["avgpool"], (2, 512, 1, 1)),
        (["layer4", "layer1"], ["layer1", "layer4"], None),
    ],
)
def test_selector_styles_give_the_right_layers_and_shapes(resnet18, selector, expected_names, expected_shape):
    maps = fmapviz.feature_maps(resnet18, torch.randn(2, 3, 64, 64), selector)
    assert list(maps) == expected_names
    if expected_shape:
        assert all(tuple(m.shape) == expected_shape for m in maps.values())


def test_all_selector_orders_by_execution_and_counts_repeated_calls(resnet18):
    maps = fmapviz.feature_maps(resnet18, torch.randn(1, 3, 64, 64), "all", stop_early=False)
    names = list(maps)
    assert names.index("conv1") < names.index("layer1.0.conv1") < names.index("layer4") < names.index("fc")
    # BasicBlock calls its one ReLU module twice: two entries, in order
    assert names.index("layer1.0.relu") < names.index("layer1.0.relu#2")
    assert maps["fc"].shape == (1, 1000)


def _piecewise_bottleneck(block: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a torchvision Bottleneck step by step without hooks or in-place ops."""
    out = {}
    h = block.bn1(block.conv1(x))
    out["bn1"] = h.clone()
    h = torch.relu(h)
    h = block.bn2(block.conv2(h))
    out["bn2"] = h.clone()
    h = torch.relu(h)
    h = block.bn3(block.conv3(h))
    out["bn3"] = h.clone()
    identity = block.downsample(x) if block.downsample is not None else x
    out["block"] = torch.relu(h + identity)
    return out


def test_values_equal_a_hook_free_reference_next_to_in_place_ops(either_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        reference = _piecewise_bottleneck(model.layer1[0], stem)
    names = ["layer1.0.bn1", "layer1.0.bn2", "layer1.0.bn3", "layer1.0"]
    maps = fmapviz.feature_maps(model, x, names)
    for name, key in zip(names, ["bn1", "bn2", "bn3", "block"]):
        assert torch.allclose(maps[name], reference[key], atol=1e-5), name
    # bn3's output is rewritten by `out += identity` and relu(inplace) afterwards; ours kept the pre-add value
    assert (maps["layer1.0.bn3"] < 0).any()


def test_in_place_relu_output_and_its_input_both_keep_their_own_values(tiny_cnn, either_path):
    x = torch.randn(2, 3, 8, 8)
    maps = fmapviz.feature_maps(tiny_cnn, x, ["features.0", "features.1"])
    with torch.no_grad():
        conv = tiny_cnn.features[0](x)
    assert torch.equal(maps["features.0"], conv)
    assert (maps["features.0"] < 0).any()
    assert torch.equal(maps["features.1"], conv.clamp(min=0))


def test_only_tensors_at_risk_are_copied(resnet18, watch_every_map):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), fmapviz.capture(resnet18, ["layer1.0.bn1", "layer1.0.conv1"]) as maps:
        conv_out = {}
        handle = resnet18.layer1[0].conv1.register_forward_hook(lambda m, a, o: conv_out.setdefault("t", o))
        resnet18(x)
        handle.remove()
    # conv1's output is never written in place: captured by reference, no copy
    assert maps["layer1.0.conv1"].untyped_storage().data_ptr() == conv_out["t"].untyped_storage().data_ptr()


def test_in_place_pointwise_op_moves_the_model_tensor_instead_of_copying_the_map(watch_every_map):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        expected_output = model(x)
        expected_map = model[0](x)
        held = {}
        handle = model[0].register_forward_hook(lambda m, a, o: held.setdefault("conv", o))
        with fmapviz.capture(model, "0") as maps:
            output = model(x)
        handle.remove()
    assert torch.equal(output, expected_output) and torch.equal(maps["0"], expected_map)
    assert (maps["0"] < 0).any()
    # relu_ ran out of place: the map kept conv's storage and the model's tensor moved to a new one
    assert maps["0"].untyped_storage().data_ptr() != held["conv"].untyped_storage().data_ptr()
    assert (held["conv"] >= 0).all()


class _ViewThenInPlace(nn.Module):
    """Keeps a view of a tensor, then rewrites the tensor in place: the view must see the new values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        head = y[:, 1:2]
        y.relu_()
        return head.clone()


def test_in_place_op_on_a_tensor_with_other_views_copies_the_map_and_keeps_model_semantics(watch_every_map):
    torch.manual_seed(0)
    model = _ViewThenInPlace().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected_output = model(x)
        expected_map = model.conv(x)
        with fmapviz.capture(model, "conv") as maps:
            output = model(x)
    assert torch.equal(output, expected_output) and (output >= 0).all()
    assert torch.equal(maps["conv"], expected_map) and (maps["conv"] < 0).any()


class _SparseThenInPlace(nn.Module):
    """A layer returning a sparse tensor (no plain storage) that the model then rewrites in place."""

    def __init__(self) -> None:
        super().__init__()
        self.sparse = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sparse(x.to_sparse())
        y.mul_(2)
        return y.to_dense()


def test_in_place_op_on_a_captured_sparse_tensor_copies_the_map(watch_every_map):
    model, x = _SparseThenInPlace(), torch.randn(2, 3)
    with torch.no_grad(), fmapviz.capture(model, "sparse") as maps:
        output = model(x)
    assert torch.equal(output, 2 * x)
    assert torch.equal(maps["sparse"].to_dense(), x)


def test_no_hook_remains_after_normal_exit_and_after_exception(resnet18, watch_every_map):
    before = model_state(resnet18)
    with fmapviz.capture(resnet18, "all") as maps:
        resnet18(torch.randn(1, 3, 32, 32))
    assert maps and hook_count(resnet18) == 0
    with pytest.raises(RuntimeError, match="boom"), fmapviz.capture(resnet18, "all"):
        raise RuntimeError("boom")
    assert hook_count(resnet18) == 0
    with pytest.raises(KeyboardInterrupt), fmapviz.capture(resnet18, "layer1"):
        raise KeyboardInterrupt
    assert hook_count(resnet18) == 0
    with pytest.raises(RuntimeError), fmapviz.capture(resnet18, "layer1"):
        resnet18(torch.randn(1, 5, 32, 32))  # wrong channel count fails inside the forward
    assert hook_count(resnet18) == 0
    with pytest.raises(RuntimeError, match="after"), fmapviz.capture(resnet18, "layer1.0.bn1"):
        resnet18(torch.randn(1, 3, 32, 32))  # bn1's map is held by reference: the copy-before-write guard is on
        raise RuntimeError("after the forward")
    assert hook_count(resnet18) == 0
    assert _get_current_dispatch_mode() is None  # the guard is gone too
    assert_same_state(before, model_state(resnet18))


def test_copy_before_write_guard_starts_only_once_a_map_is_held_by_reference(watch_every_map):
    modes = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True))
    model.register_forward_pre_hook(lambda module, args: modes.append(_get_current_dispatch_mode()))
    model[2].register_forward_pre_hook(lambda module, args: modes.append(_get_current_dispatch_mode()))
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad(), fmapviz.capture(model, "2") as maps:
        model(x)
    assert modes[0] is None and modes[1] is None  # nothing captured yet: ops run without the Python check
    assert (maps["2"] < 0).any()  # still exact: the in-place ReLU after it did not change the captured map
    torch.testing.assert_close(maps["2"], model[2](model[1](model[0](x).clone())))
    assert _get_current_dispatch_mode() is None


def test_small_maps_are_copied_at_once_and_the_guard_starts_past_the_budget(monkeypatch):
    modes = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True))
    model[3].register_forward_pre_hook(lambda module, args: modes.append(_get_current_dispatch_mode()))
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        first = model[0](x)
        second = model[2](model[1](first.clone()))
        with fmapviz.capture(model, ["0", "2"]) as maps:
            model(x)
        assert modes[-1] is None  # both maps were copied as captured: no guard on the later ops
        assert torch.equal(maps["0"], first) and torch.equal(maps["2"], second)
        monkeypatch.setattr(capture_module, "COPY_AT_ONCE_BYTES", first.numel() * 4)  # room for the first only
        with fmapviz.capture(model, ["0", "2"]) as maps:
            model(x)
    assert modes[-1] is not None  # the second map is held by reference behind the guard
    assert torch.equal(maps["0"], first) and torch.equal(maps["2"], second)
    assert (maps["0"] < 0).any() and (maps["2"] < 0).any()
    assert _get_current_dispatch_mode() is None


def test_unknown_layer_error_lists_closest_names(resnet18):
    with pytest.raises(LayerNotFoundError, match=r"Unknown layer 'layer5'.*Closest: .*layer"):
        fmapviz.capture(resnet18, "layer5")
    with pytest.raises(LayerNotFoundError, match="layer3.0.conv1"):
        fmapviz.capture(resnet18, "layer3.0.cnv1")
    with pytest.raises(LayerNotFoundError, match="No module of type"):
        fmapviz.capture(resnet18, nn.LSTM)
    with pytest.raises(LayerNotFoundError):
        fmapviz.capture(resnet18, "layer9.*")  # a glob that matches nothing is an error, not an empty dict
    assert hook_count(resnet18) == 0


def test_reuse_across_batches_nested_and_two_captures(tiny_cnn):
    a, b = torch.randn(1, 3, 8, 8), torch.randn(3, 3, 8, 8)
    with torch.no_grad(), fmapviz.capture(tiny_cnn, "features.2") as outer:
        with fmapviz.capture(tiny_cnn, ["features.0", "features.2"]) as inner:
            tiny_cnn(a)
        assert inner["features.2"].shape[0] == 1
        assert torch.equal(outer["features.2"], inner["features.2"])
        tiny_cnn(b)  # the outer capture is refilled for the new batch
        assert outer["features.2"].shape[0] == 3 and list(outer) == ["features.2"]
    assert hook_count(tiny_cnn) == 0


def test_stop_early_skips_later_layers(tiny_cnn):
    calls = []
    handle = tiny_cnn.fc.register_forward_hook(lambda *args: calls.append(1))
    maps = fmapviz.feature_maps(tiny_cnn, torch.randn(1, 3, 8, 8), "features.0")
    handle.remove()
    assert list(maps) == ["features.0"] and calls == []


def test_stop_early_returns_every_call_of_a_reused_module(resnet18):
    x = torch.randn(1, 3, 64, 64)
    everything = fmapviz.feature_maps(resnet18, x, "all", stop_early=False)
    block = fmapviz.feature_maps(resnet18, x, "layer1.0.relu")
    assert list(block) == ["layer1.0.relu", "layer1.0.relu#2"]
    assert torch.equal(block["layer1.0.relu#2"], everything["layer1.0.relu#2"])
    relus = fmapviz.feature_maps(resnet18, x, nn.ReLU)
    assert "layer4.1.relu#2" in relus  # the network's last block output
    assert list(relus) == [key for key in everything if key.split("#")[0] in relus or key in relus]
    calls = []
    handle = resnet18.layer2.register_forward_hook(lambda *args: calls.append(1))
    try:
        fmapviz.feature_maps(resnet18, x, "layer1.0.relu")  # still stops after the block
    finally:
        handle.remove()
    assert calls == []


def test_call_keys_select_one_call_everywhere_a_layer_is_named(resnet18):
    x = torch.randn(1, 3, 64, 64)
    everything = fmapviz.feature_maps(resnet18, x, "all", stop_early=False)
    second = fmapviz.feature_maps(resnet18, x, "layer4.1.relu#2")
    assert list(second) == ["layer4.1.relu#2"]
    assert torch.equal(second["layer4.1.relu#2"], everything["layer4.1.relu#2"])
    first = fmapviz.feature_maps(resnet18, x, ["layer1.0.relu#1", "layer2"])
    assert list(first) == ["layer1.0.relu", "layer2"]
    assert resolve_layers(resnet18, ["layer4.1.relu#2", "layer1"]) == ["layer1", "layer4.1.relu#2"]
    with pytest.raises(LayerNotFoundError, match="Unknown layer .layer4.1.relux."):
        resolve_layers(resnet18, "layer4.1.relux#2")
    with pytest.raises(LayerNotFoundError, match="calls count from 1"):
        resolve_layers(resnet18, "layer4.1.relu#0")
    # the reused-module rule: a module named without #k is its last call
    assert layer_keys(everything, "layer4.1.relu") == ["layer4.1.relu#2"]
    assert layer_keys(everything, "layer4.1.relu#1") == ["layer4.1.relu"]
    assert layer_keys(everything, "layer4.1.conv1") == ["layer4.1.conv1"]
    assert layer_keys(["backbone:0", "backbone:pool"], "backbone") == ["backbone:0", "backbone:pool"]


def test_device_and_dtype_options_cast_and_halve_memory(tiny_cnn):
    x = torch.randn(2, 3, 8, 8)
    full = fmapviz.feature_maps(tiny_cnn, x, "features.0")["features.0"]
    half = fmapviz.feature_maps(tiny_cnn, x, "features.0", dtype=torch.float16, device="cpu")["features.0"]
    assert half.dtype == torch.float16
    assert half.element_size() * half.numel() * 2 == full.element_size() * full.numel()
    assert torch.allclose(half.float(), full, atol=1e-2)


def test_keep_grad_records_gradients_of_the_captured_value(tiny_cnn):
    x = torch.randn(1, 3, 8, 8)
    with fmapviz.capture(tiny_cnn, ["features.0", "features.2"], keep_grad=True) as maps:
        out = tiny_cnn(x)
    out[0, 1].backward()
    conv = maps["features.0"]
    assert conv.requires_grad and (conv < 0).any()  # the pre-ReLU values, though ReLU(inplace) followed
    assert maps.grads["features.0"].shape == conv.shape
    # dL/d(conv out) is zero wherever the following ReLU was inactive
    assert torch.all(maps.grads["features.0"][conv < 0] == 0)
    assert hook_count(tiny_cnn) == 0
    tiny_cnn.zero_grad(set_to_none=True)


class TupleOut(nn.Module):
    def forward(self, x):
        return x * 2, {"aux": x}


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.pair = TupleOut()

    def forward(self, x):
        main, extra = self.pair(self.conv(x))
        return {"out": main, "aux": extra["aux"]}


def test_tuple_and_dict_outputs_give_their_first_tensor_or_the_picked_one():
    model = DictModel().eval()
    x = torch.randn(1, 3, 4, 4)
    maps = fmapviz.feature_maps(model, x, "pair")
    with torch.no_grad():
        conv = model.conv(x)
    assert torch.allclose(maps["pair"], conv * 2)
    picked = fmapviz.feature_maps(model, x, "pair", pick=lambda out: out[1]["aux"])
    assert torch.allclose(picked["pair"], conv)


def test_resolve_layers_on_a_user_cnn_by_module_instance():
    model = TinyCNN()
    assert resolve_layers(model, model.features[2]) == ["features.2"]


@real_weights
@pytest.mark.real_weights
def test_mobilenet_real_weights_shapes_for_each_selector_style(mobilenet):
    x = torch.randn(1, 3, 224, 224)
    maps = fmapviz.feature_maps(mobilenet.model, x, ["features.1", "features.7", "features.14.conv.*"])
    assert maps["features.1"].shape == (1, 16, 112, 112)
    assert maps["features.7"].shape == (1, 64, 14, 14)
    assert [n for n in maps if n.startswith("features.14.conv")] == [
        "features.14.conv.0",
        "features.14.conv.1",
        "features.14.conv.2",
        "features.14.conv.3",
    ]
    convs = fmapviz.feature_maps(mobilenet.model, x, nn.Conv2d)
    assert len(convs) == 52


def test_keep_grad_starts_the_graph_at_the_first_layer_when_nothing_upstream_needs_it(tiny_cnn):
    for parameter in tiny_cnn.parameters():
        parameter.requires_grad_(False)
    x = torch.randn(1, 3, 8, 8)  # does not require grad either
    with fmapviz.capture(tiny_cnn, ["features.0", "features.2"], keep_grad=True) as maps:
        out = tiny_cnn(x)
    (grad_deep,) = torch.autograd.grad(out[0, 1], maps["features.2"], retain_graph=True)
    out[0, 1].backward()
    assert torch.equal(maps.grads["features.2"], grad_deep)
    assert maps.grads["features.0"].shape == (1, 8, 8, 8) and maps.grads["features.0"].abs().sum() > 0
    assert x.grad is None


def test_nested_model_guards_restore_each_level():
    from fmapviz.hooks import model_guard

    model = TinyCNN().train()
    weight = model.features[0].weight
    with model_guard(model, freeze=False):
        assert not model.training and weight.requires_grad
        with model_guard(model):  # freezing under a guard that does not freeze: a full guard
            assert not model.training and not weight.requires_grad
            with model_guard(model):  # the same guard again: nothing to change
                assert not model.training and not weight.requires_grad
            assert not model.training and not weight.requires_grad
        assert not model.training and weight.requires_grad
        model.features[0].train()  # a change inside the outer guard is undone by it, not by the inner ones
    assert model.training and all(module.training for module in model.modules()) and weight.requires_grad


def test_model_guard_restores_mixed_modes_frozen_and_tied_parameters():
    from fmapviz._torch_internals import modules_and_parameters
    from fmapviz.hooks import model_guard

    model = TinyCNN().train()
    model.features[2].eval()  # a user's half-frozen fine-tune: one conv in eval mode, its weight frozen
    model.features[2].weight.requires_grad_(False)
    model.tied = model.features[0]  # the same module (and parameters) under a second name
    modules, parameters = modules_and_parameters(model)
    assert [id(m) for m in modules] == [id(m) for m in model.modules()]
    assert [id(p) for p in parameters] == [id(p) for p in model.parameters()]
    before = model_state(model)
    with model_guard(model):
        assert not any(m.training for m in model.modules()) and not any(p.requires_grad for p in model.parameters())
        model.features[3].train()  # a change made inside the guard is undone too
        model.features[0].bias.requires_grad_(True)
    assert_same_state(before, model_state(model))
    assert model.training and not model.features[2].training and not model.features[2].weight.requires_grad
    with model_guard(model.eval()):  # already in eval mode: nothing to switch, still restored exactly
        model.features[0].train()
    assert not any(m.training for m in model.modules())
