"""Direct display: channel choice, normalization, overlays and channel health, checked on pixels and numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from conftest import ASSETS, TinyCNN, assert_same_state, hook_count, model_state, real_weights
from PIL import Image
from torch import nn

import fmapviz
from fmapviz.engines.channels import (
    RANKINGS,
    channel_scores,
    compute_channel_stats,
    normalize_layers,
    normalize_maps,
    select_channels,
    stream_channel_stats,
    upsample,
)
from fmapviz.plot import cell_origin


def raw_cells(figure, count: int, tile: tuple[int, int], ncols: int, padding: int = 2) -> list[np.ndarray]:
    image = figure.image
    cells = []
    for k in range(count):
        top, left = cell_origin(k, tile, ncols, padding)
        cells.append(image[top : top + tile[0], left : left + tile[1]])
    return cells


@pytest.mark.parametrize("rank", sorted(RANKINGS))
def test_top_channels_follow_the_rank_key(rank):
    maps = torch.zeros(2, 6, 4, 4)
    for c in range(6):
        maps[:, c] = c
        maps[:, c, 0, 0] = 3 * c  # makes max and std grow with c too
    assert select_channels(maps, "top:3", rank).tolist() == [5, 4, 3]
    assert select_channels(maps, "bottom:2", rank).tolist() == [0, 1]


def test_channel_choice_accepts_all_lists_and_score_tensors():
    maps = torch.rand(1, 5, 3, 3)
    assert select_channels(maps, "all").tolist() == [0, 1, 2, 3, 4]
    assert select_channels(maps, [4, -1, 0]).tolist() == [4, 4, 0]
    gradcam_weights = torch.tensor([0.1, 0.9, float("nan"), 0.5, 0.2])
    assert select_channels(maps, "top:2", gradcam_weights).tolist() == [1, 3]
    assert channel_scores(maps, gradcam_weights)[2] == float("-inf")
    with pytest.raises(ValueError, match="channels"):
        select_channels(maps, [5])
    with pytest.raises(ValueError, match="channels"):
        select_channels(maps, "best:3")
    with pytest.raises(ValueError, match="rank"):
        select_channels(maps, "top:2", "median")
    with pytest.raises(ValueError, match="rank"):
        select_channels(maps, "top:2", torch.ones(4))


def test_channels_always_says_which_channels_and_a_count_is_top():
    maps = torch.rand(1, 8, 3, 3)
    assert select_channels(maps, "2-4").tolist() == [2, 3, 4]
    assert select_channels(maps, "6,1").tolist() == [6, 1]
    one = fmapviz.show_maps(maps, 6)  # an int is channel 6, not "six channels"
    assert [t.get_text() for t in one.matplotlib.axes[0].texts] == ["ch 6"]
    ranged = fmapviz.show_maps(maps, "0-2")
    assert [t.get_text() for t in ranged.matplotlib.axes[0].texts] == ["ch 0", "ch 1", "ch 2"]
    assert "by mean" not in ranged.matplotlib._suptitle.get_text()
    with pytest.raises(ValueError, match="runs backwards"):
        select_channels(maps, "4-2")
    with pytest.raises(TypeError, match="channels"):
        fmapviz.show_hierarchy({"a": maps}, torch.rand(1, 3, 9, 9), channels=4)
    with pytest.raises(ValueError, match="top must be"):
        fmapviz.show_hierarchy({"a": maps}, torch.rand(1, 3, 9, 9), top=0)


TINY_FACTORY = """
import torch
import torch.nn as nn

