"""explain_channels: exact attributions on a linear head, ranking, targets, clean model, real-weights faithfulness."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import ROOT, SHARED, TinyCNN, assert_same_state, hook_count, model_state, real_weights

import fmapviz
from fmapviz.engines.explain import ATTRIBUTIONS


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def test_activation_x_gradient_is_weight_times_mean_activation_on_a_linear_head(tiny):
    x = torch.rand(2, 3, 16, 16)
    found = fmapviz.explain_channels(tiny, x, "features.3", target=[1, 2], top=3)
    with torch.no_grad():
        activation = fmapviz.feature_maps(tiny, x, "features.3")["features.3"]
    expected = tiny.fc.weight.detach()[[1, 2]] * activation.mean(dim=(2, 3))
    layer = found["features.3"]
    torch.testing.assert_close(layer.attributions, expected)
    torch.testing.assert_close(layer.channels, expected.topk(3, dim=1).indices)
    assert layer.maps.shape == (2, 16, 8, 8)
    torch.testing.assert_close(found.logits, tiny(x).detach())
    # completeness on a linear head: the attributions add up to the logit minus the bias
    torch.testing.assert_close(layer.attributions.sum(1), found.logits[:, [1, 2]].diagonal() - tiny.fc.bias[[1, 2]])


def test_zeroing_the_top_channel_drops_the_logit_by_its_attribution(tiny):
    x = torch.rand(1, 3, 16, 16)
    found = fmapviz.explain_channels(tiny, x, "features.3", top=1)
    best, target = int(found["features.3"].channels[0, 0]), int(found.target[0])
    handle = tiny.features[3].register_forward_hook(lambda _m, _i, out: out.index_fill(1, torch.tensor([best]), 0.0))
    try:
        with torch.no_grad():
            ablated = tiny(x)[0, target]
    finally:
        handle.remove()
    drop = found.logits[0, target] - ablated
    assert float(drop) == pytest.approx(float(found["features.3"].values[0, 0]), rel=1e-4)


@pytest.mark.parametrize("method", list(ATTRIBUTIONS))
def test_every_attribution_method_gives_maps_that_sum_to_the_attributions(tiny, method):
    found = fmapviz.explain_channels(tiny, torch.rand(1, 3, 16, 16), ["features.1", "features.3"], method=method)
    assert list(found.layers) == ["features.1", "features.3"]
    for layer in found.layers.values():
        torch.testing.assert_close(layer.maps.sum(dim=(2, 3)), layer.attributions)
        assert layer.channels.shape == (1, 5)


def test_class_names_are_case_insensitive_targets(tiny):
    categories = ["cat", "dog", "Tabby", "fish"]
    found = fmapviz.explain_channels(tiny, torch.rand(2, 3, 16, 16), "features.3", "tabby", categories=categories)
    assert found.target.tolist() == [2, 2] and found.target_names == ["Tabby", "Tabby"]


def test_model_comes_back_untouched_after_use_and_after_errors(tiny):
    tiny.train()
    before = model_state(tiny)
    fmapviz.explain_channels(tiny, torch.rand(1, 3, 16, 16), "features.3")
    for bad in ({"layers": "fc"}, {"layers": "features.3", "target": 9}, {"layers": "features.3", "method": "nope"}):
        with pytest.raises(ValueError):
            fmapviz.explain_channels(tiny, torch.rand(1, 3, 16, 16), **bad)
    assert hook_count(tiny) == 0
    assert_same_state(before, model_state(tiny))


def test_a_layer_without_spatial_maps_is_named_in_the_error(tiny):
    with pytest.raises(ValueError, match=r"Layer 'fc' gives \(1, 4\) outputs, not \(N,C,H,W\)"):
        fmapviz.explain_channels(tiny, torch.rand(1, 3, 16, 16), "fc")


def test_show_channel_explanation_draws_one_row_per_layer_and_actmax_row(tiny):
    x = torch.rand(1, 3, 16, 16)
    found = fmapviz.explain_channels(tiny, x, ["features.1", "features.3"], top=3)
    plain = fmapviz.show_channel_explanation(found, x[0]).image
    best = int(found["features.3"].channels[0, 0])
    with_actmax = fmapviz.show_channel_explanation(
        found, x[0], actmax={"features.3": {best: torch.rand(3, 8, 8)}}
    ).image
    assert plain.ndim == 3 and plain.shape[2] == 3 and plain.std() > 10
    assert with_actmax.shape[0] > plain.shape[0] * 1.5  # two extra rows
    with pytest.raises(ValueError, match="index 3 is out of range"):
        fmapviz.show_channel_explanation(found, x[0], index=3)


@real_weights
@pytest.mark.real_weights
def test_zeroing_explained_channels_drops_the_logit_more_than_active_or_random_ones(mobilenet):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from explain_channels import logit_drops

    files = sorted((SHARED / "imagenet-samples").glob("*.JPEG"))[::20]
    if not files:
        pytest.skip(f"no ImageNet samples in {SHARED / 'imagenet-samples'} (../shared beside the repository)")
    x = fmapviz.load_image([str(f) for f in files], mobilenet.transform).tensor
    drops = {name: float(value.mean()) for name, value in logit_drops(mobilenet.model, x).items()}
    explained, active, random = drops.values()
    assert explained > active > random, drops
    assert explained > 3 * random, drops


def test_unit_gradients_match_autograd_row_by_row_and_leave_the_model_clean(tiny):
    from fmapviz.engines.explain import unit_gradients

    x = torch.rand(3, 3, 16, 16)
    before = model_state(tiny)
    found = unit_gradients(tiny, x, "features.3", [0, 5, 5])
    for row, channel in enumerate([0, 5, 5]):
        one = x[row : row + 1].clone().requires_grad_(True)
        with fmapviz.capture(tiny, "features.3", keep_grad=True) as maps:
            tiny(one)
        (gradient,) = torch.autograd.grad(maps["features.3"][0, channel].mean(), one)
        torch.testing.assert_close(found[row], gradient[0].sum(0).abs())
    assert hook_count(tiny) == 0
    assert_same_state(before, model_state(tiny))
    with pytest.raises(ValueError, match="one channel per row"):
        unit_gradients(tiny, x, "features.3", [1])
