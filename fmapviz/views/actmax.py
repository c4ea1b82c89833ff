"""Activation-maximization view: a gallery, one tile per channel, captioned with its index and activation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..plot.figures import Figure, annotated_grid

__all__ = ["show_gallery"]


def show_gallery(
    result: Any,
    *,
    extra: torch.Tensor | Sequence[torch.Tensor] | None = None,
    names: Sequence[str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    tile_pixels: int = 128,
    font_size: float = 8.0,
    width_pixels: int | None = None,
) -> Figure:
    """Draw the images of :func:`fmapviz.maximize` in a grid, each captioned with its channel and final activation.

    Args:
        result: an :class:`~fmapviz.engines.actmax.ActMaxResult` (its images, labels, channels, final_activation).
        extra: per-image extra pictures in [0, 1], e.g. the top-activating crops of each channel from a scan:
            (N,K,3,h,w) or a list of N (K,3,h,w). Each image then gets a row: the visualization, then its K extras.
        names: captions to use instead of channel indices (e.g. class names).
        ncols: columns (without ``extra``); default near-square.
        title: figure title.
        tile_pixels: on-screen tile width to aim for (small images are magnified by a whole factor).
        font_size: caption size in points.
        width_pixels: make the figure this wide (tiles resized to fill it), e.g. a report page's width.

    Returns:
        A :class:`fmapviz.plot.Figure` (``.save(path)``, shown inline in Jupyter).

    Raises:
        ValueError: ``names`` or ``extra`` do not have one entry per image.

    Example:
        >>> result = fmapviz.maximize(model, "features.10", channels=range(4), size=64, steps=8, progress=False)
        >>> fmapviz.show_gallery(result, title="features.10").save("gallery.png")
        PosixPath('gallery.png')
    """
    images = result.images.detach().float().clamp(0, 1)
    count = images.shape[0]
    if names is not None and len(names) != count:
        raise ValueError(f"names has {len(names)} entries for {count} images; pass one name per image.")
    heads = list(names) if names is not None else _default_names(result)
    values = result.final_activation.detach().flatten().tolist()
    captions = [f"{head}  {value:.3g}" for head, value in zip(heads, values)]
    if extra is None:
        return annotated_grid(images, captions, ncols=ncols, title=title, tile_pixels=tile_pixels, font_size=font_size,
                              width_pixels=width_pixels)  # fmt: skip
    rows = [torch.as_tensor(row).detach().float() for row in extra]
    if len(rows) != count:
        raise ValueError(f"extra has {len(rows)} entries for {count} images; pass one (K,3,h,w) stack per image.")
    per_row = max(row.shape[0] for row in rows)
    size = tuple(images.shape[-2:])
    tiles, titles = [], []
    for image, caption, row in zip(images, captions, rows):
        resized = (
            F.interpolate(row.to(image.device), size=size, mode="bilinear", align_corners=False) if len(row) else row
        )
        blanks = torch.ones(per_row - len(row), 3, *size, device=image.device)
        tiles += [image[None], resized.clamp(0, 1), blanks]
        titles += [caption] + [f"top {k + 1}" for k in range(len(row))] + [""] * (per_row - len(row))
    return annotated_grid(
        torch.cat(tiles), titles, ncols=per_row + 1, title=title, tile_pixels=tile_pixels, font_size=font_size,
        width_pixels=width_pixels,
    )  # fmt: skip


def _default_names(result: Any) -> list[str]:
    channels = getattr(result, "channels", None)
    if channels is not None:
        return [f"{index}" for index in channels]
    return list(getattr(result, "names", None) or result.labels)  # "banana" rather than "class:954"
