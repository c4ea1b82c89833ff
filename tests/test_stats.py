"""RunningChannelStats and RunningLayerStats: exact streaming and merged per-channel statistics."""

from __future__ import annotations

import pytest
import torch

from fmapviz.engines.channels.statistics import RunningChannelStats, RunningLayerStats


def _direct(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    values = maps.transpose(0, 1).reshape(maps.shape[1], -1).double()
    return {
        "mean": values.mean(1),
        "std": values.std(1, correction=0),
        "max": values.amax(1),
        "min": values.amin(1),
        "fraction_positive": (values > 0).double().mean(1),
    }


def _assert_matches(stats: RunningChannelStats, maps: torch.Tensor) -> None:
    expected = _direct(maps)
    assert int(stats.count) == maps.numel() // maps.shape[1]
    for name, value in expected.items():
        torch.testing.assert_close(getattr(stats, name), value, rtol=1e-10, atol=1e-10, msg=name)


def test_streaming_updates_equal_one_pass_over_everything():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(13, 5, 4, 3, generator=generator) * 3 + 100  # large offset stresses variance rounding
    stats = RunningChannelStats()
    for chunk in maps.split(4):
        stats.update(chunk)
    _assert_matches(stats, maps)


def test_merge_of_two_shards_equals_one_pass():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(20, 6, 5, 5, generator=generator) - 0.3
    first = RunningChannelStats().update(maps[:7])
    second = RunningChannelStats().update(maps[7:12]).update(maps[12:])
    merged = RunningChannelStats.merge(first, second)
    _assert_matches(merged, maps)
    torch.testing.assert_close(RunningChannelStats.merge(second, first).std, merged.std, rtol=1e-12, atol=0)


def test_two_dimensional_maps_count_one_value_per_image():
    maps = torch.tensor([[1.0, -1.0], [3.0, -2.0], [-1.0, 0.0]])
    stats = RunningChannelStats().update(maps)
    assert int(stats.count) == 3
    torch.testing.assert_close(stats.mean, torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(stats.fraction_positive, torch.tensor([2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(stats.max, torch.tensor([3.0, 0.0], dtype=torch.float64))


def test_merge_with_empty_returns_a_copy_of_the_other():
    stats = RunningChannelStats().update(torch.randn(2, 3, 2, 2))
    merged = RunningChannelStats.merge(RunningChannelStats(), stats)
    torch.testing.assert_close(merged.mean, stats.mean)
    merged.total_mean.add_(1)
    assert not torch.equal(merged.mean, stats.mean)


def test_dict_round_trip_survives_weights_only_load(tmp_path):
    stats = RunningChannelStats().update(torch.randn(3, 4, 2, 2))
    path = tmp_path / "stats.pt"
    torch.save(stats.to_dict(), path)
    loaded = RunningChannelStats.from_dict(torch.load(path, weights_only=True))
    for name in ("mean", "std", "max", "min", "fraction_positive"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))


def test_bad_input_raises_clear_errors():
    stats = RunningChannelStats()
    with pytest.raises(ValueError, match="No statistics yet"):
        _ = stats.mean
    with pytest.raises(ValueError, match=r"\(N,C,H,W\) or \(N,C\)"):
        stats.update(torch.randn(3, 4, 5))
    stats.update(torch.randn(1, 4))
    with pytest.raises(ValueError, match="4 and 2 channels"):
        stats.update(torch.randn(1, 2))
    with pytest.raises(ValueError, match="exactly the keys"):
        RunningChannelStats.from_dict({"count": torch.tensor(1)})


def test_float32_input_is_accumulated_in_float64():
    stats = RunningChannelStats().update(torch.full((1000, 1), 0.1, dtype=torch.float32))
    assert stats.mean.dtype == torch.float64
    assert stats.std.item() < 1e-12


def test_pooled_std_is_the_std_of_every_value_of_every_channel():
    maps = torch.randn(6, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1)
    stats = RunningChannelStats().update(maps[:2]).update(maps[2:])
    torch.testing.assert_close(stats.pooled_std, maps.std(correction=0), rtol=1e-12, atol=0)


def test_running_layer_stats_fold_layers_in_order_and_report_their_health():
    running = RunningLayerStats()
    running.fold("b", torch.zeros(2, 3, 2, 2))
    running.fold("a", torch.ones(2, 4))
    running.fold("b", torch.ones(1, 3, 2, 2))
    health = running.health()
    assert list(health) == ["b", "a"] and health["b"].count == 12 and health["a"].dead_channels == []
