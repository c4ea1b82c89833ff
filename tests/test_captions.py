"""Pictures say what they show: class names in captions, titles whole (wrapped or shrunk, never cut)."""

from __future__ import annotations

import torch
from matplotlib.text import Text

import fmapviz
from fmapviz.plot.figures import annotated_grid


def _texts(figure: fmapviz.plot.Figure) -> list[str]:
    return [text.get_text() for text in figure.matplotlib.findobj(Text) if text.get_text()]


def test_a_class_visualization_is_captioned_with_the_class_name(tiny_cnn):
    categories = ["cat", "dog", "German short-haired pointer", "banana"]
    result = fmapviz.maximize(tiny_cnn, ["class:banana", "class:2"], categories=categories, steps=1, size=16)
    assert result.labels == ["class:3", "class:2"] and result.names == ["banana", "German short-haired pointer"]
    captions = _texts(fmapviz.show_gallery(result))
    assert any(text.startswith("banana  ") for text in captions)
    assert any(" ".join(text.split()).startswith("German short- haired pointer") for text in captions), captions
    assert not any("class:" in text for text in captions)
    unnamed = fmapviz.maximize(tiny_cnn, "class:3", steps=1, size=16)
    assert unnamed.names == ["class:3"] and any(
        text.startswith("class:3  ") for text in _texts(fmapviz.show_gallery(unnamed))
    )


def test_a_long_title_over_one_small_tile_is_wrapped_whole_not_cut():
    title = "my_research_network_v2: class visualizations"
    figure = annotated_grid(torch.rand(1, 3, 32, 32), ["banana  0.45"], title=title)
    shown = figure.matplotlib._suptitle.get_text()
    assert "…" not in shown and "".join(shown.split()) == "".join(title.split()), shown
    figure.matplotlib.canvas.draw()
    box = figure.matplotlib._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.matplotlib.bbox.width  # inside the figure
