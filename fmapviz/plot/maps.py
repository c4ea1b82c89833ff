"""Feature-map figures: channel mosaics, photo overlays, the layer hierarchy and channel-health plots.

Inputs are already chosen and normalized by :mod:`fmapviz.engines.channels` (values in
[0, 1], see :mod:`fmapviz.plot.colors` for value ranges); nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .colors import ArrayLike, colormap_lut, lut_indices, to_numpy, to_uint8_image
from .figures import Figure, annotated_grid, new_figure
from .mosaic import grid, indexed_mosaic


def channel_grid(
    values01: ArrayLike,
    labels: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    cmap: str | object = "viridis",
    value_range: tuple[float, float] | None = None,
    colorbar_label: str = "activation",
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    annotate: bool = True,
    padding: int = 2,
    pad_value: int = 255,
) -> Figure:
    """Draw maps (T,H,W) in [0,1] (or ready uint8 RGB tiles (T,H,W,3)) as one mosaic.

    Args:
        values01: the maps, or coloured tiles such as :func:`overlay_tiles` output.
        labels: a caption per tile (annotated figures only).
        ncols: columns; default near-square.
        cmap: colormap for one-channel maps.
        value_range: the real values drawn as 0 and 1, shown on a colour bar.
        colorbar_label, title, row_labels: annotations.
        annotate: False gives the fast raw mosaic (PIL, no matplotlib): no text, no colour bar.
        padding, pad_value: space between tiles and its gray level.

    Returns:
        A :class:`Figure`.

    Example:
        >>> channel_grid(torch.rand(64, 7, 7), annotate=False).save("maps.png")
    """
    tiles = to_numpy(values01, "values01")
    if tiles.ndim == 4 and tiles.shape[-1] == 3 and tiles.dtype == np.uint8:
        colour_map = None
    else:
        colour_map = cmap
    if not annotate and colour_map is not None and (tiles.ndim == 3 or (tiles.ndim == 4 and tiles.shape[1] == 1)):
        return Figure(indexed_mosaic(tiles, ncols, padding, pad_value, colour_map))
    if not annotate:
        return Figure(grid(tiles, ncols, padding, pad_value, cmap=colour_map))
    return annotated_grid(
        tiles,
        labels,
        ncols=ncols,
        padding=padding,
        pad_value=pad_value,
        cmap=colour_map,
        colorbar=value_range,
        colorbar_label=colorbar_label,
        colorbar_cmap=cmap,
        title=title,
        row_labels=row_labels,
    )


def overlay_tiles(image: ArrayLike, heat01: ArrayLike, cmap: str | object = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend each of T maps (T,H,W) in [0,1] over one photo (3,H,W) → uint8 (T,H,W,3).

    The maps must already have the photo's size (``fmapviz.engines.channels.upsample``).

    Raises:
        ValueError: sizes differ or alpha is outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    photo = to_uint8_image(image).astype(np.float32)
    heat = lut_indices(heat01)
    if heat.ndim == 2:
        heat = heat[None]
    if heat.ndim != 3 or heat.shape[1:] != photo.shape[:2]:
        raise ValueError(
            f"heat01 must be (T,H,W) with the image's size {photo.shape[:2]}, got {tuple(heat.shape)}; upsample first."
        )
    coloured = colormap_lut(cmap)[heat].astype(np.float32)
    return (photo * (1.0 - alpha) + coloured * alpha + 0.5).astype(np.uint8)


def channel_stats_figure(stats: Sequence[Any], *, width_inches: float = 9.0) -> Figure:
    """Plot per-channel health, one panel per layer: each channel's max (a vertical line), dead and weak marked.

    Args:
        stats: objects with ``layer``, ``max``, ``fraction_positive``, ``dead``, ``weak``,
            ``weak_ratio`` and ``weak_threshold`` (``fmapviz.engines.channels.ChannelStats``).

    Returns:
        A :class:`Figure`: red lines are dead channels (never positive), orange weak ones,
        the dashed line is the weak threshold; the gray curve (dots beyond 128 channels) is the
        fraction of positive values.

    Raises:
        ValueError: no statistics given.
    """
    if not stats:
        raise ValueError("stats is empty; pass the result of fmapviz.channel_stats(...).")
    figure = new_figure(width_inches, 2.1 * len(stats) + 0.3)
    panels = figure.subplots(len(stats), 1, squeeze=False)[:, 0]
    for axes, layer in zip(panels, stats):
        maxima = to_numpy(layer.max).astype(np.float64)
        dead, weak = to_numpy(layer.dead), to_numpy(layer.weak)
        positions = np.arange(maxima.size)
        colours = np.where(
            dead[:, None], [[0.85, 0.1, 0.1]], np.where(weak[:, None], [[1.0, 0.55, 0.0]], [[0.2, 0.35, 0.6]])
        )
        top = max(float(maxima.max()), 1e-12)
        shown = np.where(dead, top * 0.04, np.clip(maxima, 0, None))
        axes.vlines(positions, 0, shown, colors=colours, linewidth=max(0.4, min(3.0, 300 / maxima.size)))
        axes.axhline(layer.weak_threshold, color="orange", linestyle="--", linewidth=0.8)
        axes.set_xlim(-0.5, maxima.size - 0.5)
        axes.set_ylim(0, top * 1.05)
        axes.set_ylabel("max activation", fontsize=8)
        axes.tick_params(labelsize=7)
        share = axes.twinx()
        fraction = to_numpy(layer.fraction_positive)
        if maxima.size <= 128:
            share.plot(positions, fraction, color="0.45", linewidth=0.7)
        else:  # a line through hundreds of channels is a scribble: dots
            share.plot(positions, fraction, color="0.3", linestyle="none", marker=".", markersize=1.5)
        share.set_ylim(0, 1.02)
        share.set_ylabel("fraction > 0", fontsize=8, color="0.35")
        share.tick_params(labelsize=7, colors="0.35")
        axes.set_title(
            f"{layer.layer or 'maps'}: {maxima.size} channels, {int(dead.sum())} dead (red, never > 0), "
            f"{int(weak.sum())} weak (orange, max < {layer.weak_ratio:g} × median max)",
            fontsize=9,
        )
    panels[-1].set_xlabel("channel", fontsize=8)
    figure.tight_layout()
    return Figure(figure)
