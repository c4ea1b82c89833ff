"""Plot core: pixels land where promised, colours match matplotlib, figures save what they show."""

from __future__ import annotations

import io
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import fmapviz
from fmapviz.plot import Figure, annotated_grid, apply_colormap, cell_origin, grid, overlay
from fmapviz.plot.maps import channel_grid, overlay_tiles
from fmapviz.plot.page import header_figure
from fmapviz.plot.scan import channel_page_figure


def test_grid_puts_tile_k_at_its_cell_and_pads_the_rest():
    tiles = torch.arange(7, dtype=torch.uint8).mul(30).view(7, 1, 1).expand(7, 5, 4).contiguous()
    mosaic = grid(tiles, ncols=3, padding=2, pad_value=255)
    assert mosaic.shape == (3 * 7 + 2, 3 * 6 + 2)
    for k in range(7):
        top, left = cell_origin(k, (5, 4), 3, 2)
        assert (mosaic[top : top + 5, left : left + 4] == 30 * k).all()
    top, left = cell_origin(7, (5, 4), 3, 2)  # empty cells in the last row stay padding
    assert (mosaic[top : top + 5, left:] == 255).all()
    assert (mosaic[:2] == 255).all() and (mosaic[:, :2] == 255).all()


def test_grid_colours_gray_tiles_with_the_lut_and_upscales():
    tiles = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    mosaic = grid(tiles, ncols=2, padding=1, cmap="viridis", upscale=3)
    viridis = np.round(np.asarray(matplotlib.colormaps["viridis"]([0.0, 1.0]))[:, :3] * 255)
    assert mosaic.shape == (5, 9, 3)
    assert (mosaic[1:4, 1:4] == viridis[0]).all() and (mosaic[1:4, 5:8] == viridis[1]).all()


def test_grid_keeps_rgb_tiles_in_rgb_order():
    tiles = torch.zeros(2, 3, 2, 2)
    tiles[0, 0] = 1.0  # red
    tiles[1, 2] = 1.0  # blue
    mosaic = grid(tiles, ncols=2, padding=0)
    assert mosaic[0, 0].tolist() == [255, 0, 0] and mosaic[0, 2].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    ("kwargs", "word"), [({"ncols": 0}, "ncols"), ({"padding": -1}, "padding"), ({"upscale": 0}, "upscale")]
)
def test_grid_errors_name_the_bad_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        grid(torch.rand(4, 3, 3), **kwargs)
    with pytest.raises(ValueError, match="tiles"):
        grid(torch.rand(4, 5, 3, 3))


def test_apply_colormap_matches_matplotlib_and_survives_nan_and_inf():
    values = torch.tensor([[0.0, 0.5, 1.0], [float("nan"), float("inf"), -float("inf")]])
    coloured = apply_colormap(values, "magma")
    expected = np.round(np.asarray(matplotlib.colormaps["magma"](np.linspace(0, 1, 256)))[:, :3] * 255)
    assert coloured.dtype == np.uint8 and coloured.shape == (2, 3, 3)
    assert coloured[0, 0].tolist() == expected[0].tolist()
    assert coloured[0, 1].tolist() == expected[128].tolist()
    assert coloured[0, 2].tolist() == expected[255].tolist()
    assert coloured[1].tolist() == [expected[0].tolist(), expected[255].tolist(), expected[0].tolist()]
    diverging = apply_colormap(torch.tensor([-2.0, 0.0, 2.0]), "RdBu_r", vmin=-2, vmax=2)
    assert diverging[0, 2] > diverging[0, 0] and diverging[2, 0] > diverging[2, 2]
    with pytest.raises(ValueError, match="cmap"):
        apply_colormap(values, "not-a-colormap")


def test_overlay_blends_with_alpha_and_resizes_the_map_to_the_photo():
    photo = torch.full((3, 8, 6), 0.5)
    heat = torch.zeros(4, 3)
    heat[:2] = 1.0  # top half hot
    only_photo = overlay(photo, heat, "gray", alpha=0.0)
    only_map = overlay(photo, heat, "gray", alpha=1.0)
    assert only_photo.shape == (8, 6, 3) and (only_photo == 128).all()
    assert (only_map[:3] == 255).all() and (only_map[-3:] == 0).all()
    half = overlay(photo, heat, "gray", alpha=0.5)
    assert half[0, 0, 0] == round(0.5 * 128 + 0.5 * 255)
    with pytest.raises(ValueError, match="alpha"):
        overlay(photo, heat, alpha=1.5)
    tiles = overlay_tiles(photo, torch.stack([heat.new_ones(8, 6), heat.new_zeros(8, 6)]), "gray", 1.0)
    assert tiles.shape == (2, 8, 6, 3) and (tiles[0] == 255).all() and (tiles[1] == 0).all()


