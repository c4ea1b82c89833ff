"""Saliency follows the papers and the peers (issue 17) and checks what it is given (issue 13)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import ASSETS, real_weights, small_vit

import fmapviz
from fmapviz.engines.saliency import METHODS, VIEWS, saliency


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalization of (N, H, W) maps, as the peers draw them."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (maps - low) / (high - low).clamp(min=1e-12)


def peer_maps(model, x, layer: str, category: int) -> dict[str, torch.Tensor]:
    """Grad-CAM of ``layer`` for ``category`` from captum, torchcam and pytorch-grad-cam, (N, H, W), normalized."""
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    module = model.get_submodule(layer)
    size = x.shape[-2:]
    low = LayerGradCam(model, module).attribute(x, target=category, relu_attributions=True)
    peers = {"captum": LayerAttribution.interpolate(low, size, "bilinear")[:, 0].detach()}
    with TorchcamGradCAM(model, layer) as extractor:
        cams = extractor(category, model(x))[0]
    peers["torchcam"] = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    with GradCAM(model=model, target_layers=[module]) as cam:
        peers["pytorch-grad-cam"] = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(category)] * len(x)))
    return {name: normalized(value) for name, value in peers.items()}


def assert_matches_peers(model, x, layer: str, category: int) -> None:
    ours = normalized(saliency(model, x, "gradcam", target=category, layers=layer).maps[:, 0])
    for name, theirs in peer_maps(model, x, layer, category).items():
        torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_gradcam_equals_captum_torchcam_and_pytorch_grad_cam_on_mid_and_last_layers(resnet18, layer):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ranked = resnet18(x).argsort(1, descending=True)[0]
    for category in (int(ranked[0]), int(ranked[500])):  # the top class and one far from it
        assert_matches_peers(resnet18, x, layer, category)


@real_weights
def test_gradcam_equals_the_peers_on_real_mobilenet(mobilenet):
    x = fmapviz.load_image(ASSETS / "chelsea.png", mobilenet.transform).tensor
    with torch.no_grad():
        ranked = mobilenet.model(x).argsort(1, descending=True)[0]
    for layer in ("features.7", "features.18"):
        for category in (int(ranked[0]), int(ranked[5])):
            assert_matches_peers(mobilenet.model, x, layer, category)


def test_reused_module_named_without_call_is_read_at_its_last_call_like_captum(resnet18):
    from captum.attr import LayerGradCam

    x = torch.randn(1, 3, 64, 64)
    plain = saliency(resnet18, x, "gradcam", target=3, layers="layer4.1.relu", clamp="none")
    second = saliency(resnet18, x, "gradcam", target=3, layers="layer4.1.relu#2", clamp="none")
    first = saliency(resnet18, x, "gradcam", target=3, layers="layer4.1.relu#1", clamp="none")
    assert plain.layers == second.layers == ["layer4.1.relu#2"] and first.layers == ["layer4.1.relu"]
    torch.testing.assert_close(plain.maps, second.maps)
    assert not torch.allclose(first.maps, second.maps)
    captum = LayerGradCam(resnet18, resnet18.layer4[1].relu).attribute(x, target=3)
    upsampled = F.interpolate(captum, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(plain.maps, upsampled, atol=1e-5, rtol=1e-4)


def test_unit_targets_on_a_reused_module_read_the_named_call(resnet18):
    x = torch.randn(1, 3, 64, 64)
    block_output = saliency(resnet18, x, "gradient", target="layer1.0.relu[3]")
    inputs = x.clone().requires_grad_(True)
    stem = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(inputs))))
    (expected,) = torch.autograd.grad(resnet18.layer1[0](stem)[:, 3].mean(), inputs)
    torch.testing.assert_close(block_output.attributions[:, 0], expected)
    named = saliency(resnet18, x, "gradient", target="layer1.0.relu#2[3]")
    torch.testing.assert_close(named.maps, block_output.maps)
    mid_block = saliency(resnet18, x, "gradient", target="layer1.0.relu#1[3]")
    assert not torch.allclose(mid_block.maps, block_output.maps)


def test_smoothgrad_map_of_an_image_does_not_depend_on_its_neighbours(tiny_cnn):
    dark = 0.05 * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    beside_bright = torch.cat([dark, 5 * torch.randn(1, 3, 16, 16)])
    beside_flat = torch.cat([dark, torch.zeros(1, 3, 16, 16)])
    first = saliency(tiny_cnn, beside_bright, "smoothgrad", target=1, samples=6, seed=2).maps[0]
    second = saliency(tiny_cnn, beside_flat, "smoothgrad", target=1, samples=6, seed=2).maps[0]
    alone = saliency(tiny_cnn, dark, "smoothgrad", target=1, samples=6, seed=2).maps[0]
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, alone)
    # the noise scale is the image's own range: 0.15 * (max - min) of the dark image
    chunked = saliency(tiny_cnn, dark, "smoothgrad", target=1, samples=6, seed=2, batch_size=4).maps[0]
    torch.testing.assert_close(chunked, alone)


def test_views_are_named_simonyan_max_and_captum_sum_of_magnitudes(tiny_cnn):
    from captum.attr import Saliency

    x = torch.randn(2, 3, 16, 16)
    result = saliency(tiny_cnn, x, "gradient", target=2)
    assert result.view == "max_abs"  # Simonyan et al. (2014): max over colour channels of |g|
    gradients = result.attributions[:, 0]
    torch.testing.assert_close(result.view_maps()[:, 0], gradients.abs().amax(1))
    captum = Saliency(tiny_cnn).attribute(x, target=2)  # abs=True: |g| per channel
    torch.testing.assert_close(result.view_maps("sum_abs")[:, 0], captum.sum(1))
    torch.testing.assert_close(result.view_maps("abs")[:, 0], gradients.sum(1).abs())
    assert set(VIEWS) == {"signed", "abs", "positive", "max_abs", "sum_abs"}
    with pytest.raises(ValueError, match="Unknown view 'maximum'. Use one of: signed, abs"):
        result.view_maps("maximum")


def test_unknown_options_raise_with_what_the_method_takes(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(
        ValueError, match=r"smoothgrad has no option 'sample'. Did you mean samples\?.*noise=0.15, samples=25, seed=0"
    ):
        saliency(tiny_cnn, x, "smoothgrad", sample=2, stepz=3)
    for method, captum_name, ours in [
        ("smoothgrad", "nt_samples", "samples="),
        ("smoothgrad", "stdevs", "noise="),
        ("integrated_gradients", "n_steps", "steps="),
        ("gradcam", "layer", "layers="),
    ]:
        with pytest.raises(ValueError, match=f"{method} has no option '{captum_name}' .*use {ours}"):
            saliency(tiny_cnn, x, method, **{captum_name: 1})
    with pytest.raises(TypeError, match="multiple values for argument 'method'"):  # captum's method= is ours
        saliency(tiny_cnn, x, "integrated_gradients", method="riemann_trapezoid")
    with pytest.raises(ValueError, match="lrp has no option 'stepz'.* lrp takes: smooth=None, smooth_samples=25"):
        saliency(tiny_cnn, x, "lrp", stepz=1)
    with pytest.raises(ValueError, match="integration='simpson' is not one of 'gausslegendre'"):
        saliency(tiny_cnn, x, "integrated_gradients", integration="simpson")


def test_integrated_gradients_integration_rule_is_an_option(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    gauss = saliency(tiny_cnn, x, "integrated_gradients", target=1, steps=4)
    trapezoid = saliency(tiny_cnn, x, "integrated_gradients", target=1, steps=4, integration="riemann_trapezoid")
    assert gauss.settings["integration"] == "gausslegendre"
    assert trapezoid.settings["integration"] == "riemann_trapezoid"
    assert not torch.allclose(gauss.maps, trapezoid.maps)


def test_registry_entries_are_the_whole_truth():
    for name, entry in METHODS.items():
        assert entry.description and entry.view in VIEWS and entry.space in ("input", "layer"), name
        assert entry.seeded == ("seed" in entry.options)
    random = {"smoothgrad", "integrated_gradients", "smoothgrad_campp", "kernel_shap", "gradient_shap"}
    smoothable = {name for name, entry in METHODS.items() if "smooth_samples" in entry.options}  # smooth= draws noise
    assert {name for name, entry in METHODS.items() if entry.seeded} == random | smoothable
    assert {name for name, entry in METHODS.items() if entry.takes_layer} == {
        "gradcam",
        "gradcam++",
        "layercam",
        "guided_gradcam",
        "xgradcam",
        "hirescam",
        "eigencam",
        "eigengradcam",
        "scorecam",
        "ablationcam",
        "smoothgrad_campp",
    }


def test_gradcam_on_a_layer_without_gradient_warns_and_uses_the_nearest_that_has_one():
    vit = small_vit(num_layers=3)
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(
        UserWarning, match="encoder.layers.encoder_layer_2 gets no gradient .*using encoder.layers.encoder_layer_2.ln_1"
    ):
        result = saliency(vit, x, "gradcam", target=1, layers="encoder.layers.encoder_layer_2")
    assert result.layers == ["encoder.layers.encoder_layer_2.ln_1"]
    assert result.maps.std() > 0
    nearest = saliency(vit, x, "gradcam", target=1, layers="encoder.layers.encoder_layer_2.ln_1")
    torch.testing.assert_close(result.maps, nearest.maps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(vit, x, "gradcam", target=1, layers="encoder.layers.encoder_layer_1")


def test_the_reused_module_rule_is_the_same_in_actmax_and_explain(resnet18):
    from fmapviz.engines.actmax.objectives import channel
    from fmapviz.engines.explain import explain_channels

    x = torch.randn(1, 3, 64, 64)
    maps = fmapviz.feature_maps(resnet18, x, "layer1.0.relu")
    torch.testing.assert_close(channel("layer1.0.relu", 3).score(maps), maps["layer1.0.relu#2"][:, 3].mean((1, 2)))
    torch.testing.assert_close(channel("layer1.0.relu#2", 3).score(maps), channel("layer1.0.relu", 3).score(maps))
    plain = explain_channels(resnet18, x, "layer1.0.relu", 3)["layer1.0.relu"]
    second = explain_channels(resnet18, x, "layer1.0.relu#2", 3)["layer1.0.relu#2"]
    torch.testing.assert_close(plain.attributions, second.attributions)


def test_cli_saliency_takes_methods_from_the_registry_and_unit_targets(tmp_path, capsys):
    from PIL import Image
    from test_cli import TINY_MODEL

    from fmapviz.cli import main

    (tmp_path / "tiny_net.py").write_text(TINY_MODEL)
    Image.open(ASSETS / "chelsea.png").resize((96, 64)).save(tmp_path / "cat.png")
    out = tmp_path / "sal"
    common = [f"{tmp_path / 'tiny_net.py'}:build", str(tmp_path / "cat.png"), "--size", "64", "--quiet", "-o", str(out)]
    assert main(["saliency", *common, "--method", "gradcm"]) == 2
    assert "unknown saliency method 'gradcm'; closest: gradcam" in capsys.readouterr().err
    # --layers reach only the methods that take them; a unit target names channel 3 of layer 2
    assert main(["saliency", *common, "--method", "gradcam", "gradient", "--layers", "2", "--target", "2[3]"]) == 0
    assert (out / "cat_saliency.png").is_file()
