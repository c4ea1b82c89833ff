"""timm: and hf: models by name, offline: the library's own transform and class names, Grad-CAM, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ASSETS, ROOT, hook_count, tiny_vit_config
from PIL import Image

import fmapviz
from fmapviz.cli import main
from fmapviz.errors import ModelLoadError
from fmapviz.hubs import processor_transform

PHOTO = ASSETS / "chelsea.png"  # 451x300: odd margins, so crops must round as the library does
LABELS = ["tabby", "beagle", "red fox", "barn owl", "eel"]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


@pytest.fixture(scope="module")
def timm_model():
    """timm models by name with random weights, each built once for the module (timm's init is slow on CPU)."""
    pytest.importorskip("timm")
    built = {}

    def build(name: str) -> fmapviz.LoadedModel:
        if name not in built:
            torch.manual_seed(0)
            built[name] = fmapviz.load_model(f"timm:{name}", weights=None)
        return built[name]

    return build


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny Hugging Face ViT (64 px, 16 px patches: a class token + 4x4) and its processor, saved as from the hub."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_vit_config(
        id2label=dict(enumerate(LABELS)), label2id={label: index for index, label in enumerate(LABELS)}
    )
    folder = tmp_path_factory.mktemp("hf_vit")
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = transformers.ViTImageProcessor(
        size={"height": 64, "width": 64}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4]
    )
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224", "convnext_atto"])
def test_timm_model_by_name_gets_timm_s_transform_class_names_and_random_weights_offline(name, photo, timm_model):
    timm = pytest.importorskip("timm")
    loaded = timm_model(name)
    expected = timm.data.create_transform(**timm.data.resolve_data_config({}, model=loaded.model))
    torch.testing.assert_close(loaded.transform(photo), expected(photo), atol=1e-5, rtol=0)
    info = timm.data.ImageNetInfo(timm.data.infer_imagenet_subset(loaded.model))
    assert loaded.categories == [label.split(", ")[0] for label in info.label_descriptions()]
    assert loaded.categories[954] == "banana" and loaded.weights is None and not loaded.model.training
    config = loaded.model.pretrained_cfg
    assert loaded.mean == tuple(config["mean"]) and loaded.std == tuple(config["std"])
    assert loaded.size == config["input_size"][1:] and loaded.fixed_size == config["fixed_input_size"]
    image = fmapviz.load_image(photo, loaded.transform)
    with torch.no_grad():
        assert loaded.model(image.tensor).shape == (1, 1000)


def test_timm_vit_uses_its_own_normalization_and_its_blocks_are_maps_for_gradcam(timm_model, photo):
    timm_vit = timm_model("vit_tiny_patch16_224")
    assert timm_vit.mean == timm_vit.std == (0.5, 0.5, 0.5)  # not ImageNet's: the library's data config
    image = fmapviz.load_image(photo, timm_vit.transform)
    maps = fmapviz.feature_maps(timm_vit.model, image.tensor, ["patch_embed", "blocks.3"])
    assert maps["blocks.3"].shape == maps["patch_embed"].shape == (1, 192, 14, 14)  # class token dropped
    hooks = hook_count(timm_vit.model)
    result = fmapviz.saliency(timm_vit.model, image.tensor, "gradcam", layers="blocks.10")
    assert result.maps.shape == (1, 1, 224, 224) and result.layers == ["blocks.10"]
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    assert hook_count(timm_vit.model) == hooks


def test_hf_folder_gets_the_processor_s_transform_id2label_and_gradcam_on_a_layer(hf_folder, photo):
    transformers = pytest.importorskip("transformers")
    loaded = fmapviz.load_model(f"hf:{hf_folder}")
    processor = transformers.AutoImageProcessor.from_pretrained(hf_folder)
    expected = processor(images=photo, return_tensors="pt").pixel_values[0]
    torch.testing.assert_close(loaded.transform(photo), expected, atol=1e-5, rtol=0)
    assert loaded.categories == LABELS and loaded.weights == str(hf_folder)
    assert loaded.mean == (0.5, 0.4, 0.3) and loaded.std == (0.2, 0.3, 0.4)
    assert loaded.size == (64, 64) and loaded.fixed_size  # a ViT runs only on its image_size
    image = fmapviz.load_image(photo, loaded.transform)
    with torch.no_grad():
        assert fmapviz.outputs.output_tensor(loaded.model(image.tensor)).shape == (1, len(LABELS))
    assert fmapviz.feature_maps(loaded.model, image.tensor, "vit.layers.0")["vit.layers.0"].shape == (1, 32, 4, 4)
    result = fmapviz.saliency(
        loaded.model, image.tensor, "gradcam", layers="vit.layers.0", target="red fox", categories=loaded.categories
    )
    assert result.maps.shape == (1, 1, 64, 64) and result.target.flatten().tolist() == [2]
    assert torch.isfinite(result.maps).all() and result.maps.std() > 0
    random = fmapviz.load_model(f"hf:{hf_folder}", weights=None)
    assert random.categories == LABELS and random.describe_weights() == "random weights"
    assert not torch.equal(random.model.classifier.weight, loaded.model.classifier.weight)