def test_figure_saves_and_displays_the_same_pixels(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    figure = Figure(image)
    saved = np.asarray(Image.open(figure.save(tmp_path / "a.png")))
    shown = np.asarray(Image.open(io.BytesIO(figure._repr_png_())))
    assert (saved == image).all() and (shown == image).all()
    with pytest.raises(TypeError, match="Figure wraps"):
        Figure("not an image")


def test_annotated_grid_is_one_imshow_with_a_title_per_tile_and_a_real_colour_bar(tmp_path):
    figure = annotated_grid(
        torch.rand(12, 7, 7), [f"ch {i}" for i in range(12)], ncols=4, cmap="viridis", colorbar=(-1.5, 3.0)
    )
    axes = figure.matplotlib.axes
    assert len(axes[0].images) == 1  # one imshow for all twelve tiles
    assert [t.get_text() for t in axes[0].texts] == [f"ch {i}" for i in range(12)]
    colorbar_limits = axes[1].get_ylim()
    assert colorbar_limits == pytest.approx((-1.5, 3.0))
    saved = np.asarray(Image.open(figure.save(tmp_path / "g.png")).convert("RGB"))
    assert saved.shape == figure.image.shape and (saved == figure.image).all()
    with pytest.raises(ValueError, match="titles"):
        annotated_grid(torch.rand(3, 4, 4), ["only one"])


def test_channel_grid_raw_mode_skips_matplotlib_and_matches_grid():
    values = torch.rand(10, 6, 6)
    figure = channel_grid(values, annotate=False, cmap="gray", ncols=5)
    assert figure.matplotlib is None
    expected = grid(values, 5, 2, 255, cmap="gray").astype(int)
    assert np.abs(figure.image.astype(int) - expected).max() <= 1  # the fast path uses 255 palette levels


def _boxes(figure, texts):
    renderer = figure.canvas.get_renderer()
    return [text.get_window_extent(renderer) for text in texts if text.get_text()]


def test_grid_captions_wrap_inside_their_tile_and_never_reach_the_neighbour():
    captions = ["German short-haired pointer  88.2", "n02088094_Afghan_hound.JPEG  1.5", "tabby  3.1"]
    figure = annotated_grid(torch.rand(3, 3, 64, 64), captions, ncols=3, tile_pixels=128)
    matplotlib_figure = figure.matplotlib
    axes = matplotlib_figure.axes[0]
    matplotlib_figure.canvas.draw()
    for index, box in enumerate(_boxes(matplotlib_figure, axes.texts)):
        top, left = cell_origin(index, (128, 128), 3, 2)
        tile_left, _ = axes.transData.transform((left - 0.5, 0))
        tile_right, _ = axes.transData.transform((left + 128 - 0.5, 0))
        assert tile_left - 1 <= box.x0 and box.x1 <= tile_right + 1, (captions[index], box, tile_left, tile_right)
    assert axes.texts[0].get_text() == "German short-\nhaired pointer\n88.2"  # the value keeps its own line


def test_header_text_never_runs_into_the_prediction_bars():
    long_title = "my_research_network_with_a_long_name.py:build_the_model · random weights"
    predictions = [("German short-haired pointer", 0.61), ("Chesapeake Bay retriever", 0.2), ("tabby", 0.1)]
    figure = header_figure(torch.rand(3, 64, 64), [long_title, "image: " + "x" * 120 + ".png"], predictions)
    matplotlib_figure = figure.matplotlib
    matplotlib_figure.canvas.draw()
    bars = matplotlib_figure.axes[1]
    labels_left = min(box.x0 for box in _boxes(matplotlib_figure, bars.get_yticklabels()))
    facts = _boxes(matplotlib_figure, matplotlib_figure.texts)
    assert len(facts) == 2 and all(box.x1 < labels_left for box in facts)
    assert all(0 <= box.x0 and box.y0 >= 0 for box in facts)


def test_width_pixels_makes_grids_fill_a_page():
    labels = ["features.13\n96×14×14", "features.18\n1280×7×7"]
    figure = annotated_grid(torch.rand(14, 3, 32, 32), [f"ch {i}" for i in range(14)], ncols=7, row_labels=labels,
                            width_pixels=1400)  # fmt: skip
    assert 1400 - 7 <= figure.image.shape[1] <= 1400
    maps = {"a": torch.rand(1, 8, 7, 7), "b": torch.rand(1, 16, 4, 4)}
    hierarchy = fmapviz.show_hierarchy(maps, torch.rand(1, 3, 28, 28), top=4, width_pixels=1000)
    assert 1000 - 5 <= hierarchy.image.shape[1] <= 1000


def test_channel_page_histogram_counts_are_whole_and_tick_labels_do_not_collide():
    crop = np.full((20, 20, 3), 128, dtype=np.uint8)
    examples = [
        SimpleNamespace(
            image=crop,
            crop=crop,
            window=(0, 0, 9, 9),
            position=(1, 1),
            value=2.0 - k / 10,
            rank=k,
            source=f"image_{k}.png",
        )  # fmt: skip
        for k in range(4)
    ]
    edges = np.geomspace(0.01, 100, 41)
    counts = np.zeros(40)
    counts[[15, 17, 18, 22]] = [1, 2, 1, 1]  # few images: a free y axis would tick at 0.25 steps
    figure = channel_page_figure(examples, counts, edges, "features.7 channel 3", topk=4).matplotlib
    figure.canvas.draw()
    histogram = figure.axes[1]
    assert all(float(tick).is_integer() for tick in histogram.get_yticks())
    ticks = sorted(_boxes(figure, histogram.get_xticklabels()), key=lambda box: box.x0)
    ticks = [box for box in ticks if histogram.bbox.x0 - 5 <= box.x0 <= histogram.bbox.x1]
    assert len(ticks) >= 2 and all(first.x1 < second.x0 for first, second in zip(ticks, ticks[1:]))
    (xlabel,) = _boxes(figure, [histogram.xaxis.label])
    (crops_title,) = _boxes(figure, [figure.axes[2].title])
    assert xlabel.y0 > crops_title.y1  # the axis label sits above the crops' title, not on it


def test_a_title_wider_than_the_grid_wraps_inside_the_figure():
    title = "mobilenet_v2 features.7 (ReLU6 in the block, 14×14): top 14 channels by max, on the photo"
    figure = annotated_grid(torch.rand(4, 3, 32, 32), ["a", "b", "c", "d"], ncols=4, title=title).matplotlib
    figure.canvas.draw()
    (box,) = _boxes(figure, [figure._suptitle])
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
    assert "\n" in figure._suptitle.get_text() and figure._suptitle.get_text().startswith("mobilenet_v2 features.7")
