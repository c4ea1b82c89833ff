"""Deep Feature Factorization: NMF by multiplicative updates, concepts labelled through the classifier, the overlay."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, assert_same_state, hook_count, model_state, real_weights

import fmapviz
from fmapviz import show_concepts
from fmapviz.engines.dff import deep_feature_factorization, find_classifier, nmf
from fmapviz.plot.concepts import concept_colors, concept_overlay


def test_nmf_recovers_a_planted_factorization_and_never_raises_the_error():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.rand(60, 3, generator=generator) @ torch.rand(3, 12, generator=generator)
    assert float((matrix - torch.mm(*nmf(matrix, 3))).norm() / matrix.norm()) < 1e-3
    full_rank = torch.rand(60, 12, generator=generator)  # no exact factorization: the error falls, then settles
    errors = [float((full_rank - torch.mm(*nmf(full_rank, 3, iterations=n))).norm()) for n in (1, 5, 20, 80)]
    assert all(later <= earlier + 1e-6 for earlier, later in zip(errors, errors[1:])) and errors[-1] < errors[0]
    w, h = nmf(matrix, 3)
    assert (w >= 0).all() and (h >= 0).all()
    with pytest.raises(ValueError, match="non-negative"):
        nmf(-matrix, 2)


def test_concept_directions_are_labelled_by_the_classifier_head():
    torch.manual_seed(0)
    model = TinyCNN(classes=4).eval()
    x = torch.rand(2, 3, 16, 16)
    before, hooks = model_state(model), hook_count(model)
    found = deep_feature_factorization(model, x, "features.3", concepts=3, categories=["a", "b", "c", "d"], top=2)
    assert found.heatmaps.shape == (2, 3, 16, 16) and found.directions.shape == (3, 16)
    assert torch.allclose(found.scores, model.fc(found.directions), atol=1e-6)
    assert torch.equal(found.labels, found.scores.topk(2, dim=1).indices)
    assert found.label_names[0] == [["a", "b", "c", "d"][int(i)] for i in found.labels[0]]
    assert find_classifier(model, 16) is model.fc
    assert_same_state(before, model_state(model))
    assert hook_count(model) == hooks
    with pytest.raises(ValueError, match="classifier takes 16 features but the layer has 8 channels"):
        deep_feature_factorization(model, x, "features.1", classifier="fc")


def test_overlay_colours_each_pixel_by_its_strongest_concept():
    photo = torch.zeros(3, 4, 4)
    heat = torch.zeros(2, 4, 4)
    heat[0, :, :2] = 1.0
    heat[1, :, 2:] = 1.0
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    tile = concept_overlay(photo, heat, colors, alpha=1.0)
    assert torch.equal(tile[:, 0, 0], colors[0]) and torch.equal(tile[:, 0, 3], colors[1])
    assert concept_colors(5).shape == (5, 3)
    with pytest.raises(ValueError, match="heatmaps must be"):
        concept_overlay(photo, heat[:, :2], colors)


@real_weights
def test_concepts_of_a_cat_photo_name_cat_classes(mobilenet, tmp_path):
    from conftest import ASSETS

    image = fmapviz.load_image(str(ASSETS / "chelsea.png"), mobilenet.transform)
    found = deep_feature_factorization(
        mobilenet.model, image.tensor, "features.18", concepts=3, categories=mobilenet.categories
    )
    assert any("cat" in name or name == "tabby" for labels in found.label_names for name in labels)
    path = tmp_path / "concepts.png"
    show_concepts(found, image.display).save(path)
    assert path.stat().st_size > 10_000
