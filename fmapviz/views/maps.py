"""Feature-map views: channel mosaics, the layer hierarchy and channel health.

They call :mod:`fmapviz.engines.channels` to choose and normalize channels, read layer
geometry from :func:`fmapviz.summary`, and hand plain arrays to :mod:`fmapviz.plot`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..engines.channels import ChannelStats, RankFunction, as_batch, normalize_maps, select_channels, upsample
from ..inputs import LoadedImage
from ..layers import LayerInfo
from ..layers import summary as layer_summary
from ..model_input import accepts_loaded_model
from ..models import LoadedModel
from ..plot.colors import colormap_lut, lut_indices, rgb, to_uint8_image
from ..plot.figures import DPI, Figure, annotated_grid, fit_tile_pixels
from ..plot.maps import channel_grid, channel_stats_figure, overlay_tiles

__all__ = ["show_maps", "show_hierarchy", "show_channel_stats"]

MapsInput = torch.Tensor | dict[str, torch.Tensor]
ImageInput = LoadedImage | torch.Tensor


def _one_layer(maps: MapsInput, layer: str | None) -> tuple[str | None, torch.Tensor]:
    if isinstance(maps, torch.Tensor):
        return layer, maps
    if not isinstance(maps, dict) or not maps:
        raise TypeError(f"maps must be a tensor or a non-empty dict of layer name → tensor, not {type(maps).__name__}.")
    if layer is None:
        if len(maps) > 1:
            raise ValueError(
                f"maps holds {len(maps)} layers ({', '.join(list(maps)[:4])}…); pass layer='name' "
                "or draw them all with fmapviz.show_hierarchy."
            )
        layer = next(iter(maps))
    if layer not in maps:
        raise KeyError(f"layer={layer!r} is not in maps; available: {', '.join(maps)}.")
    return layer, maps[layer]


def _display_images(image: ImageInput | None) -> torch.Tensor | None:
    if image is None:
        return None
    pixels = image.display if isinstance(image, LoadedImage) else image
    if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (3, 4) or pixels.shape[-3] not in (1, 3):
        raise ValueError("image must be a LoadedImage or a tensor (C,H,W) / (N,C,H,W) in [0,1], C = 1 or 3.")
    return rgb(pixels if pixels.ndim == 4 else pixels[None])


def show_maps(
    maps: MapsInput,
    channels: str | int | Sequence[int] | torch.Tensor = "top:16",
    rank: str | RankFunction | torch.Tensor = "mean",
    normalize: str = "layer",
    image: ImageInput | None = None,
    overlay: bool = False,
    cmap: str = "viridis",
    *,
    layer: str | None = None,
    clip: tuple[float, float] | None = None,
    ncols: int | None = None,
    alpha: float = 0.5,
    annotate: bool = True,
    title: str | None = None,
) -> Figure:
    """Draw the chosen channels of one layer as a mosaic (one image, never one subplot per channel).

    Args:
        maps: a (C,H,W) / (N,C,H,W) tensor, or a dict from :func:`fmapviz.feature_maps`
            (pick the layer with ``layer=`` when it holds several).
        channels: which channels: ``"all"``, ``"top:K"``, ``"bottom:K"``, ``"0-15"``, ``"3,7"``, an
            index or a list of indices (see :mod:`fmapviz.vocabulary`).
        rank: how ``top``/``bottom`` score channels: ``"mean"``, ``"max"``, ``"std"``, or a
            (C,) score tensor (e.g. Grad-CAM channel weights).
        normalize: ``"layer"`` (one scale, channels comparable), ``"channel"`` (each channel
            stretched) or ``"global"``; see :mod:`fmapviz.engines.channels`.
        image: the input photo (``LoadedImage`` or (N,3,H,W) in [0,1]): shown as the first tile,
            and under the maps when ``overlay=True``; maps are resized to its size.
        overlay: blend each map over the photo with ``alpha``.
        cmap: matplotlib colormap name.
        layer: which entry of a dict to draw.
        clip: (lower, upper) percentiles mapped to the ends of the colour scale.
        ncols: columns (default near-square; one row per image for a batch).
        alpha: map opacity in overlays.
        annotate: False skips matplotlib: a raw mosaic written fast by PIL.
        title: figure title (default: layer name, shape and choice).

    Returns:
        A :class:`~fmapviz.plot.Figure`: shows inline in Jupyter, ``.save(path)``, ``.image``.

    Raises:
        ValueError: bad ``channels``, ``rank``, ``normalize``, ``alpha``, or ``overlay`` without ``image``.

    Example:
        >>> maps = fmapviz.feature_maps(loaded.model, image.tensor, "features.7")
        >>> fmapviz.show_maps(maps, "top:16", image=image, overlay=True).save("features7.png")
        PosixPath('features7.png')
    """
    name, tensor = _one_layer(maps, layer)
    batch = as_batch(tensor.detach())
    photos = _display_images(image)
    if overlay and photos is None:
        raise ValueError("overlay=True needs image=: pass the LoadedImage the maps were computed from.")
    if photos is not None and photos.shape[0] not in (1, batch.shape[0]):
        raise ValueError(
            f"image has {photos.shape[0]} pictures for {batch.shape[0]} sets of maps; pass matching batches."
        )
    chosen = select_channels(batch, channels, rank)
    normalized = normalize_maps(batch, normalize, clip)
    values = normalized.values[:, chosen]
    count, picked = values.shape[0], values.shape[1]
    labels = [f"ch {int(c)}" for c in chosen.tolist()] * count
    row_labels = [f"image {n}" for n in range(count)] if count > 1 else None
    if photos is not None:
        size = tuple(photos.shape[-2:])
        resized = upsample(values, size, "bilinear" if overlay else "nearest").clamp(0, 1)
        tiles = []
        for index in range(count):
            photo = photos[min(index, photos.shape[0] - 1)]
            tiles.append(to_uint8_image(photo)[None])
            if overlay:
                tiles.append(overlay_tiles(photo, resized[index], cmap, alpha))
            else:
                tiles.append(colormap_lut(cmap)[lut_indices(resized[index])])
        tiles = np.concatenate(tiles)
        labels = [text for n in range(count) for text in ["input"] + labels[n * picked : (n + 1) * picked]]
        picked += 1
    else:
        tiles = values.reshape(count * picked, *values.shape[-2:])
    if ncols is None and count > 1:
        ncols = picked
    shape = "×".join(str(s) for s in batch.shape[1:])
    if title is None:
        ranked = isinstance(channels, str) and channels.strip().startswith(("top:", "bottom:"))
        title = f"{name or 'maps'} ({shape}): channels {channels if isinstance(channels, str) else 'chosen'}"
        title += f" by {rank}" if ranked and isinstance(rank, str) else ""
        title += f", {normalize} scale"
    per_channel = normalize == "channel"
    return channel_grid(
        tiles,
        labels,
        ncols=ncols,
        cmap=cmap,
        value_range=(0.0, 1.0) if per_channel else normalized.value_range,
        colorbar_label="each channel: its min → max" if per_channel else "activation",
        title=title,
        row_labels=row_labels,
        annotate=annotate,
    )


def _geometry_text(info: LayerInfo | None) -> str:
    if info is None or info.geometry is None:
        return "stride ? · RF ?"

    def pair(values: tuple[float, float]) -> str:
        return f"{values[0]:g}" if values[0] == values[1] else f"{values[0]:g}×{values[1]:g}"

    return f"stride {pair(info.stride)} · RF {pair(info.receptive_field)}"


def _fit(tiles: torch.Tensor, cell: int) -> torch.Tensor:
    """(T,h,w) or (T,3,h,w) resized to cell×cell: nearest when enlarging (honest pixels), area when shrinking."""
    batch = tiles if tiles.ndim == 4 else tiles[:, None]
    mode = "nearest" if max(batch.shape[-2:]) <= cell else "area"
    return upsample(batch, (cell, cell), mode)


@accepts_loaded_model(inputs=())
def show_hierarchy(
    maps: dict[str, torch.Tensor],
    image: ImageInput,
    summary: Sequence[LayerInfo] | None = None,
    *,
    model: nn.Module | LoadedModel | None = None,
    top: int = 6,
    rank: str | RankFunction = "mean",
    cmap: str = "viridis",
    cell: int = 96,
    clip: tuple[float, float] | None = (0.5, 99.5),
    title: str | None = None,
    width_pixels: int | None = None,
) -> Figure:
    """One row per captured layer, shallow to deep: the top channel over the photo, then the top channels.

    Each row is labelled with the layer's name, output shape, stride, receptive field and
    value range; each row has its own (layer) scale. Only the first image of a batch is drawn.

    Args:
        maps: layer name → maps in execution order (``fmapviz.feature_maps(model, x, layers)``).
        image: the input photo (``LoadedImage`` or (N,3,H,W) in [0,1]).
        summary: rows of :func:`fmapviz.summary` for the geometry; computed from ``model``
            when missing and ``model`` is given; otherwise the geometry shows "?".
        model: used only to compute ``summary``.
        top: how many channels per layer (the best ``top`` by ``rank``).
        rank: channel ranking (see :func:`fmapviz.engines.channels.channel_scores`).
        cmap: colormap.
        cell: tile size in pixels.
        clip: percentiles mapped to the ends of the colour scale (default 0.5, 99.5, so a
            few border pixels cannot wash a row out); None for min and max.
        title: figure title; None for the default, "" for none.
        width_pixels: make the figure this wide: ``cell`` is chosen to fill it (e.g. a report page).

    Returns:
        A :class:`~fmapviz.plot.Figure`.

    Raises:
        ValueError: no layers, or ``top`` < 1.

    Example:
        >>> maps = fmapviz.feature_maps(model, image.tensor, ["features.1", "features.7", "features.14"])
        >>> fmapviz.show_hierarchy(maps, image, model=model).save("hierarchy.png")
        PosixPath('hierarchy.png')
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("maps must be a non-empty dict of layer name → tensor (use fmapviz.feature_maps).")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a whole number of channels >= 1, got {top!r}.")
    photos = _display_images(image)
    if summary is None and model is not None:
        summary = layer_summary(model, (1, *photos.shape[1:]))
    rows_by_name = {row.name: row for row in summary or []}
    title = f"Feature maps from shallow to deep: top {top} channels by {rank} per layer" if title is None else title
    layers, labels = [], []
    for name, tensor in maps.items():
        batch = as_batch(tensor.detach(), f"maps[{name!r}]")[:1]
        normalized = normalize_maps(batch, "layer", clip)
        layers.append((select_channels(batch, f"top:{top}", rank), normalized.values))
        low, high = normalized.value_range
        shape = "×".join(str(s) for s in batch.shape[1:])
        labels.append(f"{name}\n{shape}\n{_geometry_text(rows_by_name.get(name))}\nrange {low:.2g}…{high:.2g}")
    if width_pixels is not None:
        cell = fit_tile_pixels(width_pixels, top + 1, row_labels=labels, title=title)
    photo = _fit(photos[:1].float(), cell)[0].clamp(0, 1)
    blank = np.full((cell, cell, 3), 255, dtype=np.uint8)
    lut = colormap_lut(cmap)
    tiles, titles = [], []
    for chosen, values in layers:
        coloured = lut[lut_indices(_fit(values[0, chosen], cell)[:, 0])]
        strongest = upsample(values[:, chosen[:1]], (cell, cell))[0]
        tiles += list(overlay_tiles(photo, strongest, cmap, 0.55)) + list(coloured) + [blank] * (top - len(chosen))
        titles += [f"ch {int(chosen[0])} on input"] + [f"ch {c}" for c in chosen.tolist()]
        titles += [""] * (top - len(chosen))
    return annotated_grid(np.stack(tiles), titles, ncols=top + 1, row_labels=labels, title=title, tile_pixels=cell)


def show_channel_stats(stats: ChannelStats | dict[str, ChannelStats], *, width_pixels: int = 900) -> Figure:
    """Plot channel health: each channel's max, dead (red) and weak (orange) channels, fraction positive.

    Args:
        stats: from :func:`fmapviz.channel_stats`: one layer's statistics or a dict of them.
        width_pixels: the figure's width.

    Returns:
        A :class:`~fmapviz.plot.Figure`, one panel per layer.

    Example:
        >>> fmapviz.show_channel_stats(fmapviz.channel_stats(maps)).save("health.png")
        PosixPath('health.png')
    """
    layers = list(stats.values()) if isinstance(stats, dict) else [stats]
    return channel_stats_figure(layers, width_inches=width_pixels / DPI)
