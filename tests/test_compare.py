"""compare and compare_checkpoints: CKA, channel health and predictions over two models or a series."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state
from torch import nn
from torch.nn.utils import prune

from fmapviz.engines.compare import CompareError, block_layers, compare, compare_checkpoints
from fmapviz.engines.similarity import linear_cka, pooled_features
from fmapviz.errors import ModelLoadError
from fmapviz.views.compare import show_checkpoints, show_cka, show_compare_health, show_disagreements, show_side_by_side


def small_net(width: int = 8, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 5),
    ).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_a_model_compared_with_its_copy_has_cka_one_on_the_diagonal(images):
    model = small_net()
    result = compare(model, copy.deepcopy(model), images, batch_size=16)
    assert result.layers_a == ["0", "2", "4", "8"] == block_layers(model)
    assert torch.allclose(result.cka.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-9)
    assert result.agreement == 1.0 and result.differing == [] and result.count == 40


def test_cka_matches_the_formula_on_captured_features(images):
    a, b = small_net(seed=0), small_net(width=6, seed=1)
    result = compare(a, b, images, batch_size=7)
    with torch.no_grad():
        features_a = pooled_features(a[:3](images))
        features_b = pooled_features(b[:5](images))
    assert result.similarity("2", "4") == pytest.approx(linear_cka(features_a, features_b), abs=1e-6)
    assert result.pairs == [("0", "0"), ("2", "2"), ("4", "4"), ("8", "8")]


def test_pruned_and_quantized_copies_are_compared_and_left_untouched(images):
    model = small_net()
    pruned = copy.deepcopy(model)
    prune.l1_unstructured(pruned[2], "weight", amount=0.9)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    states = [model_state(m) for m in (model, pruned)]
    result = compare(model, pruned, images, names=("float", "pruned"))
    assert result.similarity("0", "0") == pytest.approx(1.0, abs=1e-9)
    assert result.similarity("2", "2") < 0.99  # 90% of the weights gone changes the layer
    for before, checked in zip(states, (model, pruned)):
        assert_same_state(before, model_state(checked))
    assert hook_count(model) == 0 and hook_count(pruned) == 1  # prune's own pre-hook, nothing of ours
    q = compare(model, quantized, images)
    assert q.layers_b == ["0", "2", "4", "8"]
    assert q.similarity("4", "4") == pytest.approx(1.0, abs=1e-9) and q.similarity("8", "8") > 0.99
    assert hook_count(quantized) == 0


def test_different_architectures_get_a_rectangular_cka_and_best_matches(images, tiny_cnn):
    result = compare(small_net(), tiny_cnn, images)
    assert result.cka.shape == (4, len(result.layers_b))
    assert result.layers_b == ["features.0", "features.2", "fc"]
    assert all(b in result.layers_b for _, b in result.pairs)
    assert all(0 <= float(v) <= 1 + 1e-9 for v in result.cka.flatten())
    assert result.agreement is None  # 5 vs 4 classes: predictions are not compared


def test_comparison_figures_are_drawn(images, tmp_path):
    result = compare(small_net(seed=0), small_net(seed=3), images)
    assert result.differing  # two random nets disagree on some images
    for figure in (
        show_cka(result),
        show_side_by_side(result, top=4),
        show_compare_health(result),
        show_disagreements(result),
    ):
        height, width = figure.size
        assert height > 100 and width > 100
        assert figure.image.std() > 10  # not blank


def test_mismatched_input_sizes_give_one_clear_error():
    fixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 3)).eval()  # 32 px only
    model = small_net()
    with pytest.raises(CompareError, match=r"Model B cannot run on inputs of shape \(8, 3, 16, 16\)") as caught:
        compare(model, fixed, torch.randn(8, 3, 16, 16))
    assert "\n" not in str(caught.value)
    assert hook_count(model) == 0 and hook_count(fixed) == 0


def test_empty_or_single_image_data_is_refused():
    with pytest.raises(CompareError, match="data is empty"):
        compare(small_net(), small_net(), [])
    with pytest.raises(CompareError, match="at least 2 images"):
        compare(small_net(), small_net(), torch.randn(1, 3, 16, 16))


@pytest.fixture
def series(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),"
        " nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))\n"
    )
    namespace: dict = {}
    exec(factory.read_text(), namespace)
    torch.manual_seed(0)
    model = namespace["build"]()
    paths = []
    for step in range(3):
        with torch.no_grad():  # drift the weights: the last checkpoint is furthest from the first
            model[2].weight.add_(0.3 * torch.randn_like(model[2].weight))
        paths.append(tmp_path / f"ckpt_{step * 5}.pt")
        torch.save(model.state_dict(), paths[-1])
    return factory, paths


def test_checkpoint_series_curves(series, images):
    factory, paths = series
    result = compare_checkpoints(str(paths[0].parent / "ckpt_*.pt"), f"{factory}:build", images)
    assert [p.rsplit("/", 1)[-1] for p in result.checkpoints] == ["ckpt_0.pt", "ckpt_5.pt", "ckpt_10.pt"]
    assert result.layers == ["0", "2", "6"]
    assert result.cka_to_final.shape == (3, 3)
    assert torch.allclose(result.cka_to_final[:, 0], torch.ones(3, dtype=torch.float64))  # first conv never moved
    assert result.cka_to_final[0, 1] < result.cka_to_final[1, 1] < 1.0 == result.cka_to_final[2, 1]
    assert ((result.dead_fraction >= 0) & (result.dead_fraction <= 1)).all()
    assert show_checkpoints(result).size[0] > 200


def test_checkpoint_that_does_not_fit_the_factory_and_empty_series(series, images, tmp_path):
    factory, paths = series
    torch.save(TinyCNN().state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="does not match the model"):
        compare_checkpoints([paths[0], tmp_path / "other.pt"], f"{factory}:build", images)
    with pytest.raises(CompareError, match="series is empty"):
        compare_checkpoints([], f"{factory}:build", images)
    with pytest.raises(CompareError, match="No checkpoint matches"):
        compare_checkpoints(str(tmp_path / "nothing_*.pt"), f"{factory}:build", images)
