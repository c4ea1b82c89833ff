"""load_model: torchvision names, factories, checkpoints, TorchScript, and clear errors."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import TinyCNN, real_weights
from torch import nn

import fmapviz
from fmapviz.errors import ModelLoadError

FACTORY_FILE = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
"""


def test_torchvision_name_without_weights_gives_eval_model_and_default_transform():
    loaded = fmapviz.load_model("resnet18", weights=None)
    assert isinstance(loaded.model, nn.Module) and not loaded.model.training
    assert loaded.categories is None and loaded.weights is None
    assert loaded.transform(torch.rand(3, 300, 260)).shape == (3, 224, 224)


def test_unknown_model_and_weights_names_are_clear_errors():
    with pytest.raises(ModelLoadError, match=r"Unknown model 'resnet19'.*resnet18"):
        fmapviz.load_model("resnet19")
    with pytest.raises(ModelLoadError, match=r"Unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        fmapviz.load_model("resnet18", weights="IMAGENET9K")


def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    # offline here: torchvision cannot download, and the cache is an empty folder
    with pytest.raises(ModelLoadError, match=r"resnet18-f37072fd\.pth.*hub/checkpoints"):
        fmapviz.load_model("resnet18", weights="IMAGENET1K_V1")


def test_user_factory_file_with_state_dict_checkpoint(tmp_path):
    source = tmp_path / "mynet.py"
    source.write_text(FACTORY_FILE)
    reference = fmapviz.load_model(f"{source}:build").model
    checkpoint = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, checkpoint)
    loaded = fmapviz.load_model(f"{source}:build", checkpoint=checkpoint)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded.model(x), reference(x))  # DataParallel 'module.' prefixes were stripped


def test_package_module_factory(tmp_path, monkeypatch):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "nets.py").write_text(FACTORY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = fmapviz.load_model("userpkg.nets:build")
    assert isinstance(loaded.model[0], nn.Conv2d)
    sys.modules.pop("userpkg.nets", None)
    with pytest.raises(ModelLoadError, match="has no callable 'buld'.*build"):
        fmapviz.load_model("userpkg.nets:buld")


def test_torchscript_archive(tmp_path):
    model = TinyCNN().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.script(model).save(str(path))
    loaded = fmapviz.load_model(str(path))
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(loaded.model(x), model(x))


def test_module_passed_in_is_returned_in_eval_mode():
    model = TinyCNN().train()
    loaded = fmapviz.load_model(model)
    assert loaded.model is model and not model.training


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"does not match the model: .*missing.*unexpected"):
        fmapviz.load_model(TinyCNN(), checkpoint=path)


def test_pickled_checkpoint_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "full_model.pt"
    model = TinyCNN()
    torch.save(model, path)  # a whole pickled module, not a state dict
    with pytest.raises(ModelLoadError, match="trust_checkpoint=True"):
        fmapviz.load_model(TinyCNN(), checkpoint=path)
    loaded = fmapviz.load_model(TinyCNN(), checkpoint=path, trust_checkpoint=True)
    assert torch.equal(loaded.model.fc.weight, model.fc.weight)


@real_weights
@pytest.mark.real_weights
def test_mobilenet_v2_real_weights_classify_the_cat(mobilenet):
    assert mobilenet.weights == "IMAGENET1K_V1" and len(mobilenet.categories) == 1000
    image = fmapviz.load_image("assets/chelsea.png", mobilenet.transform)
    with torch.no_grad():
        probabilities = mobilenet.model(image.tensor).softmax(1)
    assert mobilenet.categories[probabilities.argmax()] == "Egyptian cat"
    assert probabilities.max() > 0.6
