"""Saliency drawing primitives: a heat map over a photo, signed (diverging) or magnitude (sequential).

Values arrive already reduced to one map per image (the engine's view applied); nothing here
runs a model or knows a saliency method.
"""

from __future__ import annotations

import numpy as np
import torch

from .colors import overlay

DIVERGING = "RdBu_r"
SEQUENTIAL = "jet"


def saliency_overlay(
    photo: torch.Tensor, values: torch.Tensor, signed: bool, alpha: float = 0.5, peak: float | None = None
) -> torch.Tensor:
    """One saliency map (H,W) blended over a photo (3,H,W) in [0,1] → a (3,H,W) float tile in [0,1].

    Args:
        photo: the display image.
        values: the map at the photo's size.
        signed: diverging colours centred on 0 (blue negative, red positive); else sequential from 0.
        alpha: heat-map opacity.
        peak: the value drawn at full colour; default :func:`robust_peak` of ``values``.

    Returns:
        The tile as a float tensor, ready for :func:`fmapviz.plot.annotated_grid`.
    """
    peak = robust_peak(values) if peak is None else peak
    peak = peak if peak > 0 else 1.0
    if signed:
        pixels = overlay(photo, values, DIVERGING, alpha, vmin=-peak, vmax=peak)
    else:
        pixels = overlay(photo, values, SEQUENTIAL, alpha, vmin=0.0, vmax=peak)
    return image_tile(pixels)


def robust_peak(values: torch.Tensor) -> float:
    """The 99.5th percentile of |values|: pixel-level gradients have a few outliers that would wash out the rest."""
    return float(torch.quantile(values.abs().flatten().float()[:16_000_000], 0.995))


def image_tile(pixels: np.ndarray) -> torch.Tensor:
    """An (H,W,3) uint8 or float array as a (3,H,W) float tensor in [0,1]."""
    array = torch.from_numpy(np.ascontiguousarray(pixels))
    array = array.float() / 255 if array.dtype == torch.uint8 else array.float()
    return array.permute(2, 0, 1).clamp(0, 1)
