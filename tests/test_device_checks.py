"""Device checks at the public entry points: a model and its input on different devices, or a model on ``meta``,
get one line naming the devices before any hook is attached; ``load_model(device=...)`` and the records of a run
(report manifest, ``scan.json``, ``fmapviz-site.json``) name the device."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state

import fmapviz
from fmapviz.devices import DeviceError, auto_device, describe
from fmapviz.engines import evaluate

ON_META = r"model is on cpu but the input is on meta; move one of them"
MAPS = torch.rand(1, 32, 32)

ENTRY_POINTS = {
    "saliency": lambda model, x: fmapviz.saliency(model, x, "gradcam"),
    "saliency_ig": lambda model, x: fmapviz.saliency(model, x, "integrated_gradients"),
    "feature_maps": lambda model, x: fmapviz.feature_maps(model, x, "features.0"),
    "explain_channels": lambda model, x: fmapviz.explain_channels(model, x, "features.2"),
    "dff": lambda model, x: fmapviz.deep_feature_factorization(model, x, "features.2", concepts=2),
    "init_report": lambda model, x: fmapviz.init_report(model, x),
    "deletion": lambda model, x: evaluate.deletion(model, x, MAPS, target=0),
    "insertion": lambda model, x: evaluate.insertion(model, x, MAPS, target=0),
    "road": lambda model, x: evaluate.road(model, x, MAPS, target=0),
    "average_drop": lambda model, x: evaluate.average_drop_increase(model, x, MAPS, target=0),
    "infidelity": lambda model, x: evaluate.infidelity(model, x, MAPS, target=0),
    "randomization_check": lambda model, x: evaluate.randomization_check(model, x, "gradient"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_an_input_on_another_device_names_both_devices(entry):
    model = TinyCNN().train()
    before = model_state(model)
    with pytest.raises(DeviceError, match=ON_META) as error:
        ENTRY_POINTS[entry](model, torch.empty(1, 3, 32, 32, device="meta"))
    assert "\n" not in str(error.value)
    assert hook_count(model) == 0
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_model_on_the_meta_device_is_one_line(entry):
    model = TinyCNN().to("meta")
    with pytest.raises(DeviceError, match=r"^The model is on the meta device \(no values\); build it on cpu"):
        ENTRY_POINTS[entry](model, torch.empty(1, 3, 32, 32, device="meta"))


def test_the_same_device_still_runs():
    model, x = TinyCNN().eval(), torch.rand(1, 3, 32, 32)
    assert fmapviz.saliency(model, x, "gradcam").maps.shape == (1, 1, 32, 32)
    assert fmapviz.devices.check_model_input(torch.nn.ReLU(), x) == x.device  # no parameters: x decides


def test_load_model_resolves_auto_and_refuses_bad_devices():
    net = TinyCNN()
    assert fmapviz.load_model(net, device="auto", size=32).device == auto_device()
    assert fmapviz.load_model(TinyCNN(), device="cpu", size=32).device == torch.device("cpu")
    with pytest.raises(DeviceError, match="Unknown device 'gpu'"):
        fmapviz.load_model(TinyCNN(), device="gpu", size=32)
    with pytest.raises(DeviceError, match="meta device holds shapes but no values"):
        fmapviz.load_model(TinyCNN(), device="meta", size=32)


def _photos(folder, count=2):
    from PIL import Image

    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        pixels = (torch.rand(40, 40, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(folder / f"photo{index}.png")
    return folder


def test_a_scan_records_its_device_and_reads_it_back(tmp_path):
    loaded = fmapviz.load_model(TinyCNN(), size=32)
    result = fmapviz.scan(loaded, _photos(tmp_path / "photos"), "features.2", topk=1, progress=False)
    assert result.device == describe(loaded.device) == "cpu"
    result.save(tmp_path / "scan")
    assert json.loads((tmp_path / "scan" / "scan.json").read_text())["device"] == "cpu"
    assert fmapviz.load_scan(tmp_path / "scan").device == "cpu"


def test_an_objective_plus_a_number_scores_on_the_maps_device():
    from fmapviz.engines.actmax.objectives import channel

    maps = {"features.2": torch.empty(2, 16, 4, 4, device="meta")}  # on CPU this found the CPU constant
    scores = (channel("features.2", 3) + 1.0)(maps)
    assert scores.device.type == "meta" and scores.shape == (2,)
    cpu = {"features.2": torch.ones(2, 16, 4, 4)}
    assert (channel("features.2", 3) * 2 + 1.5)(cpu).tolist() == [3.5, 3.5]
