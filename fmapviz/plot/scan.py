"""Figures for dataset scans: a channel page and the dead/weak channel overview.

These draw what :func:`fmapviz.scan` computed and what :meth:`ScanResult.examples` read back;
they never run a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .colors import ArrayLike, to_uint8_image
from .figures import Figure, new_figure
from .maps import channel_stats_figure
from .mosaic import cell_origin, grid, grid_shape

if TYPE_CHECKING:
    from ..scan import ScanResult, TopExample

TILE = 112


def show_channel_page(
    scan_result: ScanResult,
    layer: str,
    channel: int,
    *,
    examples: Sequence[TopExample] | None = None,
    actmax_image: ArrayLike | None = None,
    k: int | None = None,
    ncols: int = 8,
    data: Any = None,
    transform: Any = None,
) -> Figure:
    """One channel on one page: its top-k receptive-field crops, the best image in context, its histogram.

    Panels: the activation-maximization image (when given), the strongest image with the
    window its maximum can see (a box), the histogram of each image's maximum over the whole
    dataset (fixed signed-log bins, the top-k cut marked), and the top-k crops captioned with
    rank and activation value.

    Args:
        scan_result: a :class:`~fmapviz.scan.ScanResult`.
        layer, channel: which unit.
        examples: from ``scan_result.examples(layer, channel)``; read now when omitted
            (``data``/``transform`` are passed on to it).
        actmax_image: (3,H,W) or (H,W,3) image in [0,1] or uint8, e.g. ``fmapviz.maximize(...).image``.
        k: show at most this many crops.
        ncols: crops per row.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`.

    Raises:
        KeyError, IndexError: no such layer or channel. ValueError: no examples to show.

    Example:
        >>> show_channel_page(result, "features.14", 37).save("channel37.png")
    """
    if examples is None:
        examples = scan_result.examples(layer, channel, data=data, transform=transform, k=k)
    examples = list(examples)[:k] if k else list(examples)
    if not examples:
        raise ValueError(f"No top examples for {layer} channel {channel}: was anything scanned?")
    stats = scan_result.stats(layer)
    counts, edges = scan_result.histogram(layer, channel)

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
    _draw_histogram(figure.add_subplot(layout[0, column + 1]), counts, edges, examples[-1].value, scan_result.topk)
    _draw_crops(figure.add_subplot(layout[1, :]), examples, ncols)
    figure.suptitle(
        f"{layer} channel {channel}: mean {float(stats.mean[channel]):.3g}, std {float(stats.std[channel]):.3g}, "
        f"max {float(stats.max[channel]):.3g}, {100 * float(stats.fraction_positive[channel]):.1f}% > 0 "
        f"over {scan_result.images} images",
        fontsize=11,
    )
    figure.subplots_adjust(left=0.03, right=0.97, top=0.9, bottom=0.02, wspace=0.25, hspace=0.25)
    return Figure(figure)


def show_dead_channels(scan_result: ScanResult, weak_ratio: float = 0.1, *, width_inches: float = 9.0) -> Figure:
    """Per layer, each channel's maximum over the dataset with dead (red) and weak (orange) channels marked.

    Args:
        scan_result: a :class:`~fmapviz.scan.ScanResult`.
        weak_ratio: a live channel is weak when its max is below this share of the layer's median max.
        width_inches: figure width.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`, one panel per scanned layer, counts in each title.

    Example:
        >>> show_dead_channels(result).save("dead.png")
    """
    return channel_stats_figure(list(scan_result.dead_channels(weak_ratio).values()), width_inches=width_inches)


def _show_image(axes: Any, image: np.ndarray) -> None:
    axes.imshow(image, interpolation="bilinear")
    axes.set_axis_off()


def _box(left: float, top: float, right: float, bottom: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(
        (left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, edgecolor="#ffdd00", linewidth=2
    )


def _draw_histogram(axes: Any, counts: torch.Tensor, edges: torch.Tensor, cut: float, topk: int) -> None:
    counts = counts.detach().cpu().numpy()
    edges = edges.detach().cpu().numpy()
    used = np.nonzero(counts)[0]
    low, high = max(used.min() - 1, 1), min(used.max() + 1, len(counts) - 2)
    lefts, rights = edges[low - 1 : high], edges[low : high + 1]
    axes.bar(lefts, counts[low : high + 1], width=rights - lefts, align="edge", color="#4a6fa5", edgecolor="white")
    axes.axvline(cut, color="#d62728", linestyle="--", linewidth=1, label=f"top-{topk} cut")
    if lefts[0] > 0:  # all maxima positive (the usual case): a log axis over the bins in use only
        axes.set_xscale("log")
    else:
        axes.set_xscale("symlog", linthresh=1e-3)
    axes.set_xlim(lefts[0], rights[-1])
    axes.set_xlabel("each image's maximum activation", fontsize=8)
    axes.set_ylabel("images", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    axes.set_title("histogram over the dataset", fontsize=9)


def _draw_crops(axes: Any, examples: Sequence[TopExample], ncols: int) -> None:
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
