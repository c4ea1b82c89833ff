"""Saliency engine: exact gradients, IG completeness, CAM localisation, targets, clean-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN, assert_same_state, hook_count, model_state
from torch import nn

import fmapviz
from fmapviz.engines.saliency import METHODS, LayerSearchCache, SaliencyResult, make_baseline, saliency
from fmapviz.vocabulary import Unit

FAST = {"steps": 8, "samples": 4}
CAM_FAMILY = [name for name, entry in METHODS.items() if entry.takes_layer]


def fast(method: str) -> dict:
    """The FAST settings a method takes (options are checked)."""
    return {key: value for key, value in FAST.items() if key in METHODS[method].options}


class LinearConv(nn.Module):
    """conv (no activation) then linear: its input gradient has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class PatternNet(nn.Module):
    """Class 1 fires on a bright 5x5 square wherever it is; class 0 is a constant."""

    def __init__(self) -> None:
        super().__init__()
        detector = nn.Conv2d(3, 2, 5, padding=2)
        refine = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            detector.weight.zero_()
            detector.weight[0] = 1.0 / 75
            detector.bias.copy_(torch.tensor([-0.5, 1.0]))
            refine.weight.zero_()
            refine.weight[0, 0, 1, 1] = refine.weight[1, 1, 1, 1] = 1.0
        self.features = nn.Sequential(detector, nn.ReLU(), refine, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 1.0], [2000.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def pattern_image(row: int = 22, col: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image = 0.1 * torch.rand(1, 3, 32, 32, generator=generator)
    image[..., row - 2 : row + 3, col - 2 : col + 3] = 1.0
    return image


def test_gradient_equals_analytic_gradient_of_linear_conv_model():
    torch.manual_seed(0)
    model = LinearConv().eval()
    x = torch.randn(2, 3, 8, 8)
    result = saliency(model, x, "gradient", target=1)
    fc_rows = model.fc.weight[1].reshape(1, 2, 8, 8).expand(2, -1, -1, -1)
    expected = F.conv_transpose2d(fc_rows, model.conv.weight, padding=1)
    torch.testing.assert_close(result.attributions[:, 0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.maps[:, 0], expected.sum(1), rtol=1e-5, atol=1e-6)
    assert result.target.tolist() == [[1], [1]]


def test_input_x_gradient_is_input_times_gradient(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    gradient = saliency(tiny_cnn, x, "gradient", target=2).attributions
    product = saliency(tiny_cnn, x, "input_x_gradient", target=2).attributions
    torch.testing.assert_close(product, gradient * x.unsqueeze(1))


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_integrated_gradients_completeness(tiny_cnn, baseline):
    x = torch.randn(2, 3, 16, 16)
    result = saliency(tiny_cnn, x, "integrated_gradients", target="top", steps=64, baseline=baseline)
    reference = make_baseline(x, baseline)
    with torch.no_grad():
        top = result.target[:, 0]
        rows = torch.arange(2)
        difference = tiny_cnn(x)[rows, top] - tiny_cnn(reference)[rows, top]
    total = result.attributions.sum((2, 3, 4))[:, 0]
    torch.testing.assert_close(total, difference, rtol=0.02, atol=2e-3)
    assert result.delta.shape == (2, 1)
    assert result.delta.abs().max() < 2e-3 + 0.02 * difference.abs().max()


def test_black_baseline_with_normalization_is_black_pixels():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    baseline = make_baseline(torch.zeros(1, 3, 4, 4), "black", mean, std)
    display = baseline * torch.tensor(std).reshape(1, 3, 1, 1) + torch.tensor(mean).reshape(1, 3, 1, 1)
    torch.testing.assert_close(display, torch.zeros_like(display))


@pytest.mark.parametrize("method", CAM_FAMILY)
def test_cam_family_peaks_on_the_pattern(method):
    model = PatternNet().eval()
    result = saliency(model, pattern_image(22, 8), method, target=1, layers="features.3")
    view = result.view_maps()[0, 0]
    row, col = divmod(int(view.argmax()), view.shape[1])
    assert abs(row - 22) <= 2 and abs(col - 8) <= 2, (method, row, col)
    if method != "scorecam":  # both of its masked inputs score 0 here (the tapered mask dims the square below the
        # detector's threshold), so the constant channel keeps half the softmax weight: a floor, as in pytorch-grad-cam
        assert view[2:10, 20:30].max() < 0.1 * view.max()


def test_layer_none_picks_last_spatial_layer_and_reports_it(tiny_cnn):
    result = saliency(tiny_cnn, torch.randn(1, 3, 16, 16), "gradcam")
    assert result.layer == "features"  # the last module with an (N, C, H>1, W>1) output; pool is 1x1
    assert result.maps.shape == (1, 1, 16, 16)
    assert result.maps.min() >= 0


def test_layer_none_finds_the_layer_once_per_model_and_input_shape(tiny_cnn):
    forwards = []
    searches = LayerSearchCache()
    handle = tiny_cnn.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
    try:
        first = saliency(tiny_cnn, torch.randn(2, 3, 16, 16), "gradcam", layer_search=searches)
        after_first = len(forwards)
        again = saliency(tiny_cnn, torch.randn(2, 3, 16, 16), "gradcam", layer_search=searches)
        after_again = len(forwards) - after_first
        saliency(tiny_cnn, torch.randn(2, 3, 20, 20), "gradcam", layer_search=searches)
        after_new_shape = len(forwards) - after_first - after_again
        saliency(tiny_cnn, torch.randn(2, 3, 20, 20), "gradcam")  # no cache kept: searches again
        without_cache = len(forwards) - after_first - after_again - after_new_shape
    finally:
        handle.remove()
    assert first.layer == again.layer == "features"
    assert after_again == after_first - 1  # the shape pass is not repeated
    assert after_new_shape == after_first  # a new input shape is looked at again
    assert without_cache == after_first and len(searches) == 1


def test_multi_layer_gradcam_matches_single_layer_calls(tiny_cnn):
    x = torch.randn(2, 3, 16, 16)
    layers = ["features.1", "features.3"]
    together = saliency(tiny_cnn, x, "gradcam", target=0, layers=layers)
    assert list(together.layer_maps) == layers and together.layers == layers
    for layer in layers:
        alone = saliency(tiny_cnn, x, "gradcam", target=0, layers=layer)
        torch.testing.assert_close(together.layer_maps[layer], alone.maps)
        narrowed = together.for_layer(layer)
        torch.testing.assert_close(narrowed.maps, alone.maps)
        assert narrowed.layer == layer and list(narrowed.layer_maps) == [layer]
    torch.testing.assert_close(together.maps, together.layer_maps["features.3"])
    with pytest.raises(KeyError, match="features.1, features.3"):
        together.for_layer("features.0")


def test_gradcam_clamps_at_the_layer_resolution_then_upsamples(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    raw = saliency(tiny_cnn, x, "gradcam", target=3, layers="features.2", clamp="none").maps
    after = saliency(tiny_cnn, x, "gradcam", target=3, layers="features.2", clamp="upsampled").maps
    default = saliency(tiny_cnn, x, "gradcam", target=3, layers="features.2").maps
    assert raw.min() < 0
    torch.testing.assert_close(after, raw.clamp(min=0))  # fmapviz 0.1's order, kept as an option
    with torch.no_grad(), fmapviz.capture(tiny_cnn, "features.2", keep_grad=False) as maps:
        tiny_cnn(x)
    low = saliency(tiny_cnn, x, "gradcam", target=3, layers="features.2", clamp="none")
    # the default: ReLU on the 8x8 map, then bilinear upsampling (a different map where the 8x8 one is negative)
    low_res = F.interpolate(raw, size=(8, 8), mode="bilinear", align_corners=False)
    assert maps["features.2"].shape[-2:] == low_res.shape[-2:] and low.maps.shape == default.shape
    assert not torch.allclose(default, after)
    assert default.min() >= 0


def test_class_name_target_equals_class_index(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    categories = ["cat", "dog", "tabby", "fox"]
    by_name = saliency(tiny_cnn, x, "gradient", target="tabby", categories=categories)
    by_index = saliency(tiny_cnn, x, "gradient", target=2)
    torch.testing.assert_close(by_name.maps, by_index.maps)
    assert by_name.target_names == [["tabby"]]
    by_capitals = saliency(tiny_cnn, x, "gradient", target="TABBY", categories=categories)
    torch.testing.assert_close(by_capitals.maps, by_index.maps)
    with pytest.raises(ValueError, match="Unknown target class 'tabbby'. Closest: tabby"):
        saliency(tiny_cnn, x, "gradient", target="tabbby", categories=categories)
    with pytest.raises(ValueError, match="categories="):
        saliency(tiny_cnn, x, "gradient", target="tabby")


def test_top_k_gives_one_map_per_class_in_score_order(tiny_cnn):
    x = torch.randn(2, 3, 16, 16)
    result = saliency(tiny_cnn, x, "gradcam", target="top:3")
    assert result.maps.shape == (2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(result.target, tiny_cnn(x).topk(3).indices)
    second = saliency(tiny_cnn, x[:1], "gradcam", target=int(result.target[0, 1]))
    torch.testing.assert_close(result.maps[:1, 1:2], second.maps)


def test_per_image_and_callable_targets(tiny_cnn):
    x = torch.randn(2, 3, 16, 16)
    per_image = saliency(tiny_cnn, x, "gradient", target=[1, 3])
    assert per_image.target.tolist() == [[1], [3]]
    by_callable = saliency(tiny_cnn, x, "gradient", target=lambda out: out[torch.arange(2), torch.tensor([1, 3])])
    torch.testing.assert_close(per_image.maps, by_callable.maps)
    with pytest.raises(ValueError, match="one score per image"):
        saliency(tiny_cnn, x, "gradient", target=lambda out: out[:1, 0])  # one row for two images
    every_logit = saliency(tiny_cnn, x, "gradient", target=lambda out: out)  # (N, 4): one map per column
    assert every_logit.maps.shape[:2] == (2, 4)


def test_unit_target_is_gradient_of_channel_mean(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    result = saliency(tiny_cnn, x, "gradient", target="features.2[5]")
    inputs = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(tiny_cnn.features[:3](inputs)[:, 5].mean(), inputs)
    torch.testing.assert_close(result.attributions[:, 0], expected)
    assert result.target is None and result.target_label == "features.2[5]"
    as_unit = saliency(tiny_cnn, x, "gradient", target=Unit("features.2", 5))
    torch.testing.assert_close(as_unit.maps, result.maps)
    neuron = saliency(tiny_cnn, x, "gradient", target="features.2[5,3,4]")
    inputs = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(tiny_cnn.features[:3](inputs)[0, 5, 3, 4], inputs)
    torch.testing.assert_close(neuron.attributions[:, 0], expected)
    cam = saliency(tiny_cnn, x, "gradcam", target="features.2[5]")
    assert cam.layers == ["features.2"]  # layers=None stops at the target layer
    with pytest.raises(TypeError, match=r"write 'features.2\[5\]'"):
        saliency(tiny_cnn, x, "gradient", target=("features.2", 5))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_restores_model_after_success(method):
    model = TinyCNN().train()  # train mode and trainable parameters: both must come back
    before, hooks = model_state(model), hook_count(model)
    result = saliency(model, torch.randn(2, 3, 16, 16), method, target="top:2", **fast(method))
    assert isinstance(result, SaliencyResult) and result.maps.shape == (2, 2, 16, 16)
    assert torch.isfinite(result.maps).all() and not result.maps.requires_grad
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
    assert not any("forward" in module.__dict__ for module in model.modules())


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_restores_model_after_error(method):
    model = TinyCNN().train()
    before, hooks = model_state(model), hook_count(model)

    def failing_target(output: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        saliency(model, torch.randn(1, 3, 16, 16), method, target=failing_target, **fast(method))
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
    assert not any("forward" in module.__dict__ for module in model.modules())


def test_guided_backprop_overrides_relu6_and_differs_from_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Conv2d(4, 4, 3), nn.ReLU6(), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.randn(1, 3, 8, 8)
    model(x)
    guided = saliency(model, x, "guided_backprop", target=0).attributions
    plain = saliency(model, x, "gradient", target=0).attributions
    assert not torch.allclose(guided, plain)
    with pytest.raises(ValueError, match="needs nn.ReLU"):
        saliency(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), x, "guided_backprop", target=0)


def test_smoothgrad_is_seeded_and_leaves_global_rng_alone(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    state = torch.get_rng_state()
    first = saliency(tiny_cnn, x, "smoothgrad", target=1, samples=6, seed=3).maps
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(first, saliency(tiny_cnn, x, "smoothgrad", target=1, samples=6, seed=3).maps)
    assert not torch.allclose(first, saliency(tiny_cnn, x, "smoothgrad", target=1, samples=6, seed=4).maps)
    assert not torch.allclose(first, saliency(tiny_cnn, x, "gradient", target=1).maps)
    shap = saliency(tiny_cnn, x, "gradient_shap", target=1, seed=3).maps  # captum draws from the global RNG
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(shap, saliency(tiny_cnn, x, "gradient_shap", target=1, seed=3).maps)


def test_bad_arguments_raise_clear_errors(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="Unknown saliency method 'gradcm'. Closest: gradcam"):
        saliency(tiny_cnn, x, "gradcm")
    with pytest.raises(fmapviz.LayerNotFoundError, match="features.9"):
        saliency(tiny_cnn, x, "gradcam", layers="features.9")
    with pytest.raises(ValueError, match="4-D"):
        saliency(tiny_cnn, x, "gradcam", layers="fc")
    with pytest.raises(ValueError, match="takes no layers"):
        saliency(tiny_cnn, x, "gradient", layers="features.2")
    with pytest.raises(ValueError, match="out of range"):
        saliency(tiny_cnn, x, "gradient", target=7)
    with pytest.raises(ValueError, match="does not depend on layer features.3"):
        saliency(tiny_cnn, x, "gradcam", layers="features.3", target="features.0[1]")
    with pytest.raises(TypeError, match="target"):
        saliency(tiny_cnn, x, "gradient", target=1.5)
    with pytest.raises(ValueError, match="x must be"):
        saliency(tiny_cnn, x[0], "gradient")


def test_show_saliency_draws_one_tile_per_image_and_method(tiny_cnn, tmp_path):
    from fmapviz.views import show_saliency

    x = torch.randn(2, 3, 16, 16)
    results = [saliency(tiny_cnn, x, "integrated_gradients", steps=4), saliency(tiny_cnn, x, "gradcam", target="top:2")]
    for scale in ("per_map", "shared"):
        path = show_saliency(results, torch.rand(2, 3, 16, 16), scale=scale).save(tmp_path / f"{scale}.png")
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="scale"):
        show_saliency(results, torch.rand(2, 3, 16, 16), scale="global")
    with pytest.raises(ValueError, match="image must be"):
        show_saliency(results, torch.rand(3, 3, 16, 16))


def test_show_saliency_of_a_multi_layer_result_draws_one_panel_per_layer(tiny_cnn):
    from matplotlib.text import Text

    from fmapviz.views import show_saliency

    x = torch.randn(1, 3, 16, 16)
    cam = saliency(tiny_cnn, x, "gradcam", layers=["features.1", "features.3"], target=2)
    figure = show_saliency({"Grad-CAM": cam}, torch.rand(3, 16, 16))
    captions = [text.get_text() for text in figure.matplotlib.findobj(Text) if "Grad-CAM" in text.get_text()]
    assert captions == ["Grad-CAM features.1\nclass 2", "Grad-CAM features.3\nclass 2"]
    assert figure.image.shape[1] > 2.5 * show_saliency(cam.for_layer("features.3"), x[0]).image.shape[1] / 2
