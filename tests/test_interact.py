"""fmapviz.interact: the live notebook view, driven in-process through its widgets' values."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TinyCNN, assert_same_state, hook_count, model_state

import fmapviz

pytest.importorskip("ipywidgets")


@pytest.fixture
def view_of():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    loaded = fmapviz.models.LoadedModel(
        model, transform=None, categories=["cat", "dog", "fox", "owl"], name="tiny", weights=None
    )
    image = fmapviz.load_image(x.clamp(0, 1), mean=(0.0,) * 3, std=(1.0,) * 3)
    return loaded, image


def test_driving_the_widgets_updates_each_picture_and_computes_each_result_once(view_of):
    loaded, image = view_of
    before, hooks = model_state(loaded.model), hook_count(loaded.model)
    view = fmapviz.interact(loaded, image, ["features.1", "features.3"], actmax_steps=3, actmax_size=32)
    assert view.layer.value == "features.3" and view.channel.max == 15  # 16 channels
    assert dict(view.computed) == {"maps": 1, "actmax": 1, "saliency": 1}
    assert [label for label, _ in view.target.options][0].endswith(f"({view.target.value})")
    pictures = lambda: tuple(  # noqa: E731
        bytes(w.value) for w in (view.grid, view.channel_view, view.actmax_view, view.saliency_view)
    )
    first = pictures()
    assert all(picture.startswith(b"\x89PNG") for picture in first)

    view.channel.value = 5  # a channel: its map over the photo and its activation-maximization image change
    second = pictures()
    assert second[0] == first[0] and second[1] != first[1] and second[2] != first[2] and second[3] == first[3]
    assert view.computed["actmax"] == 2

    view.method.value = "gradient"  # a method and a class: the saliency map changes
    assert bytes(view.saliency_view.value) != second[3] and view.computed["saliency"] == 2
    view.target.value = view.target.options[1][1]
    assert view.computed["saliency"] == 3

    view.layer.value = "features.1"  # 8 channels: the channel stays, the grid changes
    assert view.channel.max == 7 and view.channel.value == 5 and bytes(view.grid.value) != first[0]
    assert view.computed["maps"] == 2 and view.computed["actmax"] == 3
    assert view.computed["saliency"] == 3  # "gradient" reads no layer: the same map

    view.layer.value = "features.3"  # back: everything from the caches
    view.channel.value = 0
    view.target.value = view.target.options[0][1]
    view.method.value = "gradcam"
    assert dict(view.computed) == {"maps": 2, "actmax": 3, "saliency": 3}
    assert pictures() == first
    assert hook_count(loaded.model) == hooks
    assert_same_state(before, model_state(loaded.model))


def test_the_pictures_are_the_views_own(view_of):
    loaded, image = view_of
    view = fmapviz.interact(loaded, image, "features.3", methods=["gradcam"], actmax_steps=2, actmax_size=32)
    maps = fmapviz.feature_maps(loaded.model, image.tensor, "features.3")
    expected = fmapviz.show_maps(maps, "top:16", image=image.display, layer="features.3")
    assert bytes(view.grid.value) == expected._repr_png_()
    cam = fmapviz.saliency(
        loaded.model,
        image.tensor,
        "gradcam",
        target=view.target.value,
        layers="features.3",
        categories=loaded.categories,
    )
    assert bytes(view.saliency_view.value) == fmapviz.show_saliency(cam, image.display)._repr_png_()
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()


def test_layers_none_offers_every_spatial_layer_and_a_tensor_input_works():
    torch.manual_seed(0)
    view = fmapviz.interact(TinyCNN().eval(), torch.randn(1, 3, 32, 32), actmax_steps=2, actmax_size=32)
    assert view.layer.options == ("features.0", "features.1", "features.2", "features.3", "features")
    assert view.target.options[0][0].startswith("class ")
    with pytest.raises(ValueError, match="Unknown saliency method nope"):
        fmapviz.interact(TinyCNN().eval(), torch.randn(1, 3, 32, 32), methods=["nope"])


def test_a_fixed_size_timm_vit_in_the_same_view_gets_actmax_images_of_its_size_and_its_own_layer_names():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=32, patch_size=8, depth=2, embed_dim=32,
        num_heads=2,
    ).eval()  # fmt: skip
    loaded = fmapviz.models.LoadedModel(
        vit, None, ["cat", "dog", "fox", "owl"], "vit", None, size=(32, 32), fixed_size=True
    )  # a 24 px image would fail timm's input-size check unless resized to 32
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model_state(vit)
    with pytest.warns(UserWarning, match="Layer blocks.1 gets no gradient"):  # only the class token leaves it
        view = fmapviz.interact(loaded, x, ["blocks.0", "blocks.1"], methods=["gradcam"], actmax_steps=2,
                                actmax_size=24)  # fmt: skip
    assert view.layer.options == ("blocks.0", "blocks.1") and view.channel.max == 31  # (1, 1 + 4x4, 32) tokens
    view.channel.value = 3
    view.layer.value = "blocks.0"
    assert dict(view.computed) == {"maps": 2, "actmax": 3, "saliency": 2}
    assert all(bytes(w.value).startswith(b"\x89PNG") for w in (view.grid, view.actmax_view, view.saliency_view))
    assert hook_count(vit) == 0
    assert_same_state(before, model_state(vit))


def test_import_fmapviz_never_imports_ipywidgets_and_a_missing_one_names_the_extra(monkeypatch):
    code = "import sys, fmapviz; fmapviz.interact; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"^fmapviz.interact needs ipywidgets.*pip install 'fmapviz\[notebook\]'"):
        fmapviz.interact(TinyCNN().eval(), torch.randn(1, 3, 32, 32))
