"""Concepts view: Deep Feature Factorization drawn as a coloured overlay with labelled concepts."""

from __future__ import annotations

import torch

from ..engines.dff import Concepts
from ..plot.concepts import concept_colors, concept_overlay, concept_tile
from ..plot.figures import Figure, annotated_grid

__all__ = ["show_concepts"]


def show_concepts(
    concepts: Concepts,
    image: torch.Tensor,
    *,
    alpha: float = 0.6,
    title: str | None = None,
    tile_pixels: int = 160,
    font_size: float = 8.0,
) -> Figure:
    """Draw DFF concepts: per image, all concepts in one overlay, then each concept alone with its labels.

    Args:
        concepts: from :func:`fmapviz.engines.dff.deep_feature_factorization`.
        image: the display image(s) in [0, 1], ``(3, H, W)`` or ``(N, 3, H, W)``.
        alpha: colour opacity at full heat.
        title: figure title; default names the layer and the reconstruction error.
        tile_pixels, font_size: tile width on screen and caption size.

    Returns:
        A :class:`fmapviz.plot.Figure`.

    Raises:
        ValueError: the image count or size does not match the concepts.

    Example:
        >>> found = fmapviz.deep_feature_factorization(model, x, "features.18", categories=loaded.categories)
        >>> fmapviz.show_concepts(found, image.display).save("concepts.png")
        PosixPath('concepts.png')
    """
    photos = image.detach().float().cpu()
    photos = photos[None] if photos.dim() == 3 else photos
    heat = concepts.heatmaps.detach().float().cpu()
    if photos.shape[0] != heat.shape[0] or photos.shape[-2:] != heat.shape[-2:]:
        raise ValueError(
            f"image is {tuple(photos.shape)} but the concepts are for {heat.shape[0]} images of "
            f"{tuple(heat.shape[-2:])}; pass the display images the concepts were computed on."
        )
    count = heat.shape[1]
    colors = concept_colors(count)
    names = [
        ", ".join(concepts.label_names[k])
        if concepts.label_names
        else (", ".join(f"class {int(i)}" for i in concepts.labels[k]) if concepts.labels is not None else "")
        for k in range(count)
    ]
    tiles, titles = [], []
    for photo, maps in zip(photos, heat):
        tiles.append(concept_overlay(photo, maps, colors, alpha))
        titles.append("all concepts")
        for k in range(count):
            tiles.append(concept_tile(photo, maps[k], colors[k], alpha))
            titles.append(f"{k + 1}: {names[k]}".rstrip(": "))
    caption = title or f"Deep Feature Factorization of {concepts.layer} ({count} concepts, error {concepts.error:.2f})"
    return annotated_grid(
        torch.stack(tiles), titles, ncols=count + 1, title=caption, tile_pixels=tile_pixels, font_size=font_size
    )
