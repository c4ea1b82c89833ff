"""timm and Hugging Face transformers and ConvNeXt without a reshape function: Grad-CAM (layers=None or named),
explain_channels, capture and the explorer read their class and register tokens, channels-last maps and
``ModelOutput``s as (N, C, H, W) maps, under the model's own layer names. Random weights, 64 px photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, assert_same_state, hook_count, model_state, tiny_vit_config
from torchvision import transforms

import fmapviz
from fmapviz.engines.saliency.layer_search import LayerSearchCache, is_image_grid
from fmapviz.explorer import ExploreSettings
from fmapviz.inputs import default_transform

timm = pytest.importorskip("timm")


def photo(size: int) -> torch.Tensor:
    """assets/chelsea.png as a (1, 3, size, size) batch, normalized with 0.5 / 0.5 (timm's ViT default)."""
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    return fmapviz.load_image(ASSETS / "chelsea.png", transform).tensor


def timm_model(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **options).eval()


def hf_model(kind: str) -> torch.nn.Module:
    """A tiny Hugging Face ViT, Swin or ConvNeXt classifier (64 px, 5 classes) built from its config, random weights."""
    transformers = pytest.importorskip("transformers")
    configs = {
        "vit": (transformers.ViTForImageClassification, tiny_vit_config()),
        "swin": (
            transformers.SwinForImageClassification,
            transformers.SwinConfig(
                image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=5
            ),
        ),
        "convnext": (
            transformers.ConvNextForImageClassification,
            transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=64, num_labels=5),
        ),
    }
    architecture, config = configs[kind]
    torch.manual_seed(0)
    return architecture(config).eval()


SMALL_VIT = dict(img_size=64, depth=2, embed_dim=32, num_heads=2)  # 1 class token + 4x4 patches, head_dim 16
SMALL_SWIN = dict(img_size=64, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4)

HUB_MODELS = {  # builder, the layer layers=None picks, a layer named explicitly
    "hf-swin": (lambda: hf_model("swin"), "swin.layernorm", "swin.encoder.layers.1.blocks.0"),
    "hf-vit": (lambda: hf_model("vit"), "vit.layers.1.attention.v_proj", "vit.layers.0"),
    "hf-convnext": (lambda: hf_model("convnext"), "convnext.encoder", "convnext.encoder.stages.0"),
    "timm-vit": (lambda: timm_model("vit_tiny_patch16_224", **SMALL_VIT), "blocks.1.attn.qkv", "blocks.0"),
    "timm-deit": (lambda: timm_model("deit_tiny_distilled_patch16_224", **SMALL_VIT), "blocks.1.attn.qkv", "blocks.0"),
    "timm-swin": (lambda: timm_model("swin_tiny_patch4_window7_224", **SMALL_SWIN), "norm", "layers.0"),
    "timm-convnext": (lambda: timm_model("convnext_atto"), "norm_pre", "stages.2"),
}


def _gradcam(model: torch.nn.Module, x: torch.Tensor, layers: str | None = None) -> fmapviz.SaliencyResult:
    """Grad-CAM of the top class: a non-constant map of the photo's size, the model left as it was."""
    before, hooks = model_state(model), hook_count(model)
    result = fmapviz.saliency(model, x, "gradcam", layers=layers, layer_search=LayerSearchCache())
    assert result.maps.shape == (1, 1, *x.shape[-2:])
    assert torch.isfinite(result.maps).all() and result.maps.std() > 1e-6 * result.maps.abs().max()
    assert hook_count(model) == hooks
    assert_same_state(before, model_state(model))
    return result


def test_gradcam_on_a_timm_vit_with_register_tokens_skips_per_head_attention_tensors():
    model = timm_model("vit_tiny_patch16_224", reg_tokens=4, img_size=64)
    x = photo(64)
    assert fmapviz.feature_maps(model, x, "blocks.3")["blocks.3"].shape == (1, 192, 4, 4)  # 1 + 4 registers dropped
    result = _gradcam(model, x)
    # not blocks.11.attn.k_norm: a (1, heads, tokens, head_dim) tensor read as a 3-channel image
    assert result.layers == ["blocks.11.attn.qkv"]
    search = LayerSearchCache().search(model, x)
    assert not any(name.endswith(("q_norm", "k_norm")) for name in search.modules)


@pytest.mark.parametrize("name", HUB_MODELS)
def test_gradcam_with_layers_none_and_a_named_layer_on_hub_transformers_and_convnexts(name):
    build, picked, named = HUB_MODELS[name]
    model, x = build(), photo(64)
    auto = _gradcam(model, x)
    assert auto.layers == [picked] and picked in dict(model.named_modules())  # the model's own name
    assert _gradcam(model, x, named).layers == [named]


