"""Deletion/insertion curves, Spearman ranks and the randomization sanity check."""

from __future__ import annotations

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
