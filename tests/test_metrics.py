"""Deletion/insertion curves, Spearman ranks and the randomization sanity check."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state
from test_saliency import PatternNet, pattern_image

from fmapviz import evaluate, saliency


def pattern_mask() -> torch.Tensor:
    mask = torch.zeros(1, 32, 32)
    mask[:, 20:25, 6:11] = 1.0
    return mask + 0.001 * torch.arange(32 * 32).reshape(1, 32, 32) / 1024  # break ties deterministically


def test_deletion_and_insertion_reward_the_map_that_points_at_the_evidence():
    model, x = PatternNet().eval(), pattern_image(22, 8)
    good, bad = pattern_mask(), -pattern_mask()
    good_deletion = evaluate.deletion(model, x, good, target=1, steps=16)
    bad_deletion = evaluate.deletion(model, x, bad, target=1, steps=16)
    assert good_deletion.auc.item() < 0.5 * bad_deletion.auc.item()
    good_insertion = evaluate.insertion(model, x, good, target=1, steps=16, baseline="black")
    bad_insertion = evaluate.insertion(model, x, bad, target=1, steps=16, baseline="black")
    assert good_insertion.auc.item() > 0.9 and bad_insertion.auc.item() < 0.4


def test_curve_endpoints_are_the_image_and_the_baseline(tiny_cnn):
    x = torch.randn(2, 3, 16, 16)
    curve = evaluate.deletion(tiny_cnn, x, torch.rand(2, 16, 16), target=[1, 2], steps=8)
    with torch.no_grad():
        start = tiny_cnn(x).softmax(1)[torch.arange(2), torch.tensor([1, 2])]
        end = tiny_cnn(torch.zeros_like(x)).softmax(1)[:, 1:3].diagonal()
    torch.testing.assert_close(curve.scores[:, 0], start)
    torch.testing.assert_close(curve.scores[:, -1], end)
    torch.testing.assert_close(curve.fractions, torch.linspace(0, 1, 9))
    torch.testing.assert_close(curve.auc, torch.trapezoid(curve.scores, curve.fractions, dim=1))


def test_curves_do_not_depend_on_batch_size(tiny_cnn):
    x, maps = torch.randn(1, 3, 16, 16), torch.rand(1, 16, 16)
    one = evaluate.insertion(tiny_cnn, x, maps, target=0, steps=10, batch_size=1)
    many = evaluate.insertion(tiny_cnn, x, maps, target=0, steps=10, batch_size=7)
    torch.testing.assert_close(one.scores, many.scores)


def test_metrics_take_a_saliency_result_and_check_shapes(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    result = saliency(tiny_cnn, x, "gradcam")
    curve = evaluate.deletion(tiny_cnn, x, result, steps=4)
    assert curve.scores.shape == (1, 5)
    with pytest.raises(ValueError, match="upsample"):
        evaluate.deletion(tiny_cnn, x, torch.rand(1, 8, 8), target=0)
    with pytest.raises(ValueError, match="target"):
        evaluate.deletion(tiny_cnn, x, torch.rand(1, 16, 16))


def test_spearman_uses_average_ranks_for_ties():
    first = torch.tensor([[1.0, 2.0, 2.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    second = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    ranks = torch.tensor([1.0, 2.5, 2.5, 4.0], dtype=torch.float64)
    expected = torch.corrcoef(torch.stack([ranks, torch.arange(1.0, 5.0, dtype=torch.float64)]))[0, 1]
    result = evaluate.spearman(first, second)
    torch.testing.assert_close(result[0], expected)
    torch.testing.assert_close(result[1], torch.tensor(-1.0, dtype=torch.float64))


def test_randomization_check_never_touches_the_model_and_decorrelates_gradients():
    torch.manual_seed(0)
    model = TinyCNN().train()
    before, hooks = model_state(model), hook_count(model)
    x = torch.randn(3, 3, 16, 16)
    check = evaluate.randomization_check(model, x, "gradient", seed=1)
    assert check.blocks == ["fc", "features.2", "features.0"]
    assert check.correlations.shape == (3, 3)
    assert check.correlations[-1].mean() < 0.5
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
    again = evaluate.randomization_check(model, x, "gradient", seed=1)
    torch.testing.assert_close(check.correlations, again.correlations)


def test_randomization_check_accepts_grouped_blocks(tiny_cnn):
    x = torch.randn(1, 3, 16, 16)
    check = evaluate.randomization_check(tiny_cnn, x, "gradcam", blocks=["fc", ["features.2", "features.0"]])
    assert check.blocks == ["fc", "features.0,features.2"]
    assert check.view == "positive"


def _gradient(model):
    return lambda inputs, classes: saliency(model, inputs, "gradient", target=classes).maps[:, 0]


HALF_PRECISION_METRICS = {  # metric -> (its scores, how close a bfloat16 model's must be to the float32 model's)
    "deletion": (lambda model, x, maps: evaluate.deletion(model, x, maps, target=1, steps=8).auc, 0.01),
    "insertion": (lambda model, x, maps: evaluate.insertion(model, x, maps, target=1, steps=8).auc, 0.01),
    "road": (lambda model, x, maps: evaluate.road(model, x, maps, target=1, fractions=(0.2, 0.5)).score, 0.01),
    "average_drop_increase": (lambda model, x, maps: evaluate.average_drop_increase(model, x, maps, 1).drop, 0.01),
    "infidelity": (lambda model, x, maps: evaluate.infidelity(model, x, maps, 1, noise=0.05, samples=8), 0.003),
    # the model itself rounds the 0.02 input noise to a few bfloat16 steps: its maps move by that much
    "sensitivity": (lambda model, x, maps: evaluate.sensitivity(_gradient(model), x, 1, samples=2), 0.1),
    "randomization_check": (
        lambda model, x, maps: (
            evaluate.randomization_check(
                model, x, "gradient", target=1, blocks=["features.2", "features.0"]
            ).correlations
        ),
        0.01,
    ),
}


@pytest.mark.parametrize("metric", HALF_PRECISION_METRICS)
def test_metrics_of_a_bfloat16_model_are_float32_and_close_to_the_float32_models(metric):
    score, tolerance = HALF_PRECISION_METRICS[metric]
    model = PatternNet().eval()
    half = copy.deepcopy(model).to(torch.bfloat16)
    x = torch.cat([pattern_image(22, 8), pattern_image(10, 20)])  # float32: cast to the model's dtype inside
    maps = pattern_mask().expand(2, -1, -1)
    before = model_state(half)
    full, reduced = score(model, x, maps), score(half, x, maps)
    assert reduced.dtype in (torch.float32, torch.float64) and bool(torch.isfinite(reduced).all())
    torch.testing.assert_close(reduced.double(), full.double(), atol=tolerance, rtol=0)
    assert hook_count(half) == 0
    assert_same_state(before, model_state(half))
    assert next(half.parameters()).dtype == torch.bfloat16
