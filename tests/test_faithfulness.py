"""ROAD, Average Drop / Increase in Confidence, infidelity and sensitivity, against their references."""

from __future__ import annotations

import numpy
import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state

from fmapviz import evaluate
from fmapviz.engines.saliency import saliency


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("side", [24, 64])  # 64: the solve starts from the half-resolution solution
def test_linear_imputation_matches_road_reference_solver(side):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    maps = torch.nn.functional.interpolate(
        torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)), size=side
    )[:, 0]
    removed = maps >= torch.quantile(maps.flatten(1), 0.4, dim=1)[:, None, None]
    expected = torch.stack([NoisyLinearImputer(noise=0)(images[i], (~removed[i]).float()) for i in range(2)])
    filled = evaluate.linear_imputation(images, removed)
    assert (filled - expected).abs().max() <= 1e-4
    assert torch.equal(filled[~removed[:, None].expand_as(images)], images[~removed[:, None].expand_as(images)])


def test_linear_imputation_fills_a_hole_in_a_linear_ramp_exactly():
    ramp = torch.linspace(0, 1, 20).expand(1, 3, 20, 20).clone()
    removed = torch.zeros(1, 20, 20, dtype=torch.bool)
    removed[0, 5:15, 5:15] = True
    assert torch.allclose(evaluate.linear_imputation(ramp, removed), ramp, atol=1e-5)


def test_road_curves_match_pytorch_grad_cam(images):
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = TinyCNN().eval()
    maps = torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(2))
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
    percentiles = [20, 50, 80]

    def peer(order, percentile):
        metric = PerturbationConfidenceMetric(order(percentile, NoisyLinearImputer(noise=0)))
        return metric(images, maps.numpy(), targets, model)

    result = evaluate.road(
        model, images, maps, [1, 3], fractions=[1 - p / 100 for p in percentiles], noise=0, score="logit"
    )
    morf = numpy.stack([peer(RemoveMostRelevantFirst, p) for p in percentiles], 1)
    lerf = numpy.stack([peer(RemoveLeastRelevantFirst, p) for p in percentiles], 1)
    assert numpy.abs((result.morf - result.baseline[:, None]).numpy() - morf).max() <= 1e-4
    assert numpy.abs((result.lerf - result.baseline[:, None]).numpy() - lerf).max() <= 1e-4
    assert torch.allclose(result.score, (result.lerf.mean(1) - result.morf.mean(1)) / 2)


def test_road_ranks_a_faithful_map_above_its_inverse_and_is_seeded(images):
    """A linear model's input-x-gradient map is exact; its negation ranks pixels backwards."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4)).eval()
    good = saliency(model, images, "input_x_gradient", target=2).maps[:, 0]
    first = evaluate.road(model, images, good, 2, seed=1)
    assert (first.score > evaluate.road(model, images, -good, 2, seed=1).score).all()
    assert torch.equal(first.morf, evaluate.road(model, images, good, 2, seed=1).morf)
    with pytest.raises(ValueError, match="fractions must lie strictly between 0 and 1"):
        evaluate.road(model, images, good, 2, fractions=[0.5, 1.0])


def test_average_drop_and_increase_match_torchcam(images):
    from torchcam.methods import GradCAM
    from torchcam.metrics import ClassificationMetric

    torch.manual_seed(0)
    model = TinyCNN().eval()
    with GradCAM(model, "features.3") as extractor:
        metric = ClassificationMetric(extractor, lambda logits: logits.softmax(-1))
        metric.update(images, class_idx=[1, 3])
        summary = metric.summary()
        maps = extractor.fuse_cams(extractor([1, 3], model(images)))
    maps = torch.nn.functional.interpolate(maps[:, None], size=(24, 24), mode="bilinear", align_corners=False)[:, 0]
    change = evaluate.average_drop_increase(model, images, maps, [1, 3])
    assert abs(float(change.drop.mean()) - summary["avg_drop"]) <= 1e-4
    assert abs(float(change.increase.float().mean()) - summary["conf_increase"]) <= 1e-4


def test_infidelity_and_sensitivity_through_captum(images):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4)).eval()
    before, hooks = model_state(model), hook_count(model)
    exact = (model[1].weight[2].reshape(3, 24, 24) * 1.0).sum(0).expand(2, 24, 24)  # gradient summed over colours
    noisy = exact + torch.randn(2, 24, 24, generator=torch.Generator().manual_seed(3)) * exact.std()
    assert (evaluate.infidelity(model, images, exact, 2) < evaluate.infidelity(model, images, noisy, 2)).all()
    steady = evaluate.sensitivity(lambda inputs, target: inputs.sum(1) * 0 + 1, images, 2)
    assert torch.allclose(steady, torch.zeros(2))
    assert (evaluate.sensitivity(lambda inputs, target: inputs.sum(1), images, 2) > 0).all()
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
