"""Drawing primitives for dataset scans: one channel's page from its examples and histogram.

Everything arrives as arrays and plain records (the view :func:`fmapviz.show_channel_page` reads
them from a scan); nothing here runs a model or reads a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .colors import ArrayLike, to_numpy, to_uint8_image
from .figures import Figure, new_figure
from .mosaic import cell_origin, grid, grid_shape

TILE = 112


def channel_page_figure(
    examples: Sequence[Any],
    counts: ArrayLike,
    edges: ArrayLike,
    title: str,
    *,
    topk: int,
    actmax_image: ArrayLike | None = None,
    ncols: int = 8,
) -> Figure:
    """Draw one channel's page: the actmax image (optional), the best image with its window, a histogram, crops.

    Args:
        examples: best first; each has ``image`` and ``crop`` ((3,h,w) in [0,1] or uint8), ``window``
            (top, left, bottom, right), ``position`` (row, col), ``value``, ``rank`` and ``source``
            (:class:`fmapviz.engines.scan.TopExample`).
        counts, edges: the histogram of each image's maximum (``len(edges) == len(counts) + 1``).
        title: the page title.
        topk: how many top examples the scan kept (labels the cut on the histogram).
        actmax_image: (3,H,W) or (H,W,3) image in [0,1] or uint8.
        ncols: crops per row.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`.

    Raises:
        ValueError: no examples.
    """
    if not examples:
        raise ValueError("channel_page_figure needs at least one example.")
    panels = 2 + (actmax_image is not None)
    rows, columns = grid_shape(len(examples), ncols)
    width = 11.0
    crops_height = width * rows / columns * 1.12
    figure = new_figure(width, 3.0 + crops_height + 0.5)
    top_band = 3.0 / figure.get_figheight()
    crops_band = crops_height / figure.get_figheight()
    layout = figure.add_gridspec(
        2, panels + 1, height_ratios=[top_band, crops_band], width_ratios=[1] * (panels - 1) + [2.2, 0.01]
    )
    column = 0
    if actmax_image is not None:
        _show_image(figure.add_subplot(layout[0, column]), to_uint8_image(actmax_image, "actmax_image"))
        figure.axes[-1].set_title("activation maximization", fontsize=9)
        column += 1
    best = examples[0]
    axes = figure.add_subplot(layout[0, column])
    _show_image(axes, to_uint8_image(best.image, "image"))
    top, left, bottom, right = best.window
    axes.add_patch(_box(left, top, right, bottom))
    axes.set_title(f"best image, window seen by ({best.position[0]},{best.position[1]})", fontsize=9)
    _draw_histogram(figure.add_subplot(layout[0, column + 1]), to_numpy(counts), to_numpy(edges), examples[-1].value,
                    topk)  # fmt: skip
    _draw_crops(figure.add_subplot(layout[1, :]), examples, ncols)
    figure.suptitle(title, fontsize=11)
    figure.subplots_adjust(left=0.03, right=0.97, top=0.9, bottom=0.02, wspace=0.25, hspace=0.45)
    return Figure(figure)


def _show_image(axes: Any, image: np.ndarray) -> None:
    axes.imshow(image, interpolation="bilinear")
    axes.set_axis_off()


def _box(left: float, top: float, right: float, bottom: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(
        (left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, edgecolor="#ffdd00", linewidth=2
    )


def _draw_histogram(axes: Any, counts: np.ndarray, edges: np.ndarray, cut: float, topk: int) -> None:
    used = np.nonzero(counts)[0]
    low, high = max(used.min() - 1, 1), min(used.max() + 1, len(counts) - 2)
    lefts, rights = edges[low - 1 : high], edges[low : high + 1]
    axes.bar(lefts, counts[low : high + 1], width=rights - lefts, align="edge", color="#4a6fa5", edgecolor="white")
    axes.axvline(cut, color="#d62728", linestyle="--", linewidth=1, label=f"top-{topk} cut")
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    if lefts[0] > 0:  # all maxima positive (the usual case): a log axis over the bins in use only
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    else:
        axes.set_xscale("symlog", linthresh=1e-3)
    # one plain label per major tick ("0.2", "1", "5"): no 10^x mixed with minor-tick labels that collide
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # image counts are whole numbers
    axes.set_xlim(lefts[0], rights[-1])
    axes.set_xlabel("each image's maximum activation", fontsize=8)
    axes.set_ylabel("images", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    axes.set_title("histogram over the dataset", fontsize=9)


def _draw_crops(axes: Any, examples: Sequence[Any], ncols: int) -> None:
    tiles = np.stack([_letterbox(to_uint8_image(example.crop, "crop"), TILE) for example in examples])
    columns = min(ncols, len(examples))
    padding, band = 4, 16
    tiles = np.pad(tiles, ((0, 0), (band, 0), (0, 0), (0, 0)), constant_values=255)
    axes.imshow(grid(tiles, columns, padding), interpolation="nearest")
    axes.set_axis_off()
    for index, example in enumerate(examples):
        top, left = cell_origin(index, (TILE + band, TILE), columns, padding)
        name = str(example.source).rsplit("/", 1)[-1]
        name = name if len(name) <= 18 else name[:17] + "…"
        axes.text(
            left + TILE / 2,
            top + band / 2,
            f"#{example.rank + 1} {example.value:.3g}",
            ha="center",
            va="center",
            fontsize=7,
        )
        axes.text(
            left + 2,
            top + band + TILE - 3,
            name,
            ha="left",
            va="bottom",
            fontsize=5.5,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.45, "pad": 0.5, "linewidth": 0},
        )
    axes.set_title("top images: what the channel's maximum can see (receptive-field crops)", fontsize=9)


def _letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Fit an (h,w,3) uint8 crop into a size×size tile, keeping its aspect ratio, on gray."""
    from PIL import Image

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    height, width = image.shape[:2]
    scale = size / max(height, width)
    resized = Image.fromarray(image).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC
    )
    tile = np.full((size, size, 3), 200, dtype=np.uint8)
    top, left = (size - resized.height) // 2, (size - resized.width) // 2
    tile[top : top + resized.height, left : left + resized.width] = np.asarray(resized)
    return tile
