"""Saliency and metrics on any device (issue 25): device-independent seeded draws, full float32 precision inside
the call, out-of-memory batches that halve, the default layer search kept per model, and CUDA checks (skipped
without a GPU) that every seeded method gives the CPU's map on the GPU."""

from __future__ import annotations

import ast
import gc
import pathlib

import numpy
import pytest
import torch
import torchvision
from conftest import FitsRows, TinyCNN
from torch import nn

import fmapviz
from fmapviz import evaluate
from fmapviz.engines.saliency import saliency
from fmapviz.engines.saliency.layer_search import SHARED_SEARCHES
from fmapviz.engines.saliency.methods.captum import gradient_shap
from fmapviz.engines.seeding import generator, normal, randn
from fmapviz.memory import MemoryLimitError

ENGINES = pathlib.Path(fmapviz.__file__).parent / "engines"
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "linspace", "tensor", "eye", "as_tensor"}
RANDOM = {"randn", "rand", "randint", "normal", "bernoulli", "multinomial", "randperm"}
# parsed before the input is known and moved with it (targets), or a module constant moved where used (ROAD)
DEVICELESS = {("saliency/targets.py", "tensor"), ("saliency/targets.py", "as_tensor"), ("evaluate/road.py", "tensor")}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _torch_calls(folder: str):
    for path in sorted((ENGINES / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
                yield path.relative_to(ENGINES).as_posix(), func.attr, node, {k.arg for k in node.keywords}


@pytest.mark.parametrize("folder", ["saliency", "evaluate"])
def test_engine_factories_name_their_device_and_random_draws_happen_on_the_cpu(folder):
    """A tensor made without device= is the usual GPU bug (kernel_shap's); a draw from a device generator
    gives other numbers on a GPU than on the CPU. Draws go through fmapviz.engines.seeding instead."""
    deviceless = [
        f"{path}:{node.lineno} torch.{name}"
        for path, name, node, keywords in _torch_calls(folder)
        if name in FACTORIES and "device" not in keywords and (path, name) not in DEVICELESS
    ]
    draws = [f"{path}:{node.lineno} torch.{name}" for path, name, node, _ in _torch_calls(folder) if name in RANDOM]
    assert deviceless == [] and draws == []


def test_seeded_draws_are_cpu_draws_moved_to_the_input():
    like = torch.zeros(1, dtype=torch.float64)
    expected = torch.randn((3, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(randn((3, 4), generator(5), like=like), expected)
    stdev = torch.full((2, 3), 0.5)
    torch.manual_seed(7)
    assert torch.equal(normal(stdev, generator(7)), torch.normal(0.0, stdev))  # what captum's NoiseTunnel draws


def test_smooth_equals_captums_noise_tunnel_when_samples_do_not_fill_the_last_batch(tiny_cnn):
    from captum.attr import NoiseTunnel, Saliency

    x = torch.randn(2, 3, 16, 16, generator=generator(1))
    result = saliency(
        tiny_cnn, x, "gradient", target=2, smooth="vargrad", smooth_samples=7, smooth_noise=0.2, seed=4, batch_size=3
    )
    for image in range(2):
        torch.manual_seed(4)
        expected = NoiseTunnel(Saliency(tiny_cnn)).attribute(
            x[image : image + 1],
            nt_type="vargrad",
            nt_samples=7,
            nt_samples_batch_size=3,
            stdevs=float(0.2 * (x[image].max() - x[image].min())),
            target=2,
            abs=False,
        )
        torch.testing.assert_close(result.attributions[image : image + 1, 0], expected, atol=1e-6, rtol=1e-5)


def test_gradient_shap_with_input_noise_equals_captum(tiny_cnn):
    """The noise is drawn here (on the CPU), captum's baselines and points from numpy: the same map."""
    from captum.attr import GradientShap

    x, baselines = torch.randn(2, 3, 16, 16, generator=generator(0)), torch.randn(3, 3, 16, 16)
    classes = torch.tensor([1, 3])
    numpy.random.seed(1)
    torch.manual_seed(2)
    expected = GradientShap(tiny_cnn).attribute(x, baselines=baselines, n_samples=4, stdevs=0.1, target=classes)
    numpy.random.seed(1)
    assert torch.equal(gradient_shap(tiny_cnn, x, classes, baselines, 4, 0.1, seed=2), expected)


class PrecisionProbe(nn.Module):
    """TinyCNN that records cuDNN's float32 convolution precision at each forward, and fails when asked."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.net, self.seen, self.fail = TinyCNN(), [], fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.backends.cudnn.conv.fp32_precision)
        if self.fail:
            raise RuntimeError("the model broke")
        return self.net(x)


@pytest.fixture
def tf32_user():
    """A user who turned TF32 on for cuDNN convolutions; their setting is put back after the test."""
    saved = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    yield
    torch.backends.cudnn.conv.fp32_precision = saved


@pytest.mark.usefixtures("tf32_user")
def test_saliency_and_metrics_run_at_full_float32_precision_and_restore_the_users_setting():
    probe, x = PrecisionProbe().eval(), torch.randn(1, 3, 16, 16)
    result = saliency(probe, x, "gradcam", target=1)
    evaluate.deletion(probe, x, result, steps=2)
    evaluate.road(probe, x, result, fractions=(0.5,), iterations=2)
    assert set(probe.seen) == {"ieee"} and torch.backends.cudnn.conv.fp32_precision == "tf32"
    probe.seen.clear()
    saliency(probe, x, "gradient", target=1, allow_tf32=True)
    evaluate.deletion(probe, x, result, steps=2, allow_tf32=True)
    assert set(probe.seen) == {"tf32"}
    failing = PrecisionProbe(fail=True).eval()
    with pytest.raises(RuntimeError, match="the model broke"):
        saliency(failing, x, "gradient", target=1)
    with pytest.raises(RuntimeError, match="the model broke"):
        evaluate.deletion(failing, x, result, steps=2)
    assert set(failing.seen) == {"ieee"} and torch.backends.cudnn.conv.fp32_precision == "tf32"


def test_automatic_batches_halve_on_out_of_memory_and_a_chosen_one_is_named():
    model, x = FitsRows(rows=3).eval(), torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="integrated_gradients: out of memory at 8 rows") as caught:
        automatic = saliency(model, x, "integrated_gradients", target=1, steps=12)
    assert len([w for w in caught if "out of memory" in str(w.message)]) == 1  # said once, at 8 then at 4 rows
    assert automatic.settings["batch_size"] == 2 and max(model.batches[-3:]) <= 3
    explicit = saliency(model, x, "integrated_gradients", target=1, steps=12, batch_size=3)
    torch.testing.assert_close(automatic.maps, explicit.maps, atol=1e-6, rtol=1e-5)
    with pytest.raises(MemoryLimitError, match="5 row.*lower batch_size"):
        saliency(model, x, "integrated_gradients", target=1, steps=12, batch_size=5)
    with pytest.warns(UserWarning, match="scorecam: out of memory"):
        score = saliency(model, x, "scorecam", target=1, layers="net.features.3")
    torch.testing.assert_close(
        score.maps, saliency(model, x, "scorecam", target=1, layers="net.features.3", batch_size=2).maps
    )


class CountsForwards(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return super().forward(x)


def test_default_layer_search_runs_once_per_model_and_input_shape():
    model = CountsForwards().eval()
    x = torch.randn(1, 3, 16, 16)
    first = saliency(model, x, "gradcam", target=1)
    assert model.forwards == 2  # the shape-only search, then Grad-CAM's forward
    again = saliency(model, x, "gradcam", target=1)
    assert model.forwards == 3 and again.layers == first.layers == ["features"]
    torch.testing.assert_close(again.maps, first.maps)
    saliency(model, torch.randn(1, 3, 20, 20), "gradcam", target=1)  # another shape: searched again
    assert model.forwards == 5
    model.features.append(nn.Conv2d(16, 16, 1))  # another structure: searched again
    assert saliency(model, x, "gradcam", target=1).layers == ["features"] and model.forwards == 7
    before = len(SHARED_SEARCHES)
    del model
    gc.collect()
    assert len(SHARED_SEARCHES) < before  # held weakly


SEEDED = [
    ("smoothgrad", {"samples": 6}),
    ("gradient_shap", {"samples": 4, "noise": 0.1}),
    ("integrated_gradients", {"baseline": "noise", "steps": 8}),
    ("kernel_shap", {"samples": 40}),
    ("smoothgrad_campp", {"layers": "features.14"}),
    ("gradient", {"smooth": "smoothgrad", "smooth_samples": 5}),
    ("gradcam", {}),
    ("scorecam", {"layers": "features.14"}),
]


@cuda
@pytest.mark.parametrize(("method", "options"), SEEDED)
def test_cuda_maps_equal_the_cpus_with_the_same_seed(method, options):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64, generator=generator(3))
    on_cpu = saliency(model, x, method, target=[1, 2], **options).maps
    on_gpu = saliency(model.cuda(), x.cuda(), method, target=[1, 2], **options).maps
    assert on_gpu.device.type == "cuda"
    scale = on_cpu.abs().amax().clamp(min=1e-12)
    assert float((on_gpu.cpu() - on_cpu).abs().amax() / scale) < 1e-3


@cuda
def test_cuda_seeded_metrics_equal_the_cpus():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64, generator=generator(3))
    results = []
    for device in ("cpu", "cuda"):
        model, x = model.to(device), x.to(device)
        result = saliency(model, x, "gradcam", target=1)
        road = evaluate.road(model, x, result, fractions=(0.5,)).score
        fidelity = evaluate.infidelity(model, x, result, samples=4)
        check = evaluate.randomization_check(model, x, "gradcam", blocks=["fc", "layer4"]).correlations
        results.append([value.cpu() for value in (road, fidelity, check)])
    for cpu_value, gpu_value in zip(*results):
        torch.testing.assert_close(gpu_value, cpu_value, atol=1e-3, rtol=1e-3)


@cuda
def test_cuda_automatic_batch_size_comes_from_free_memory():
    from fmapviz.engines.saliency import auto_batch_size

    model = torchvision.models.resnet50(weights=None).cuda().eval()
    assert auto_batch_size(torch.device("cuda"), model, (1, 3, 224, 224)) >= 50  # IG's 50 steps in one batch
