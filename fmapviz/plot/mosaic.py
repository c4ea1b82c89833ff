"""Mosaics: many tiles laid out as ONE uint8 array, written once (the fast path for hundreds of maps).

The model is ``torchvision.utils.make_grid``: tensors in, a uint8 image out; but the
result is a numpy array ready for PIL, and gray tiles can be coloured with a LUT in
the same pass.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .colors import ArrayLike, colormap_lut, lut_indices, to_numpy


def as_tiles(tiles: ArrayLike, name: str = "tiles") -> np.ndarray:
    """Tiles as uint8 (N,H,W,C) with C 1 or 3: accepts (N,H,W), (N,1|3,H,W) tensors/arrays, floats in [0,1]."""
    array = to_numpy(tiles, name)
    if array.ndim == 3:
        array = array[..., None]
    elif array.ndim == 4 and (not isinstance(tiles, np.ndarray) or array.shape[3] not in (1, 3)):
        array = np.moveaxis(array, 1, -1)  # tensors are (N,C,H,W); arrays may be (N,H,W,C)
    if array.ndim != 4 or array.shape[3] not in (1, 3):
        raise ValueError(f"{name} must be (N,H,W), (N,1,H,W) or (N,3,H,W); got shape {tuple(array.shape)}.")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: there is nothing to draw.")
    return array if array.dtype == np.uint8 else lut_indices(array)


def grid_shape(count: int, ncols: int | None = None) -> tuple[int, int]:
    """(rows, columns) for ``count`` tiles: ``ncols`` columns, or a near-square layout by default."""
    if ncols is not None and ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}.")
    columns = min(ncols or math.ceil(math.sqrt(count)), count)
    return math.ceil(count / columns), columns


def grid(
    tiles: ArrayLike,
    ncols: int | None = None,
    padding: int = 2,
    pad_value: int | tuple[int, int, int] = 255,
    *,
    cmap: str | object | None = None,
    upscale: int = 1,
) -> np.ndarray:
    """Lay tiles out in a grid as one uint8 image, like ``torchvision.utils.make_grid``.

    Tile ``k`` lands in row ``k // ncols``, column ``k % ncols``; its top-left pixel is at
    ``(padding + row * (H + padding), padding + col * (W + padding))`` (after ``upscale``).

    Args:
        tiles: (N,H,W) or (N,C,H,W) with C 1 or 3, floats in [0,1] or uint8; tensor or array.
        ncols: columns; default near-square.
        padding: pixels between tiles and around the border.
        pad_value: padding gray level (0-255) or RGB triple.
        cmap: colour one-channel tiles with this colormap (a LUT lookup); None keeps them gray.
        upscale: repeat each tile pixel ``upscale`` times per axis (nearest), for tiny maps.

    Returns:
        uint8 array (rows·(H+p)+p, cols·(W+p)+p) for gray tiles, with a trailing RGB axis otherwise.

    Raises:
        ValueError: bad tile shape, ncols < 1, negative padding or upscale < 1.

    Example:
        >>> grid(torch.rand(16, 7, 7), ncols=4, padding=1, cmap="viridis").shape
        (33, 33, 3)
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if upscale < 1:
        raise ValueError(f"upscale must be an integer >= 1, got {upscale}.")
    array = as_tiles(tiles)
    if upscale > 1:
        array = array.repeat(upscale, axis=1).repeat(upscale, axis=2)
    count, height, width, channels = array.shape
    rows, columns = grid_shape(count, ncols)
    colour = cmap is not None and channels == 1
    out_channels = 3 if colour or channels == 3 or not np.isscalar(pad_value) else 1
    fill = np.broadcast_to(np.asarray(pad_value, dtype=np.uint8), (out_channels,))
    cell_h, cell_w = height + padding, width + padding
    canvas = np.empty((rows * cell_h + padding, columns * cell_w + padding, out_channels), dtype=np.uint8)
    canvas[...] = fill
    body = canvas[padding:, padding:].reshape(rows, cell_h, columns, cell_w, out_channels)
    full_rows, rest = divmod(count, columns)
    source = colormap_lut(cmap)[array[..., 0]] if colour else array
    if out_channels == 3 and source.shape[3] == 1:
        source = np.repeat(source, 3, axis=3)
    if full_rows:
        blocks = source[: full_rows * columns].reshape(full_rows, columns, height, width, out_channels)
        body[:full_rows, :height, :, :width] = blocks.transpose(0, 2, 1, 3, 4)
    if rest:
        body[full_rows, :height, :rest, :width] = source[full_rows * columns :].transpose(1, 0, 2, 3)
    return canvas[..., 0] if out_channels == 1 else canvas


def indexed_mosaic(
    values01: ArrayLike,
    ncols: int | None = None,
    padding: int = 2,
    pad_value: int | tuple[int, int, int] = 255,
    cmap: str | object = "viridis",
) -> Any:
    """The fast path for many one-channel maps: a palette PNG image (1 byte per pixel) laid out like :func:`grid`.

    Values in [0,1] become palette indices 0..254 (the colormap sampled at 255 levels);
    index 255 is the padding colour. Writing it is about three times less work than RGB.

    Returns:
        A PIL image in mode "P"; ``np.asarray(image.convert("RGB"))`` gives the pixels.

    Example:
        >>> indexed_mosaic(torch.rand(512, 56, 56), cmap="viridis").save("maps.png", compress_level=1)
    """
    from PIL import Image

    array = to_numpy(values01, "values01")
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"values01 must be one-channel maps (N,H,W) or (N,1,H,W), got shape {tuple(array.shape)}.")
    if array.dtype == np.uint8:
        indices = np.minimum(array, 254)
    else:
        indices = lut_indices(array, 0.0, 255.0 / 254.0)  # 1.0 → 254
    mosaic = grid(indices, ncols, padding, 255)
    palette = colormap_lut(cmap)[np.round(np.linspace(0, 255, 255)).astype(np.intp)]
    pad_rgb = np.broadcast_to(np.asarray(pad_value, dtype=np.uint8), (3,))
    image = Image.fromarray(mosaic)  # mode "L"; putpalette turns it into "P"
    image.putpalette(np.concatenate([palette, pad_rgb[None]]).tobytes())
    return image


def cell_origin(index: int, tile_size: tuple[int, int], ncols: int, padding: int) -> tuple[int, int]:
    """(top, left) pixel of tile ``index`` in a :func:`grid` with this tile size, columns and padding."""
    row, column = divmod(index, ncols)
    return padding + row * (tile_size[0] + padding), padding + column * (tile_size[1] + padding)


def save_png(image: np.ndarray, path: str | os.PathLike, compress_level: int = 1) -> Path:
    """Write a uint8 (H,W) or (H,W,3) array as PNG with PIL (fast zlib level 1 by default); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=compress_level)
    return path
