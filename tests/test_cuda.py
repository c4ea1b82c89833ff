"""On a CUDA GPU: every saliency method, every metric, explain_channels, maximize, scan and DFF run with model and
input on the GPU, give their results there, leave no hooks and the model as it was, and free what they allocate.

Marked ``cuda`` (``pytest -m cuda``) and skipped without a GPU; CI has none, so ``tests/test_device_lint.py``
catches the usual cause (a tensor made without ``device=``) on the CPU.
"""

from __future__ import annotations

import dataclasses
import gc

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state
from PIL import Image

import fmapviz
from fmapviz.engines import evaluate
from fmapviz.engines.saliency import METHODS

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEVICE = torch.device("cuda")
FAST = {"steps": 8, "samples": 4}


def _fast(method: str) -> dict:
    return {key: value for key, value in FAST.items() if key in METHODS[method].options}


def _tensors(value, seen=None):
    """Every tensor in a result: its fields, dicts, lists and tuples, recursively."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _tensors(getattr(value, field.name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item, seen)


def _on_device(result, least: int = 1) -> None:
    tensors = list(_tensors(result))
    assert len(tensors) >= least, type(result).__name__
    elsewhere = [tuple(tensor.shape) for tensor in tensors if tensor.device.type != DEVICE.type]
    assert not elsewhere, f"{type(result).__name__}: tensors off {DEVICE}: {elsewhere}"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN().to(DEVICE).train()  # train mode and trainable parameters: both must come back


@pytest.fixture
def x():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_the_gpu_and_leaves_the_model_as_it_was(model, x, method):
    before, hooks = model_state(model), hook_count(model)
    result = fmapviz.saliency(model, x, method, target="top:2", **_fast(method))
    assert result.maps.shape == (2, 2, 16, 16) and torch.isfinite(result.maps).all()
    _on_device(result)
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
    assert next(model.parameters()).device.type == DEVICE.type  # never moved


METRICS = {
    "deletion": lambda model, x, maps: evaluate.deletion(model, x, maps, target=[0, 1], steps=4),
    "insertion": lambda model, x, maps: evaluate.insertion(model, x, maps, target=[0, 1], steps=4),
    "road": lambda model, x, maps: evaluate.road(model, x, maps, target=[0, 1]),
    "average_drop": lambda model, x, maps: evaluate.average_drop_increase(model, x, maps, target=[0, 1]),
    "infidelity": lambda model, x, maps: evaluate.infidelity(model, x, maps, target=[0, 1]),
    "sensitivity": lambda model, x, maps: evaluate.sensitivity(
        lambda inputs, classes: fmapviz.saliency(model, inputs, "gradcam", target=classes).maps[:, 0],
        x,
        target=[0, 1],
        samples=2,
    ),
    "randomization_check": lambda model, x, maps: evaluate.randomization_check(model, x, "gradient", seed=1),
}


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_runs_on_the_gpu(model, x, metric):
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    before, hooks = model_state(model), hook_count(model)
    result = METRICS[metric](model, x, maps)
    _on_device(result)
    assert all(torch.isfinite(tensor.float()).all() for tensor in _tensors(result) if tensor.is_floating_point())
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks


def test_explain_channels_and_dff_run_on_the_gpu(model, x):
    before, hooks = model_state(model), hook_count(model)
    found = fmapviz.explain_channels(model, x, "features.2", top=3)
    _on_device(found, least=5)
    concepts = fmapviz.deep_feature_factorization(model, x, "features.2", concepts=2, iterations=20)
    assert concepts.heatmaps.shape == (2, 2, 16, 16)
    _on_device(concepts, least=2)
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks


def test_maximize_optimizes_on_the_gpu(model):
    before, hooks = model_state(model), hook_count(model)
    result = fmapviz.maximize(model, "features.2", channels=[0, 1], size=32, steps=4, progress=False)
    assert result.images.shape == (2, 3, 32, 32) and result.images.device.type == DEVICE.type
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks


def test_scan_runs_on_the_gpu_and_says_so(model, tmp_path):
    for index in range(3):
        pixels = (torch.rand(24, 24, 3, generator=torch.Generator().manual_seed(index)) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"photo{index}.png")
    loaded = fmapviz.load_model(model, size=16)  # the model stays where it is
    result = fmapviz.scan(loaded, tmp_path, "features.2", topk=2, progress=False)
    assert result.images == 3 and result.device.startswith("cuda:")
    layer = result["features.2"]
    assert layer.top_values.device.type == DEVICE.type
    assert hook_count(model) == 0


def test_load_model_auto_puts_the_model_on_the_gpu():
    loaded = fmapviz.load_model(TinyCNN(), device="auto", size=16)
    assert loaded.device.type == DEVICE.type


def test_gradcam_frees_what_it_allocates_over_50_calls(model):
    x = torch.rand(4, 3, 64, 64, device=DEVICE)
    fmapviz.saliency(model, x, "gradcam", layers="features.2")  # warm-up: cuDNN workspaces, the caching allocator
    gc.collect()
    torch.cuda.synchronize()
    level = torch.cuda.memory_allocated()
    for _ in range(50):
        result = fmapviz.saliency(model, x, "gradcam", layers="features.2")
        del result
    gc.collect()
    torch.cuda.synchronize()
    one_map = 4 * 64 * 64 * 4  # bytes of one call's maps: a leak of one per call would show 50 of them
    assert torch.cuda.memory_allocated() - level < one_map
    assert hook_count(model) == 0
