"""Saliency view: maps drawn over the display image, one row per image, one column per method and target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..engines.saliency import SaliencyResult, View
from ..plot.colors import rgb
from ..plot.figures import Figure, annotated_grid
from ..plot.saliency import DIVERGING, SEQUENTIAL, image_tile, robust_peak, saliency_overlay

__all__ = ["show_saliency"]


def show_saliency(
    results: SaliencyResult | Sequence[SaliencyResult] | Mapping[str, SaliencyResult],
    image: torch.Tensor,
    *,
    view: View | None = None,
    scale: Literal["per_map", "shared"] = "per_map",
    alpha: float = 0.5,
    title: str | None = None,
    tile_pixels: int = 160,
    font_size: float = 8.0,
    width_pixels: int | None = None,
) -> Figure:
    """Overlay saliency maps on the image, side by side: rows are images, columns are methods (and targets).

    A result of several layers (``saliency(..., layers=[...])``) gets one column per layer, captioned with it.

    Signed views (Integrated Gradients, input×gradient) use a diverging colormap centred on 0, blue
    negative and red positive; ``"abs"`` and ``"positive"`` views use a sequential map from 0.

    Args:
        results: one :class:`SaliencyResult`, a list of them, or a dict caption -> result (same images).
        image: the display image(s) in [0, 1], (3,H,W) or (N,3,H,W), e.g. ``LoadedImage.display``.
        view: a view for every map (a key of :data:`fmapviz.engines.saliency.VIEWS`: ``"signed"``, ``"abs"``,
            ``"positive"``, ``"max_abs"``, ``"sum_abs"``); default: each method's own view.
        scale: ``"per_map"``: each map uses its full colour range; ``"shared"``: one range for all maps
            of the figure (so strengths compare across methods), with a colour bar. Ranges end at the
            99.5th percentile of the absolute values, so a few outlier pixels do not wash out the map.
        alpha: heat-map opacity over the photo.
        title: figure title.
        tile_pixels, font_size: tile width on screen and caption size.
        width_pixels: make the figure this wide (tiles resized to fill it), e.g. a report page's width.

    Returns:
        A :class:`fmapviz.plot.Figure` (``.save(path)``, shown inline in Jupyter).

    Raises:
        ValueError: results of different batch sizes, an image that does not match, or a bad ``scale``.

    Example:
        >>> results = [fmapviz.saliency(model, x, m) for m in ("gradient", "input_x_gradient", "gradcam")]
        >>> fmapviz.show_saliency(results, image.display, scale="shared").save("saliency.png")
        PosixPath('saliency.png')
    """
    if scale not in ("per_map", "shared"):
        raise ValueError(f"scale must be 'per_map' or 'shared', not {scale!r}.")
    named = _named_results(results)
    photos = image.detach().float().cpu()
    photos = rgb(photos[None] if photos.dim() == 3 else photos)
    batch = next(iter(named.values())).maps.shape[0]
    if photos.dim() != 4 or photos.shape[0] not in (1, batch):
        raise ValueError(f"image must be (3,H,W) or (N,3,H,W) with N = {batch}; got {tuple(image.shape)}.")
    columns = []  # (caption, view, maps (N,H,W) on cpu)
    for caption, result in (part for item in named.items() for part in _per_layer(*item)):
        shown = view or result.view
        values = result.view_maps(shown).detach().float().cpu()
        if values.shape[0] != batch:
            raise ValueError(f"{caption} has {values.shape[0]} images, others {batch}; pass results of one batch.")
        for k in range(values.shape[1]):
            columns.append((_caption(caption, result, k), shown, values[:, k]))
    shared = max(robust_peak(maps) for _, _, maps in columns) if scale == "shared" else None
    tiles, titles = [], []
    for row in range(batch):
        photo = photos[min(row, photos.shape[0] - 1)]
        tiles.append(image_tile(photo.permute(1, 2, 0).numpy()))
        titles.append("image" if batch == 1 else f"image {row}")
        for caption, shown, maps in columns:
            tiles.append(saliency_overlay(photo, maps[row], shown == "signed", alpha, shared))
            titles.append(caption)
    views = {shown for _, shown, _ in columns}
    colorbar = cmap = None
    if shared is not None and len(views) == 1:
        signed = views == {"signed"}
        colorbar, cmap = ((-shared, shared) if signed else (0.0, shared)), (DIVERGING if signed else SEQUENTIAL)
    return annotated_grid(
        torch.stack(tiles),
        titles,
        ncols=len(columns) + 1,
        title=title,
        tile_pixels=tile_pixels,
        font_size=font_size,
        width_pixels=width_pixels,
        colorbar=colorbar,
        colorbar_cmap=cmap,
        colorbar_label="saliency (shared scale)" if colorbar else "",
    )


def _named_results(results: Any) -> dict[str, SaliencyResult]:
    if isinstance(results, SaliencyResult):
        return {results.method: results}
    if isinstance(results, Mapping):
        return dict(results)
    named = {}
    for result in results:
        key = result.method if result.method not in named else f"{result.method} ({len(named)})"
        named[key] = result
    if not named:
        raise ValueError("results is empty; pass at least one SaliencyResult.")
    return named


def _per_layer(caption: str, result: SaliencyResult) -> list[tuple[str, SaliencyResult]]:
    """A result of several layers as one result per layer, its caption naming the layer; else the result."""
    if len(result.layer_maps) < 2:
        return [(caption, result)]
    return [(f"{caption} {layer}", result.for_layer(layer)) for layer in result.layer_maps]


def _caption(caption: str, result: SaliencyResult, k: int) -> str:
    if result.target_names is not None:
        return f"{caption}\n{result.target_names[0][k]}"
    if result.target is not None:
        return f"{caption}\nclass {int(result.target[0, k])}"
    return f"{caption}\n{result.target_label}"