def build():
    torch.manual_seed(0)  # the CLI and the test build the same weights
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
"""


def test_cli_maps_channels_draw_exactly_what_show_maps_draws(tmp_path, capsys):
    from fmapviz.cli import main

    (tmp_path / "net.py").write_text(TINY_FACTORY)
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "maps"
    spec = f"{tmp_path / 'net.py'}:build"
    assert main(["maps", spec, str(photo), "--layer", "1", "--channels", "6,1-2", "--size", "24", "-o", str(out),
                 "--quiet", "--weights", "none"]) == 0  # fmt: skip
    written = np.asarray(Image.open(out / "photo_1.png").convert("RGB"))
    loaded = fmapviz.load_model(spec, size=24)
    image = fmapviz.load_image(photo, loaded.transform)
    maps = fmapviz.feature_maps(loaded.model, image.tensor, "1")
    expected = fmapviz.show_maps(maps, "6,1-2", image=image.display[0], layer="1")
    assert [t.get_text() for t in expected.matplotlib.axes[0].texts] == ["input", "ch 6", "ch 1", "ch 2"]
    assert written.shape == expected.image.shape and (written == expected.image).all()
    assert main(["maps", spec, str(photo), "--layer", "1", "--channels", "4-2", "-o", str(out)]) == 2
    assert "runs backwards; write 2-4" in capsys.readouterr().err


def test_channel_k_lands_at_its_grid_cell():
    maps = torch.arange(10, dtype=torch.float32).view(1, 10, 1, 1).expand(1, 10, 5, 5)
    figure = fmapviz.show_maps(maps, "all", normalize="layer", cmap="gray", annotate=False, ncols=4)
    for k, cell in enumerate(raw_cells(figure, 10, (5, 5), 4)):
        assert (np.abs(cell.astype(int) - round(255 * k / 9)) <= 1).all(), k  # 255 palette levels


def test_layer_normalization_puts_the_global_max_at_full_scale_in_exactly_one_cell():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 16, 6, 6, generator=generator)
    maps[0, 11, 2, 3] = 5.0
    normalized = normalize_maps(maps, "layer")
    assert normalized.value_range == pytest.approx((float(maps.min()), 5.0))
    figure = fmapviz.show_maps(maps, "all", normalize="layer", cmap="gray", annotate=False, ncols=4)
    full = [k for k, cell in enumerate(raw_cells(figure, 16, (6, 6), 4)) if (cell == 255).any()]
    assert full == [11]
    per_channel = fmapviz.show_maps(maps, "all", normalize="channel", cmap="gray", annotate=False, ncols=4)
    assert all((cell == 255).any() for cell in raw_cells(per_channel, 16, (6, 6), 4))


def test_constant_nan_and_infinite_channels_render_flat_without_nan():
    maps = torch.rand(2, 4, 5, 5)
    maps[:, 0] = 3.0  # constant
    maps[:, 1] = float("nan")
    maps[:, 2, 0, 0] = float("inf")
    maps[:, 3, 1, 1] = float("-inf")
    for mode in ("channel", "layer"):
        normalized = normalize_maps(maps, mode)
        assert torch.isfinite(normalized.values).all() and normalized.values.min() >= 0 and normalized.values.max() <= 1
        assert torch.isfinite(normalized.low).all() and torch.isfinite(normalized.high).all()
    per_channel = normalize_maps(maps, "channel").values
    assert (per_channel[:, 0] == 0).all() and (per_channel[:, 1] == 0).all()
    assert per_channel[0, 2, 0, 0] == 1.0 and per_channel[0, 3, 1, 1] == 0.0
    figure = fmapviz.show_maps(maps[:, :1], "all", normalize="channel", cmap="gray", annotate=False)
    cell = raw_cells(figure, 1, (5, 5), 1)[0]
    assert (cell == cell[0, 0]).all()
    assert fmapviz.show_maps(maps, "all", normalize="channel").image.dtype == np.uint8


def test_percentile_clip_ignores_a_few_outliers():
    maps = torch.linspace(0, 1, 1000).view(1, 1, 10, 100).clone()
    maps[0, 0, 0, 0] = 1000.0
    normalized = normalize_maps(maps, "layer", clip=(0, 99))
    assert float(normalized.high) < 1.0
    assert (normalized.values >= 1.0).float().mean() == pytest.approx(0.01, abs=0.002)
    with pytest.raises(ValueError, match="clip"):
        normalize_maps(maps, clip=(50, 10))
    with pytest.raises(ValueError, match="normalize"):
        normalize_maps(maps, "image")


def test_global_normalization_shares_one_range_across_layers():
    maps = {"shallow": torch.full((1, 2, 4, 4), 1.0), "deep": torch.full((1, 3, 2, 2), 4.0)}
    maps["shallow"][0, 0, 0, 0] = 0.0
    normalized = normalize_layers(maps, "global")
    assert normalized["deep"].value_range == normalized["shallow"].value_range == (0.0, 4.0)
    assert float(normalized["shallow"].values.max()) == pytest.approx(0.25)
    assert float(normalized["deep"].values.min()) == 1.0


def test_overlay_lines_up_with_the_display_image_after_resize_and_crop():
    photo = torch.zeros(3, 150, 300)  # wide image: the crop cuts its sides
    photo[:, 40:80, 170:210] = 1.0
    transform = T.Compose([T.Resize(64), T.CenterCrop(56), T.ToTensor()])
    image = fmapviz.load_image(photo, transform, mean=(0, 0, 0), std=(1, 1, 1))
    model = nn.Sequential(nn.AvgPool2d(4))
    maps = fmapviz.feature_maps(model, image.tensor, "0")
    heat = upsample(normalize_maps(maps["0"], "layer").values, image.display.shape[-2:])[0, 0]
    bright = image.display[0].mean(0) > 0.5
    hot = heat > 0.5
    assert bright.sum() > 20
    assert (bright & hot).sum() / (bright | hot).sum() > 0.6
    figure = fmapviz.show_maps(maps, [0], image=image, overlay=True, cmap="gray", alpha=1.0, annotate=False)
    photo_cell, overlay_cell = raw_cells(figure, 2, (56, 56), 2)
    expected_photo = (image.display[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(photo_cell.astype(float) - expected_photo).max() <= 1
    overlay_hot = overlay_cell[..., 0] > 128
    assert (overlay_hot & bright.numpy()).sum() / (overlay_hot | bright.numpy()).sum() > 0.6


def test_show_maps_draws_a_batch_one_row_per_image_with_the_same_channels():
    maps = torch.rand(3, 8, 4, 4)
    figure = fmapviz.show_maps(maps, "top:5", annotate=True, title="batch")
    texts = [t.get_text() for t in figure.matplotlib.axes[0].texts]
    assert texts.count("image 1") == 1 and len([t for t in texts if t.startswith("ch ")]) == 15
    assert texts[:5] == texts[5:10]


def test_show_maps_errors_name_the_fix():
    with pytest.raises(ValueError, match="image="):
        fmapviz.show_maps(torch.rand(1, 4, 3, 3), overlay=True)
    with pytest.raises(ValueError, match="layer="):
        fmapviz.show_maps({"a": torch.rand(1, 2, 3, 3), "b": torch.rand(1, 2, 3, 3)})
    with pytest.raises(ValueError, match=r"\(C,H,W\)"):
        fmapviz.show_maps(torch.rand(5, 5))


def test_show_hierarchy_labels_each_layer_with_shape_stride_and_receptive_field(tiny_cnn):
    image = torch.rand(1, 3, 32, 32)
    maps = fmapviz.feature_maps(tiny_cnn, image, ["features.1", "features.3"])
    before = model_state(tiny_cnn)
    figure = fmapviz.show_hierarchy(maps, image, model=tiny_cnn, top=4, cell=32)
    assert_same_state(before, model_state(tiny_cnn))
    assert hook_count(tiny_cnn) == 0
    labels = [t.get_text() for t in figure.matplotlib.axes[0].texts if t.get_text().startswith("features")]
    assert labels[0].startswith("features.1\n8×32×32\nstride 1 · RF 3")
    assert labels[1].startswith("features.3\n16×16×16\nstride 2 · RF 5")
    assert len(figure.matplotlib.axes[0].images) == 1
    assert figure.matplotlib._suptitle.get_text().replace("\n", " ").startswith("Feature maps from shallow to deep")
    untitled = fmapviz.show_hierarchy(maps, image, model=tiny_cnn, top=4, cell=32, title="")
    assert untitled.matplotlib._suptitle is None and untitled.image.shape[0] < figure.image.shape[0]


def test_channel_stats_flags_dead_and_weak_channels():
    maps = torch.rand(4, 6, 5, 5) + 0.5
    maps[:, 2] = 0.0  # dead: never positive
    maps[:, 4] = -torch.rand(4, 5, 5)  # dead too
    maps[:, 5] *= 0.01  # weak
    stats = fmapviz.channel_stats(maps)
    assert stats.dead_channels == [2, 4]
    assert stats.weak_channels == [5]
    assert stats.fraction_positive[2] == 0 and stats.fraction_positive[0] == 1
    assert stats.mean[0] == pytest.approx(float(maps[:, 0].mean()), rel=1e-5)
    assert fmapviz.channel_stats(maps, weak_ratio=0.0).weak_channels == []
    assert "dead (never > 0): 2 [2, 4]" in str(stats)
    figure = fmapviz.show_channel_stats({"layer": stats})
    assert figure.image.shape[0] > 100


def _kill_resnet_channel(model: nn.Module, channel: int) -> nn.Module:
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layer1[0].conv1.weight[channel] = 0
        broken.layer1[0].bn1.weight[channel] = 0
        broken.layer1[0].bn1.bias[channel] = -1.0
    return broken


def test_dataset_stats_find_a_channel_zeroed_on_purpose_in_random_resnet18(resnet18):
    broken = _kill_resnet_channel(resnet18, 5)
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = model_state(broken)
    stats = fmapviz.channel_stats(images, broken, "layer1.0.bn1", batch_size=2)
    assert_same_state(before, model_state(broken))
    assert hook_count(broken) == 0
    healthy = fmapviz.channel_stats(images, resnet18, "layer1.0.bn1")["layer1.0.bn1"]
    assert 5 not in healthy.dead_channels
    assert set(stats["layer1.0.bn1"].dead_channels) == set(healthy.dead_channels) | {5}
    assert stats["layer1.0.bn1"].max[5] == -1.0
    assert stats["layer1.0.bn1"].count == 5 * 16 * 16


def test_streamed_stats_equal_in_memory_stats_for_a_dataloader_of_pairs(tiny_cnn):
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(6)), batch_size=4)
    streamed = stream_channel_stats(tiny_cnn, loader, ["features.1", "features.3"])
    whole = fmapviz.feature_maps(tiny_cnn, images, ["features.1", "features.3"])
    for name in whole:
        direct = compute_channel_stats(whole[name])
        assert torch.allclose(streamed[name].mean, direct.mean, atol=1e-6)
        assert torch.allclose(streamed[name].max, direct.max)
        assert torch.allclose(streamed[name].fraction_positive, direct.fraction_positive)


def test_dataset_stats_leave_the_model_untouched_after_an_exception(tiny_cnn):
    tiny_cnn.train()
    before = model_state(tiny_cnn)

    def batches():
        yield torch.rand(2, 3, 16, 16)
        yield "not a batch"

    with pytest.raises(TypeError, match="batch"):
        stream_channel_stats(tiny_cnn, batches(), "features.1")
    assert_same_state(before, model_state(tiny_cnn))
    assert hook_count(tiny_cnn) == 0


def test_channel_stats_streams_a_folder_of_image_files():
    model = TinyCNN().eval()
    transform = T.Compose([T.Resize(24), T.CenterCrop(24), T.ToTensor()])
    stats = fmapviz.channel_stats(ASSETS, model, "features.1", transform=transform, batch_size=2)
    assert stats["features.1"].count == 3 * 24 * 24
    with pytest.raises(ValueError, match="layers="):
        fmapviz.channel_stats(ASSETS, model)


@real_weights
@pytest.mark.real_weights
def test_dead_channel_zeroed_on_purpose_is_found_in_real_mobilenet(mobilenet):
    broken = copy.deepcopy(mobilenet.model)
    with torch.no_grad():
        broken.features[7].conv[0][0].weight[10] = 0
        broken.features[7].conv[0][1].weight[10] = 0
        broken.features[7].conv[0][1].bias[10] = 0
    photos = [ASSETS / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    layer = "features.7.conv.0.2"
    healthy = fmapviz.channel_stats(photos, mobilenet.model, layer, transform=mobilenet.transform)[layer]
    hurt = fmapviz.channel_stats(photos, broken, layer, transform=mobilenet.transform)[layer]
    assert 10 not in healthy.dead_channels
    assert set(hurt.dead_channels) == set(healthy.dead_channels) | {10}
    assert hurt.max[10] == 0 and hurt.fraction_positive[10] == 0
