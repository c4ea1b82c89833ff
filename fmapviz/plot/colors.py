"""Colormaps as 256-entry uint8 lookup tables, applied with array indexing (no matplotlib drawing).

Value ranges, explained once for the whole plotting layer: drawing functions take
values already scaled to [0, 1] (``values01``) unless they accept ``vmin``/``vmax``,
in which case values are scaled linearly so that ``vmin`` → 0 and ``vmax`` → 1 and
clipped. NaN draws as the lowest colour. Diverging maps (saliency with signs) pass
``vmin=-m, vmax=m`` and a diverging colormap such as ``"RdBu_r"``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@functools.lru_cache(maxsize=32)
def _lut_cached(name: str) -> np.ndarray:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(
            f"Unknown colormap cmap={name!r}. Use a matplotlib name such as 'viridis', 'magma', 'gray' or 'RdBu_r'."
        ) from None
    table = colormap(np.linspace(0.0, 1.0, 256))[:, :3]
    lut = np.round(table * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colormap_lut(cmap: str | object = "viridis") -> np.ndarray:
    """The (256, 3) uint8 RGB lookup table of a matplotlib colormap (a name or a Colormap object).

    Example:
        >>> colormap_lut("gray")[255]
        array([255, 255, 255], dtype=uint8)
    """
    if isinstance(cmap, str):
        return _lut_cached(cmap)
    if callable(cmap):
        return np.round(np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3] * 255.0).astype(np.uint8)
    raise TypeError(f"cmap must be a colormap name or a matplotlib Colormap, not {type(cmap).__name__}.")


def to_numpy(values: ArrayLike, name: str = "values") -> np.ndarray:
    """A tensor or array as a CPU numpy array (the one device-to-host conversion of the plotting layer)."""
    if isinstance(values, torch.Tensor):
        values = values.detach()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        return values.cpu().numpy()
    if isinstance(values, np.ndarray):
        return values
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, not {type(values).__name__}.")


def lut_indices(values: ArrayLike, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Values scaled to [vmin, vmax] → uint8 indices 0..255; NaN → 0, ±inf → the ends."""
    array = to_numpy(values)
    if array.dtype == np.uint8 and vmin == 0.0 and vmax == 1.0:
        return array
    array = np.asarray(array, dtype=np.float32)
    span = float(vmax) - float(vmin)
    scale = 255.0 / span if span > 0 else 0.0
    scaled = (array - np.float32(vmin)) * np.float32(scale) + np.float32(0.5)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def apply_colormap(
    values01: ArrayLike, cmap: str | object = "viridis", *, vmin: float = 0.0, vmax: float = 1.0
) -> np.ndarray:
    """Colour a scalar image (any shape, usually H×W) with a colormap; returns uint8 ``shape + (3,)``.

    Args:
        values01: values in [vmin, vmax] (default [0, 1]), a tensor or array; uint8 is used as LUT index.
        cmap: matplotlib colormap name or object.
        vmin, vmax: the values drawn as the first and last colours.

    Returns:
        A uint8 numpy array with a trailing RGB axis.

    Raises:
        ValueError: unknown colormap name.

    Example:
        >>> apply_colormap(torch.rand(7, 7), "magma").shape
        (7, 7, 3)
    """
    return colormap_lut(cmap)[lut_indices(values01, vmin, vmax)]


def to_uint8_image(image: ArrayLike, name: str = "image") -> np.ndarray:
    """An RGB or gray image as uint8 (H,W,3): accepts (3,H,W)/(1,H,W)/(H,W) tensors in [0,1], or uint8 (H,W,3)."""
    array = to_numpy(image, name)
    channels_first = isinstance(image, torch.Tensor) or array.shape[-1] not in (1, 3)
    if array.ndim == 3 and channels_first and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"{name} must be (3,H,W), (1,H,W), (H,W) or (H,W,3); got shape {tuple(array.shape)}.")
    if array.dtype != np.uint8:
        array = lut_indices(array)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def overlay(
    image: ArrayLike,
    heat01: ArrayLike,
    cmap: str | object = "jet",
    alpha: float = 0.5,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> np.ndarray:
    """Blend a coloured heat map over a photo; returns uint8 (H,W,3) at the photo's size.

    Args:
        image: the photo, (3,H,W) tensor in [0,1] or uint8 (H,W,3).
        heat01: (h,w) map in [vmin, vmax]; resized bilinearly to (H,W) when its size differs.
        cmap: colormap of the heat map.
        alpha: heat map opacity, 0 (photo only) to 1 (map only).

    Raises:
        ValueError: alpha outside [0, 1] or a map that is not 2-D.

    Example:
        >>> overlay(loaded.display[0], cam[0], "jet", alpha=0.4).shape
        (224, 224, 3)
    """
    photo = to_uint8_image(image)
    coloured, weight = _coloured(heat01, cmap, photo.shape[:2], alpha, vmin, vmax, fade=False)
    blended = photo.astype(np.float32) * (1.0 - weight[..., None]) + coloured.astype(np.float32) * weight[..., None]
    return (blended + 0.5).astype(np.uint8)


def heat_layer(
    heat: ArrayLike,
    cmap: str | object,
    size: tuple[int, int],
    alpha: float = 0.5,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    fade: bool = False,
) -> np.ndarray:
    """A heat map as a see-through RGBA layer (uint8 (H,W,4) at ``size``), to lay over its photo: :func:`overlay`
    composites it here, a web page in the browser (the photo's picture is then stored once).

    Args:
        heat: (h,w) map, resized bilinearly to ``size`` before it is coloured.
        cmap: colormap of the heat map.
        alpha: opacity, 0 (photo only) to 1 (map only).
        vmin, vmax: the values drawn as the first and last colours.
        fade: opacity grows with the value (``alpha`` where it reaches ``vmax``, none at ``vmin``), so the photo
            shows where the map is empty.

    Example:
        >>> heat_layer(torch.rand(7, 7), "jet", (64, 64)).shape
        (64, 64, 4)
    """
    coloured, opacity = _coloured(heat, cmap, size, alpha, vmin, vmax, fade)
    return np.concatenate([coloured, (opacity * 255 + 0.5).astype(np.uint8)[..., None]], axis=2)


def _coloured(
    heat: ArrayLike, cmap: str | object, size: tuple[int, int], alpha: float, vmin: float, vmax: float, fade: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (H,W,3) colours, float32 (H,W) opacity) of a heat map resized to ``size``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    values = heat if isinstance(heat, torch.Tensor) else torch.as_tensor(np.asarray(heat))
    values = values.detach()
    if values.ndim != 2:
        raise ValueError(f"heat01 must be a 2-D (H,W) map, got shape {tuple(values.shape)}.")
    if tuple(values.shape) != tuple(size):
        values = torch.nn.functional.interpolate(
            values.float()[None, None], size=tuple(size), mode="bilinear", align_corners=False
        )[0, 0]
    opacity = np.full(tuple(size), alpha, dtype=np.float32)
    if fade:
        opacity *= ((values.float().cpu() - vmin) / ((vmax - vmin) or 1.0)).clamp(0, 1).numpy()
    return apply_colormap(values, cmap, vmin=vmin, vmax=vmax), opacity


def rgb(images: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) grayscale images repeated to (N,3,H,W); (N,3,H,W) images as they are."""
    return images.expand(-1, 3, -1, -1) if images.shape[-3] == 1 else images