def test_the_default_layer_is_never_a_map_the_model_does_not_go_on_with():
    """HF's SwinModel returns last_hidden_state beside the pooler_output its classifier reads: "swin" reaches no
    logit."""
    model, x = hf_model("swin"), photo(64)
    modules = LayerSearchCache().search(model, x).modules
    assert modules[-1] == "swin.layernorm"
    assert not {"swin", "swin.pooler", "swin.encoder.layers.1"} & set(modules)  # beside other tensors; (N, C, 1)
    with torch.no_grad(), fmapviz.capture(model, ["swin.layernorm", "swin", "swin.encoder.layers.1.blocks.0"]) as maps:
        model(x)
    assert maps.partial == {"swin"}  # the block returns (hidden, None): one tensor
    assert torch.equal(maps["swin"], maps["swin.layernorm"])
    with pytest.raises(ValueError, match="does not depend on layer swin .*another of its outputs"):
        fmapviz.saliency(model, x, "gradcam", layers="swin")
    with pytest.raises(ValueError, match="do not depend on layer 'swin' .*pick a layer inside it"):
        fmapviz.explain_channels(model, x, "swin")
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    "name, layer, shape",
    [
        ("timm-swin", "layers.0", (1, 24, 16, 16)),  # (N, H, W, C) read as NCHW
        ("timm-deit", "blocks.0", (1, 32, 4, 4)),  # class and distillation tokens dropped
        ("hf-vit", "vit.layers.0", (1, 32, 4, 4)),
        ("hf-swin", "swin.encoder.layers.0.blocks.0", (1, 16, 16, 16)),  # tokens of a (hidden, attention) tuple
    ],
)
def test_capture_and_explain_channels_read_hub_transformer_layers_as_maps(name, layer, shape):
    model, x = HUB_MODELS[name][0](), photo(64)
    before = model_state(model)
    captured = fmapviz.feature_maps(model, x, layer)[layer]
    assert captured.shape == shape
    explained = fmapviz.explain_channels(model, x, layer, top=3)[layer]
    assert explained.maps.shape == shape and explained.attributions.shape == shape[:2]
    torch.testing.assert_close(explained.activations, captured.mean((2, 3)))  # the same maps, with the gradient
    torch.testing.assert_close(explained.attributions, explained.maps.sum((2, 3)))
    assert explained.attributions.abs().sum() > 0
    assert torch.equal(explained.channels[0], explained.attributions[0].topk(3).indices)
    assert hook_count(model) == 0
    assert_same_state(before, model_state(model))


def _hf_vit_folder(folder: Path) -> fmapviz.LoadedModel:
    """The tiny HF ViT saved with save_pretrained beside a 64 px processor, loaded back by ``hf:FOLDER``."""
    transformers = pytest.importorskip("transformers")
    hf_model("vit").save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return fmapviz.load_model(f"hf:{folder}", weights="DEFAULT")


@pytest.mark.parametrize("name, layer", [("timm-vit", "blocks.1"), ("hf-vit", "vit.layers.1")])
def test_explore_builds_a_site_of_a_fixed_size_vit_s_last_block(name, layer, tmp_path):
    """Its actmax images are resized to the model's 64 px; its Grad-CAM comes from the nearest layer the class
    reaches."""
    if name == "hf-vit":
        loaded = _hf_vit_folder(tmp_path / "model")
    else:
        model, transform = HUB_MODELS[name][0](), default_transform(64, resize=64)
        loaded = fmapviz.LoadedModel(model, transform, list("abcde"), name, None, size=(64, 64), fixed_size=True)
    assert loaded.fixed_size
    settings = ExploreSettings(
        topk=2, crops=2, least=1, explain_top=2, actmax_top=2, actmax_copies=1, actmax_steps=2, actmax_size=32
    )
    photos = [ASSETS / "chelsea.png", ASSETS / "coffee.png", ASSETS / "astronaut.png"]
    with pytest.warns(UserWarning, match=f"Layer {layer} gets no gradient"):
        index = fmapviz.explore(loaded, photos, layer, tmp_path / "site", settings=settings, progress=False)
    site = index.parent
    assert (site / "layers" / f"{layer}.html").is_file() and len(list((site / "channels" / layer).glob("*.html"))) == 32
    assert len(list(site.glob(f"data/actmax-*/{layer}/*.webp"))) == 2
    records = [json.loads(path.read_text()) for path in site.glob("data/images-*/*/record.json")]
    assert len(records) == 3
    used = {record["layers"][layer]["gradcam_layer"] for record in records}
    assert len(used) == 1 and next(iter(used)).startswith(f"{layer}.")  # inside the block, the model's own name
    page = next((site / "images").glob("chelsea-*.html")).read_text()
    assert f"Grad-CAM at {next(iter(used))} (nearest to {layer} that the class reaches)" in page
    assert hook_count(loaded.model) == 0


def test_explain_channels_on_a_timm_vit_block_ranks_its_token_channels():
    model = timm_model("vit_tiny_patch16_224", reg_tokens=4, img_size=64)
    explained = fmapviz.explain_channels(model, photo(64), "blocks.5", top=3)
    layer = explained["blocks.5"]
    assert layer.maps.shape == (1, 192, 4, 4) and layer.attributions.shape == (1, 192)
    assert layer.channels.shape == (1, 3)
    assert torch.equal(layer.channels[0], layer.attributions[0].topk(3).indices)
    assert layer.values[0, 0] > layer.values[0, 2]


def test_a_map_is_an_image_grid_only_when_its_ratio_and_size_fit_the_input():
    assert is_image_grid((1, 512, 7, 7), (224, 224)) and is_image_grid((1, 64, 8, 6), (225, 161))
    assert is_image_grid((1, 21, 64, 64), (64, 64))  # a segmentation head at the input's resolution
    assert not is_image_grid((1, 3, 197, 64), (224, 224))  # ViT-B/16 per-head q: (N, heads, tokens, head_dim)
    assert not is_image_grid((1, 3, 21, 64), (64, 64)) and not is_image_grid((1, 8, 1, 1), (64, 64))
