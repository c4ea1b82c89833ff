"""One way to pass a model (issue 28): every function takes a LoadedModel too, with its defaults; half-precision
models in every engine; sizes that cannot fit refused before allocation; zero steps refused."""

from __future__ import annotations

import functools
import inspect
import re
import resource
import time
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, ROOT, TinyCNN
from PIL import Image
from torch import nn

import fmapviz
from fmapviz.cli import main
from fmapviz.memory import MemoryLimitError
from fmapviz.models import LoadedModel

CATEGORIES = ["cat", "dog", "tabby", "car"]


class Gray20(nn.Module):
    """1x20x20 in, 3 classes: the flatten fixes the size (a 224 px or 3-channel input fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@pytest.fixture
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    result = fmapviz.load_model(TinyCNN().eval(), size=32)
    result.categories = CATEGORIES
    return result


@pytest.fixture
def gray() -> LoadedModel:
    torch.manual_seed(0)
    return fmapviz.load_model(Gray20(), size=20, mean=(0.5,), std=(0.5,))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_each_function_gives_with_a_loaded_model_what_it_gives_with_its_module(loaded, x):
    module = loaded.model
    cases = [
        (fmapviz.feature_maps, (x, "features.2"), {}),
        (fmapviz.saliency, (x, "gradcam"), {"categories": CATEGORIES}),
        (fmapviz.explain_channels, (x, "features.2"), {"categories": CATEGORIES}),
        (fmapviz.deep_feature_factorization, (x, "features.2", 2), {"categories": CATEGORIES}),
        (fmapviz.init_report, (x,), {}),
        (fmapviz.evaluate.deletion, (x, torch.rand(2, 32, 32), 0, 4), {}),
        (fmapviz.evaluate.cascade_blocks, (), {}),
        (fmapviz.summary, (), {"input_size": (1, 3, 32, 32)}),
        (functools.partial(fmapviz.maximize, steps=2, progress=False), ("features.2[1]",), {"size": (32, 32)}),
    ]
    for function, args, explicit in cases:
        with_loaded, with_module = function(loaded, *args), function(module, *args, **explicit)
        assert _values(with_loaded) == _values(with_module), getattr(function, "__name__", function)
    with fmapviz.capture(loaded, "features.0") as maps:
        module(x)
    assert maps["features.0"].shape == (2, 8, 32, 32)
    assert fmapviz.channel_stats(x, loaded, "features.2")["features.2"].max.tolist() == (
        fmapviz.channel_stats(x, module, "features.2")["features.2"].max.tolist()
    )


def _values(result: object) -> object:
    """Something comparable with == from any engine result: its tensors as lists, its other fields as they are."""
    if isinstance(result, torch.Tensor):
        return result.tolist()
    if isinstance(result, dict):
        return {key: _values(value) for key, value in result.items()}
    if isinstance(result, list | tuple):
        return [_values(value) for value in result]
    if hasattr(result, "__dataclass_fields__"):
        return {name: _values(getattr(result, name)) for name in result.__dataclass_fields__ if name != "settings"}
    return str(result) if hasattr(result, "rows") else result


def test_a_loaded_model_brings_its_class_names_and_explicit_arguments_win(loaded, x):
    result = fmapviz.saliency(loaded, x, "gradcam", target="tabby")
    assert result.target.flatten().tolist() == [2, 2] and result.target_names == [["tabby"], ["tabby"]]
    with pytest.raises(ValueError, match="no class names are known"):
        fmapviz.saliency(loaded.model, x, "gradcam", target="tabby")  # a bare module knows no names
    renamed = fmapviz.saliency(loaded, x, "gradcam", target=2, categories=["a", "b", "c", "d"])
    assert renamed.target_names == [["c"], ["c"]]
    assert fmapviz.explain_channels(loaded, x, "features.2", target="dog").target_names == ["dog", "dog"]


def test_maximize_takes_normalization_and_size_from_a_fixed_size_grayscale_model(gray):
    assert gray.fixed_size and gray.size == (20, 20) and gray.mean == (0.5,)
    with pytest.raises(RuntimeError, match="to have 1 channels"):  # the module alone: 224 px, 3 ImageNet channels
        fmapviz.maximize(gray.model, "class:1", steps=1, progress=False)
    result = fmapviz.maximize(gray, "class:1", steps=3, progress=False)
    explicit = fmapviz.maximize(
        gray.model, "class:1", steps=3, progress=False, mean=(0.5,), std=(0.5,), size=(20, 20), model_size=(20, 20)
    )
    assert result.images.shape == (1, 3, 20, 20) and result.settings["mean"] == (0.5,)
    assert torch.equal(result.images, explicit.images)
    override = fmapviz.maximize(gray, "class:1", steps=1, progress=False, mean=(0.25,), std=(0.5,))
    assert override.settings["mean"] == (0.25,)


def test_channel_stats_on_files_uses_the_loaded_transform(gray, tmp_path):
    Image.open(ASSETS / "chelsea.png").resize((40, 30)).save(tmp_path / "cat.png")
    stats = fmapviz.channel_stats(tmp_path, gray, "features.1")["features.1"]  # 1 channel at 20 px: the transform's
    explicit = fmapviz.channel_stats(tmp_path, gray.model, "features.1", transform=gray.transform)["features.1"]
    assert stats.max.tolist() == explicit.max.tolist() and len(stats.max) == 4


def test_an_int_where_a_unit_is_expected_shows_both_spellings(loaded):
    for objective in (3, [3]):
        with pytest.raises(ValueError, match=r"'class:3'.*'features\.2\[3\]'"):
            fmapviz.maximize(loaded, objective, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"'class:5'"):
        fmapviz.vocabulary.parse_unit(5)


def test_a_wrong_model_argument_names_both_forms(x):
    with pytest.raises(TypeError, match="nn.Module or what fmapviz.load_model returns"):
        fmapviz.saliency("mobilenet_v2", x)


def test_every_public_function_takes_a_loaded_model_and_the_docs_table_says_so():
    from test_docs_api import public_api

    table = (ROOT / "docs" / "reference" / "load.rst").read_text().split("Passing a model")[1]
    rows = dict(re.findall(r"^``(fmapviz\.[\w.]+)``\s+(.+)$", table, re.MULTILINE))
    found = {}
    for name, value in public_api().items():
        if not callable(value) or inspect.isclass(value):
            continue
        parameters = inspect.signature(value).parameters.values()
        annotations = [
            str(p.annotation) for p in parameters if "Module" in str(p.annotation) and p.name != "classifier"
        ]
        if annotations:
            found[name] = annotations[0]
    assert set(rows) == set(found)
    for name, annotation in found.items():
        forms = rows[name]
        if name not in ("fmapviz.load_model", "fmapviz.compare_checkpoints"):  # they build the model
            assert "LoadedModel" in annotation and "LoadedModel" in forms, name
        assert ("str" in annotation) == ("str" in forms), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_run_in_every_engine_on_float32_input(dtype, x):
    torch.manual_seed(0)
    model = TinyCNN().to(dtype).eval()
    for method in ("gradcam", "gradient"):
        maps = fmapviz.saliency(model, x, method, layers="features.2" if method == "gradcam" else None).maps
        assert maps.dtype == torch.float32 and torch.isfinite(maps).all() and maps.abs().sum() > 0, method
    captured = fmapviz.feature_maps(model, x, "features.2")["features.2"]
    assert captured.dtype == dtype and torch.isfinite(captured).all()
    result = fmapviz.maximize(model, "features.2[1]", size=16, steps=3, progress=False)
    assert result.images.dtype == torch.float32 and torch.isfinite(result.history).all()
    assert result.final_activation.dtype == torch.float32
    stats = fmapviz.channel_stats(x, model, "features.2")["features.2"]
    assert torch.isfinite(torch.as_tensor(stats.max)).all()
    assert next(model.parameters()).dtype == dtype  # the model is left in its dtype
    loaded = fmapviz.load_model(model)  # probing casts its zeros to the model's dtype
    assert loaded.size is None and not loaded.fixed_size


def test_a_model_that_mixes_dtypes_is_told_the_dtype_not_the_size():
    model = TinyCNN().eval()
    model.fc.half()  # float32 convolutions, a float16 head
    with pytest.raises(fmapviz.ModelLoadError, match="does not run in float16 and float32") as error:
        fmapviz.load_model(model)
    assert "--size" not in str(error.value)


def test_a_size_that_cannot_fit_is_refused_before_allocating(tmp_path, capsys):
    torch.manual_seed(0)
    with pytest.raises(MemoryLimitError, match=r"at size 100000x100000 needs about .* free; pass a smaller --size"):
        fmapviz.load_model(Gray20(), size=100000, mean=(0.5,), std=(0.5,))
    photo = tmp_path / "cat.png"
    Image.open(ASSETS / "chelsea.png").resize((48, 32)).save(photo)
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    code = main(["maps", "mobilenet_v2", str(photo), "--weights", "none", "--layers", "features.0",
                 "--size", "100000", "-o", str(tmp_path / "maps"), "--quiet"])  # fmt: skip
    assert code == 2 and time.perf_counter() - started < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000  # KiB: under 1 GB grown
    assert "pass a smaller --size" in capsys.readouterr().err
    assert not list(Path(tmp_path).rglob("*_features.0.png"))


def test_zero_steps_is_refused_unless_it_keeps_an_init_image(loaded, tmp_path, capsys):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fmapviz.maximize(loaded, "features.2[0]", steps=0, progress=False)
    photo = torch.rand(1, 3, 16, 16)
    assert torch.allclose(fmapviz.maximize(loaded, "features.2[0]", init=photo, steps=0, progress=False,
                                           param="pixels").images, photo, atol=1e-3)  # fmt: skip
    assert main(["actmax", "mobilenet_v2", "--weights", "none", "--layers", "features.0", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