def test_processor_transforms_give_the_processor_s_tensors(photo):
    transformers = pytest.importorskip("transformers")
    processors = [
        transformers.ConvNextImageProcessor(size={"shortest_edge": 57}),  # resize by crop_pct, then crop 57
        transformers.ConvNextImageProcessor(size={"shortest_edge": 384}),  # warped, no crop
        transformers.DeiTImageProcessor(size={"height": 71, "width": 71}, crop_size={"height": 61, "width": 60}),
        transformers.CLIPImageProcessor(size={"shortest_edge": 67}, crop_size={"height": 64, "width": 64}),
        transformers.LevitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}),
    ]
    for processor in processors:
        transform = processor_transform(processor)
        expected = processor(images=photo, return_tensors="pt").pixel_values[0]
        # resize and crop match exactly; the fused rescale and normalize may round in the last float bit
        torch.testing.assert_close(transform(photo), expected, atol=1e-5, rtol=0)
        assert transform.size == tuple(expected.shape[-2:]), type(processor).__name__
    assert type(processor_transform(processors[-1]).steps).__name__ == "_ProcessorCall"  # LeViT's own resize


def test_weights_not_cached_offline_fail_at_once_in_one_line_naming_the_cache_and_files(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as timm_error:
        fmapviz.load_model("timm:resnet18.a1_in1k")
    with pytest.raises(ModelLoadError) as hf_error:
        fmapviz.load_model("hf:nobody/no-such-model")
    assert time.perf_counter() - start < 20  # no download retries
    for error, looked_for in ((timm_error, "timm/resnet18.a1_in1k (model.safetensors"), (hf_error, "nobody/no-such")):
        message = str(error.value)
        assert "\n" not in message and len(message.replace(str(tmp_path), "")) < 250, message
        assert looked_for in message and str(tmp_path / "hub") in message and "HF_HUB_CACHE/HF_HOME" in message


def test_cli_takes_hub_names_and_says_what_is_missing_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    assert main(["layers", "timm:resnet18"]) == 0  # layers needs no weights
    assert "layer4.1.conv2" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["layers", "timm:resnet18.a1_in1k", "--weights", "DEFAULT"]) == 2  # weights to fetch: exit 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: timm:resnet18.a1_in1k: timm/resnet18")


def test_unknown_names_tags_and_weights_are_clear_errors():
    pytest.importorskip("timm")
    with pytest.raises(ModelLoadError, match=r"Unknown timm model 'resnt18'. Closest: resnet18"):
        fmapviz.load_model("timm:resnt18")
    with pytest.raises(ModelLoadError, match=r"Invalid pretrained tag \(nope\).*resnet18\.a1_in1k"):
        fmapviz.load_model("timm:resnet18.nope")
    with pytest.raises(ModelLoadError, match=r"Unknown weights 'IMAGENET1K_V1'.*timm:NAME\.TAG"):
        fmapviz.load_model("timm:resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ModelLoadError, match="folder /no/such/folder does not exist"):
        fmapviz.load_model("hf:/no/such/folder")


def test_a_missing_extra_names_the_pip_install_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelLoadError, match=r"^timm: models need timm.*pip install 'fmapviz\[timm\]'\.$"):
        fmapviz.load_model("timm:resnet18", weights=None)
    with pytest.raises(ModelLoadError, match=r"^hf: models need transformers.*pip install 'fmapviz\[hf\]'\.$"):
        fmapviz.load_model("hf:microsoft/resnet-50")


def test_import_fmapviz_and_torchvision_models_never_import_timm_or_transformers():
    probe = (
        "import sys, fmapviz; fmapviz.load_model('mobilenet_v2', weights=None); "
        "print('timm' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["False", "False"]
