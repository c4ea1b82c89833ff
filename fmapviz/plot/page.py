"""Report pages: a header (photo, model, top-5 bars) and panels stacked under section titles.

Drawing only: every input is a tensor, an array or an already drawn :class:`Figure`.
Section titles use the DejaVu Sans that matplotlib draws every panel with, so the
whole page shares one font family.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .colors import ArrayLike, to_uint8_image
from .figures import DPI, Figure, fit_caption, new_figure

MARGIN = 28
TITLE_PIXELS = 22
MAX_WIDTH = 1500


@lru_cache(maxsize=4)
def _font(size: int, bold: bool):
    from matplotlib import font_manager
    from PIL import ImageFont

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size)


def header_figure(
    image: ArrayLike,
    lines: Sequence[str],
    predictions: Sequence[tuple[str, float]],
    *,
    width_pixels: int = 1000,
) -> Figure:
    """The report header: the model's input image, a few lines of facts and the top predictions as bars.

    The facts are wrapped to the room between the photo and the bars' class names, so a long
    model, file or class name never runs into the chart.

    Args:
        image: (3,H,W) or (H,W,3) in [0,1] or uint8: the display image the model saw.
        lines: facts to list (model, weights, image file, ...); the first is drawn as the title.
        predictions: (class name, probability) pairs, best first.
        width_pixels: figure width.

    Returns:
        A :class:`Figure`.
    """
    pixels = to_uint8_image(image)
    width, height = width_pixels / DPI, 2.6
    figure = new_figure(width, height)
    photo_width = height * 0.92 * pixels.shape[1] / pixels.shape[0]
    photo = figure.add_axes((0.1 / width, 0.04, photo_width / width, 0.92))
    photo.imshow(pixels)
    photo.set_axis_off()
    text_left = 0.1 + photo_width + 0.25
    text_right = width - 0.2
    if predictions:
        names = [fit_caption(name, 2.2 * DPI, 9, max_lines=1) for name, _ in predictions][::-1]
        values = [probability for _, probability in predictions][::-1]
        label_width = 0.62 * 9 / 72 * max(len(name) for name in names) + 0.15
        bars_width = min(2.6, 0.3 * width)
        bars_left = width - 0.35 - bars_width
        bars = figure.add_axes((bars_left / width, 0.12, bars_width / width, 0.72))
        bars.barh(range(len(values)), values, color="#3b6ea5", height=0.65)
        bars.set_yticks(range(len(values)), names, fontsize=9)
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=8)
        for position, value in enumerate(values):
            bars.text(min(value + 0.02, 0.86), position, f"{value:.1%}", va="center", fontsize=8.5)
        bars.set_title("top predictions (softmax)", fontsize=9.5, loc="left")
        for side in ("top", "right"):
            bars.spines[side].set_visible(False)
        text_right = bars_left - label_width - 0.3
    room = max(text_right - text_left, 0.5) * DPI
    top = 0.9 * height
    for index, line in enumerate(lines):
        title = index == 0
        size = 15 if title else 9.5
        text = fit_caption(line, room, size * (1.1 if title else 1.0), max_lines=2)  # bold is wider
        style = {"weight": "bold", "color": "0.1"} if title else {"color": "0.2"}
        figure.text(text_left / width, top / height, text, fontsize=size, va="top", **style)
        top -= (text.count("\n") + 1) * size * 1.35 / 72 + 0.12
    return Figure(figure)


def compose_page(sections: Sequence[tuple[str | None, Figure]], *, max_width: int = MAX_WIDTH) -> Figure:
    """Stack figures on one white page, each under its section title, left-aligned on a common margin.

    Panels wider than ``max_width`` are scaled down to it; narrower ones keep their pixels
    (and so their font sizes).

    Args:
        sections: (title or None, figure) pairs, top to bottom.
        max_width: the widest a panel may be, in pixels.

    Returns:
        A :class:`Figure` wrapping the page image.

    Raises:
        ValueError: no sections.
    """
    from PIL import Image, ImageDraw

    if not sections:
        raise ValueError("compose_page needs at least one (title, figure) section.")
    panels = []
    for title, figure in sections:
        panel = Image.fromarray(figure.image).convert("RGB")
        if panel.width > max_width:
            panel = panel.resize((max_width, round(panel.height * max_width / panel.width)), Image.Resampling.LANCZOS)
        panels.append((title, panel))
    width = max(panel.width for _, panel in panels) + 2 * MARGIN
    title_band = TITLE_PIXELS + 18
    height = MARGIN + sum(panel.height + (title_band if title else 0) + MARGIN for title, panel in panels)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    top = MARGIN
    for title, panel in panels:
        if title:
            draw.text((MARGIN, top), title, fill=(30, 30, 30), font=_font(TITLE_PIXELS, True))
            rule = top + TITLE_PIXELS + 8
            draw.line((MARGIN, rule, width - MARGIN, rule), fill=(200, 200, 200), width=1)
            top += title_band
        page.paste(panel, (MARGIN, top))
        top += panel.height + MARGIN
    return Figure(np.asarray(page))
