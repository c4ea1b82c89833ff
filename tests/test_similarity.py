"""Linear CKA: the formula, its invariances, and streaming against one pass."""

from __future__ import annotations

import pytest
import torch

from fmapviz.engines.similarity import StreamingCKA, linear_cka, pooled_features


def gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al. (2019), eq. via centred Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    centring = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    gram_x, gram_y = centring @ (x @ x.T) @ centring, centring @ (y @ y.T) @ centring
    hsic = lambda a, b: torch.trace(a @ b)  # noqa: E731
    return float(hsic(gram_x, gram_y) / torch.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y)))


@pytest.fixture
def features() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=generator, dtype=torch.float64)
    mixing = torch.randn(40, 25, generator=generator, dtype=torch.float64)
    y = torch.tanh(x @ mixing) + 0.5 * torch.randn(300, 25, generator=generator, dtype=torch.float64) + 3.0
    return x, y


def test_cka_equals_the_gram_formula_on_random_data(features):
    x, y = features
    expected = gram_cka(x, y)
    assert 0.05 < expected < 0.95
    assert linear_cka(x, y) == pytest.approx(expected, abs=1e-6)
    unrelated = torch.randn(300, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert linear_cka(x, unrelated) == pytest.approx(gram_cka(x, unrelated), abs=1e-6)


def test_cka_of_a_layer_with_itself_is_one(features):
    x, _ = features
    assert linear_cka(x, x.clone()) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transform_and_isotropic_scaling(features):
    x, y = features
    rotation, _ = torch.linalg.qr(torch.randn(25, 25, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    assert linear_cka(x, 7.5 * (y @ rotation)) == pytest.approx(linear_cka(x, y), abs=1e-9)
    # not invariant to an arbitrary (non-orthogonal) linear map: the test can tell
    squash = torch.diag(torch.linspace(0.01, 10, 25, dtype=torch.float64))
    assert abs(linear_cka(x, y @ squash) - linear_cka(x, y)) > 1e-3


def test_streaming_equals_one_pass_for_any_batching(features):
    x, y = features
    whole = linear_cka(x, y)
    for size in (1, 7, 64, 299):
        streaming = StreamingCKA([("x", "y")])
        for start in range(0, 300, size):
            streaming.update({"x": x[start : start + size], "y": y[start : start + size]})
        assert streaming.count == 300
        assert streaming.cka("x", "y") == pytest.approx(whole, abs=1e-9)


def test_streaming_matrix_over_many_pairs_uses_flat_memory():
    generator = torch.Generator().manual_seed(3)
    a = {f"a{i}": torch.randn(50, 4 + i, generator=generator) for i in range(3)}
    b = {f"b{i}": torch.randn(50, 3 + i, generator=generator) for i in range(2)}
    streaming = StreamingCKA([(ka, kb) for ka in a for kb in b])
    streaming.update({**a, **b}).update({**a, **b})
    matrix = streaming.matrix(list(a), list(b))
    assert matrix.shape == (3, 2)
    assert matrix[1, 0] == pytest.approx(gram_cka(torch.cat([a["a1"]] * 2), torch.cat([b["b0"]] * 2)), abs=1e-6)
    assert streaming.cross["a2"].shape == (6, 3 + 4) and streaming.squares["a2"].shape == (6, 6)


def test_feature_maps_are_pooled_per_channel_or_per_grid_cell():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(pooled_features(maps), maps.mean((2, 3)))
    assert pooled_features(maps, grid=2).shape == (2, 12)
    with pytest.raises(ValueError, match="grid must be at least 1"):
        pooled_features(maps, grid=0)


def test_cka_needs_two_inputs_and_equal_rows():
    streaming = StreamingCKA([("x", "y")]).update({"x": torch.randn(1, 3), "y": torch.randn(1, 3)})
    with pytest.raises(ValueError, match="at least 2 inputs"):
        streaming.cka("x", "y")
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(torch.randn(4, 3), torch.randn(5, 3))
