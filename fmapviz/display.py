"""Feature-map display: the thin glue from maps (and optionally a model) to figures.

It calls :mod:`fmapviz.engines.direct` to choose and normalize channels, reads layer
geometry from :func:`fmapviz.summary`, and hands plain arrays to :mod:`fmapviz.plot`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .capture import LayerSelectors
from .engines.direct import (
    ChannelStats,
    RankFunction,
    as_batch,
    compute_channel_stats,
    normalize_maps,
    select_channels,
    stream_channel_stats,
    upsample,
)
from .images import IMAGE_SUFFIXES, LoadedImage, load_image
from .layers import LayerInfo
from .layers import summary as layer_summary
from .plot.colors import colormap_lut, lut_indices, to_uint8_image
from .plot.figures import Figure, annotated_grid
from .plot.maps import channel_grid, channel_stats_figure, overlay_tiles

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
    if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError("image must be a LoadedImage or an RGB tensor (3,H,W) / (N,3,H,W) in [0,1].")
    return pixels if pixels.ndim == 4 else pixels[None]


def show_maps(
    maps: MapsInput,
    channels: str | Sequence[int] | torch.Tensor = "top:16",
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
        channels: ``"all"``, ``"top:K"``, ``"bottom:K"`` or a list of indices.
        rank: how ``top``/``bottom`` score channels: ``"mean"``, ``"max"``, ``"std"``, or a
            (C,) score tensor (e.g. Grad-CAM channel weights).
        normalize: ``"layer"`` (one scale, channels comparable), ``"channel"`` (each channel
            stretched) or ``"global"``; see :mod:`fmapviz.engines.direct`.
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
        title = f"{name or 'maps'} ({shape}): channels {channels if isinstance(channels, str) else 'chosen'}"
        title += f" by {rank}" if isinstance(channels, str) and channels != "all" and isinstance(rank, str) else ""
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


def show_hierarchy(
    maps: dict[str, torch.Tensor],
    image: ImageInput,
    summary: Sequence[LayerInfo] | None = None,
    *,
    model: nn.Module | None = None,
    channels: int = 6,
    rank: str | RankFunction = "mean",
    cmap: str = "viridis",
    cell: int = 96,
    clip: tuple[float, float] | None = (0.5, 99.5),
    title: str | None = None,
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
        channels: top channels per layer.
        rank: channel ranking (see :func:`fmapviz.engines.direct.channel_scores`).
        cmap: colormap.
        cell: tile size in pixels.
        clip: percentiles mapped to the ends of the colour scale (default 0.5, 99.5, so a
            few border pixels cannot wash a row out); None for min and max.
        title: figure title; None for the default, "" for none.

    Returns:
        A :class:`~fmapviz.plot.Figure`.

    Raises:
        ValueError: no layers, or ``channels`` < 1.

    Example:
        >>> maps = fmapviz.feature_maps(model, image.tensor, ["features.1", "features.7", "features.14"])
        >>> fmapviz.show_hierarchy(maps, image, model=model).save("hierarchy.png")
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("maps must be a non-empty dict of layer name → tensor (use fmapviz.feature_maps).")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}.")
    photos = _display_images(image)
    if summary is None and model is not None:
        summary = layer_summary(model, (1, *photos.shape[1:]))
    rows_by_name = {row.name: row for row in summary or []}
    photo = _fit(photos[:1].float(), cell)[0].clamp(0, 1)
    blank = np.full((cell, cell, 3), 255, dtype=np.uint8)
    lut = colormap_lut(cmap)
    tiles, titles, labels = [], [], []
    for name, tensor in maps.items():
        batch = as_batch(tensor.detach(), f"maps[{name!r}]")[:1]
        chosen = select_channels(batch, f"top:{channels}", rank)
        normalized = normalize_maps(batch, "layer", clip)
        coloured = lut[lut_indices(_fit(normalized.values[0, chosen], cell)[:, 0])]
        strongest = upsample(normalized.values[:, chosen[:1]], (cell, cell))[0]
        tiles += list(overlay_tiles(photo, strongest, cmap, 0.55)) + list(coloured) + [blank] * (channels - len(chosen))
        titles += [f"ch {int(chosen[0])} on input"] + [f"ch {c}" for c in chosen.tolist()]
        titles += [""] * (channels - len(chosen))
        low, high = normalized.value_range
        shape = "×".join(str(s) for s in batch.shape[1:])
        labels.append(
            f"{name.split('#')[0]}\n{shape}\n{_geometry_text(rows_by_name.get(name))}\nrange {low:.2g}…{high:.2g}"
        )
    return annotated_grid(
        np.stack(tiles),
        titles,
        ncols=channels + 1,
        row_labels=labels,
        title=title
        if title is not None
        else f"Feature maps from shallow to deep: top {channels} channels by {rank} per layer",
        tile_pixels=cell,
    )


def _image_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str] | None:
    items = [source] if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike)) for i in items):
        return None
    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(char in str(item) for char in "*?[") and not path.exists():
            files += sorted(glob.glob(str(item)))
        else:
            files.append(str(path))
    if not files:
        raise ValueError(f"No image files found in {source!r}.")
    return files


def _batches(source: Any, transform: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(source, LoadedImage):
        source = source.tensor
    if isinstance(source, torch.Tensor):
        return torch.split(as_batch(source, "images"), batch_size)
    files = _image_files(source)
    if files is None:
        return source

    def load() -> Iterator[torch.Tensor]:
        for start in range(0, len(files), batch_size):
            yield load_image(files[start : start + batch_size], transform).tensor

    return load()


def channel_stats(
    source: Any,
    model: nn.Module | None = None,
    layers: LayerSelectors | None = None,
    *,
    transform: Any = None,
    batch_size: int = 16,
    weak_ratio: float = 0.1,
    device: torch.device | str | None = None,
) -> ChannelStats | dict[str, ChannelStats]:
    """Per-channel mean, max and fraction of positive values, with dead and weak channels flagged.

    A channel is dead when it is never positive, weak when its max is below
    ``weak_ratio`` × the median channel max of its layer (see
    :class:`~fmapviz.engines.direct.ChannelStats`).

    Args:
        source: maps ((N,C,H,W) tensor or dict of them) when ``model`` is None; otherwise
            images: a (N,3,H,W) tensor, a ``LoadedImage``, a folder, a glob, a list of paths,
            or any iterable of batches (a DataLoader of tensors or (tensor, label) pairs).
        model: run over the images, streaming statistics in O(channels) memory.
        layers: layer selectors, needed with ``model``.
        transform: preprocessing for image files (usually ``loaded.transform``).
        batch_size: images per forward pass for tensors and files.
        weak_ratio: threshold for weak channels.
        device: where to run the model (default: its parameters' device).

    Returns:
        A :class:`ChannelStats` for a tensor; a dict layer name → :class:`ChannelStats` otherwise.

    Raises:
        ValueError: ``model`` without ``layers``, nothing to read, or bad maps.

    Example:
        >>> stats = fmapviz.channel_stats("photos/", loaded.model, "features.*.conv.2", transform=loaded.transform)
        >>> stats["features.7.conv.2"].dead_channels
        []
    """
    if model is None:
        if isinstance(source, dict):
            return {name: compute_channel_stats(value, name, weak_ratio) for name, value in source.items()}
        return compute_channel_stats(source, None, weak_ratio)
    if layers is None:
        raise ValueError("layers= is required with model=: say which layers to measure, e.g. 'features.*'.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    return stream_channel_stats(
        model, _batches(source, transform, batch_size), layers, weak_ratio=weak_ratio, device=device
    )


def show_channel_stats(stats: ChannelStats | dict[str, ChannelStats]) -> Figure:
    """Plot channel health: each channel's max, dead (red) and weak (orange) channels, fraction positive.

    Example:
        >>> fmapviz.show_channel_stats(fmapviz.channel_stats(maps)).save("health.png")
    """
    layers = list(stats.values()) if isinstance(stats, dict) else [stats]
    return channel_stats_figure(layers)
