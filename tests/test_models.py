"""load_model: torchvision names, factories, checkpoints, TorchScript, and clear errors."""

from __future__ import annotations

import hashlib
import importlib
import sys

import numpy as np
import pytest
import torch
import user_models
from conftest import ROOT, TinyCNN, real_weights
from PIL import Image
from torch import nn
from user_models import FIXED_MEAN, FIXED_STD, MNIST_MEAN, MNIST_STD

import fmapviz
from fmapviz.errors import ModelLoadError
from fmapviz.outputs import output_tensor

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


def test_missing_default_weights_name_the_cached_ones_and_how_to_pass_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").write_bytes(b"")  # IMAGENET1K_V1's file name
    with pytest.raises(ModelLoadError, match="IMAGENET1K_V2 are not cached.*IMAGENET1K_V1 is cached: pass --weights"):
        fmapviz.load_model("mobilenet_v2")  # DEFAULT is IMAGENET1K_V2


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


def test_torchscript_and_export_programs_are_refused_in_one_line_naming_what_to_pass(tmp_path):
    model = TinyCNN().eval()
    scripted = tmp_path / "tiny.pt"
    torch.jit.trace(model, torch.randn(1, 3, 8, 8)).save(str(scripted))
    exported = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), str(exported))
    for spec, kind in ((str(scripted), "TorchScript archive"), (str(exported), r"torch\.export program")):
        with pytest.raises(ModelLoadError, match=f"{kind}.*Python model.*state_dict") as caught:
            fmapviz.load_model(spec)
        assert "\n" not in str(caught.value)
    with pytest.raises(ModelLoadError, match="TorchScript module"):
        fmapviz.load_model(torch.jit.load(str(scripted)))
    with pytest.raises(TypeError, match="TorchScript modules run no hooks"):
        fmapviz.capture(torch.jit.load(str(scripted)), "features")


def test_grayscale_model_gets_one_channel_input_at_the_size_it_needs():
    loaded = fmapviz.load_model(user_models.mnist(), mean=MNIST_MEAN, std=MNIST_STD)
    assert loaded.channels == 1 and loaded.size == (28, 28) and loaded.fixed_size
    photo = Image.fromarray(np.full((40, 60, 3), 255, np.uint8))
    tensor = loaded.transform(photo)
    assert tensor.shape == (1, 28, 28)
    assert torch.allclose(tensor, torch.full_like(tensor, (1 - 0.1307) / 0.3081), atol=1e-3)
    image = fmapviz.load_image(photo, loaded.transform)
    assert image.tensor.shape == (1, 1, 28, 28) and image.display.shape == (1, 3, 28, 28)
    assert torch.allclose(image.display, torch.ones_like(image.display), atol=1e-3)
    assert loaded.model(image.tensor).shape == (1, 10)


def test_grayscale_model_without_normalization_says_to_pass_one_mean_and_std():
    with pytest.raises(ModelLoadError, match="takes 1-channel input: pass --mean and --std with one value each"):
        fmapviz.load_model(user_models.mnist())
    with pytest.raises(ValueError, match="one value each .* or three"):
        fmapviz.load_model(user_models.mnist(), mean=(0.1, 0.2), std=(0.3, 0.3))


def test_fixed_size_model_is_found_by_trying_the_forward_and_a_wrong_size_says_which(tmp_path):
    loaded = fmapviz.load_model(user_models.fixed64(), mean=FIXED_MEAN, std=FIXED_STD)
    assert loaded.size == (64, 64) and loaded.fixed_size and loaded.mean == FIXED_MEAN
    assert loaded.transform(torch.rand(3, 90, 120)).shape == (3, 64, 64)
    with pytest.raises(ModelLoadError, match=r"does not run on a \(1, 3, 100, 100\) input; this model needs --size 64"):
        fmapviz.load_model(user_models.fixed64(), size=100)
    flexible = fmapviz.load_model(TinyCNN(), size=(48, 40))
    assert flexible.size == (48, 40) and not flexible.fixed_size
    assert fmapviz.load_model(TinyCNN()).size is None  # runs on 224: the usual preprocessing


def test_dict_output_prefers_logits_and_several_tensors_without_a_rule_raise():
    model = user_models.dict_out().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["embedding", "logits"]
    assert output_tensor(out) is out["logits"]
    with pytest.raises(ValueError, match="several tensors \\(embedding, scores\\).*--output-key scores"):
        output_tensor(user_models.two_heads()(x))
    result = fmapviz.saliency(model, x, "gradient")
    assert result.target.flatten().tolist() == [int(out["logits"].argmax())]


def test_output_key_chooses_the_tensor_and_leaves_the_model_and_layer_names_alone():
    model = user_models.two_heads().eval()
    loaded = fmapviz.load_model(model, output="scores")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x)["scores"])
    assert isinstance(model(x), dict)  # the user's model still returns its dict
    assert [name for name, _ in loaded.model.named_modules()] == [name for name, _ in model.named_modules()]
    assert loaded.model.fc.weight is model.fc.weight
    with pytest.raises(ValueError, match="has no key 'logit'; it has embedding, scores"):
        fmapviz.load_model(model, output="logit")


def test_capture_and_feature_maps_run_a_train_mode_model_in_eval_and_leave_its_buffers():
    model = user_models.batchnorm_dropout()
    assert model.training
    buffers = [buffer.clone() for buffer in model.buffers()]
    x = torch.randn(2, 3, 8, 8)
    first = fmapviz.feature_maps(model, x, "features.3")["features.3"]
    again = fmapviz.feature_maps(model, x, "features.3")["features.3"]
    assert torch.equal(first, again)  # no dropout, no batch statistics
    with fmapviz.capture(model, "fc") as maps:
        model(x)
    with fmapviz.capture(model, "fc", train=True) as trained:
        model(x)
    assert not torch.equal(maps["fc"], trained["fc"])
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert all(module.training for module in model.modules())


def test_report_on_a_train_mode_module_restores_its_mode_after_an_exception(tmp_path):
    model = user_models.batchnorm_dropout()
    with pytest.raises(fmapviz.errors.ImageLoadError):
        fmapviz.report(model, tmp_path / "missing.png", tmp_path / "out")
    assert all(module.training for module in model.modules())


def test_pickled_model_loads_with_the_factory_folder_on_sys_path_and_is_recorded(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(FACTORY_FILE)
    checkpoint = tmp_path / "full.pt"
    monkeypatch.syspath_prepend(str(tmp_path))  # as a training script that imports mynet
    torch.save(importlib.import_module("mynet").build(), checkpoint)
    monkeypatch.undo()
    monkeypatch.delitem(sys.modules, "mynet", raising=False)
    monkeypatch.chdir(ROOT)
    loaded = fmapviz.load_model(f"{tmp_path / 'mynet.py'}:build", checkpoint=checkpoint, trust_checkpoint=True)
    saved = torch.load(checkpoint, weights_only=False)
    assert torch.equal(loaded.model[0].weight, saved[0].weight)
    assert str(tmp_path) not in sys.path
    assert loaded.checkpoint == str(checkpoint)
    assert loaded.checkpoint_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert loaded.describe_weights() == f"checkpoint full.pt (sha256 {loaded.checkpoint_sha256[:12]})"


def test_a_file_that_is_not_a_checkpoint_does_not_ask_for_trust_already_given(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="is not a checkpoint torch.load can read") as caught:
        fmapviz.load_model(TinyCNN(), checkpoint=path, trust_checkpoint=True)
    assert "trust" not in str(caught.value)


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
