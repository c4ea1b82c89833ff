"""timm and Hugging Face transformers and ConvNeXt without a reshape function: Grad-CAM with layers=None,
explain_channels and capture read their class and register tokens and channels-last maps as (N, C, H, W)."""

from __future__ import annotations

import pytest
import torch
from conftest import ASSETS, assert_same_state, hook_count, model_state, tiny_vit_config
from torchvision import transforms

import fmapviz
from fmapviz.engines.saliency.layer_search import LayerSearchCache, is_image_grid

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


def hf_vit() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_vit_config()
    return transformers.ViTForImageClassification(config).eval()


def _auto_gradcam(model: torch.nn.Module, x: torch.Tensor) -> fmapviz.SaliencyResult:
    before, hooks = model_state(model), hook_count(model)
    result = fmapviz.saliency(model, x, "gradcam", layers=None, layer_search=LayerSearchCache())
    assert result.maps.shape == (1, 1, *x.shape[-2:])
    assert torch.isfinite(result.maps).all() and result.maps.std() > 1e-6 * result.maps.abs().max()
    assert hook_count(model) == hooks
    assert_same_state(before, model_state(model))
    return result


def test_gradcam_on_a_timm_vit_with_register_tokens_skips_per_head_attention_tensors():
    model = timm_model("vit_tiny_patch16_224", reg_tokens=4, img_size=64)
    x = photo(64)
    assert fmapviz.feature_maps(model, x, "blocks.3")["blocks.3"].shape == (1, 192, 4, 4)  # 1 + 4 registers dropped
    result = _auto_gradcam(model, x)
    # not blocks.11.attn.k_norm: a (1, heads, tokens, head_dim) tensor read as a 3-channel image
    assert result.layers == ["blocks.11.attn.qkv"]
    search = LayerSearchCache().search(model, x)
    assert not any(name.endswith(("q_norm", "k_norm")) for name in search.modules)


def test_gradcam_on_a_hugging_face_vit_built_from_a_config():
    result = _auto_gradcam(hf_vit(), photo(64))
    assert result.layers[0].startswith("vit.") and "attention" in result.layers[0]


def test_gradcam_on_timm_convnext_and_swin_channels_last_maps():
    convnext = _auto_gradcam(timm_model("convnext_atto"), photo(64))
    assert convnext.layers[0].startswith(("stages.3", "norm_pre"))
    swin = timm_model("swin_tiny_patch4_window7_224", img_size=112)
    x = photo(112)
    assert fmapviz.feature_maps(swin, x, "layers.0")["layers.0"].shape == (1, 96, 28, 28)  # (N, H, W, C) read as NCHW
    _auto_gradcam(swin, x)


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
