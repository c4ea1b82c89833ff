"""Concept maps (Deep Feature Factorization) drawn over a photo: one colour per concept.

Each pixel takes the colour of the concept with the highest heat there, its brightness scaled by
that heat (Collins et al.'s figures); nothing here runs a model.
"""

from __future__ import annotations

import torch

from .colors import colormap_lut


def concept_colors(count: int) -> torch.Tensor:
    """``(count, 3)`` distinct colours in [0, 1], evenly spaced on the ``gist_rainbow`` map (as the DFF paper)."""
    lut = torch.tensor(colormap_lut("gist_rainbow"), dtype=torch.float32)
    lut = lut / 255 if lut.max() > 1 else lut
    return lut[(torch.arange(count) * len(lut) // max(count, 1)).clamp(max=len(lut) - 1), :3]


def concept_overlay(
    photo: torch.Tensor, heatmaps: torch.Tensor, colors: torch.Tensor | None = None, alpha: float = 0.6
) -> torch.Tensor:
    """Blend K concept heatmaps over a photo: each pixel shows its strongest concept's colour.

    Args:
        photo: ``(3, H, W)`` display image in [0, 1].
        heatmaps: ``(K, H, W)`` concept heat in [0, 1] at the photo's size.
        colors: ``(K, 3)`` colours in [0, 1]; default :func:`concept_colors`.
        alpha: opacity of the colours at full heat.

    Returns:
        ``(3, H, W)`` float tile in [0, 1].

    Raises:
        ValueError: mismatched sizes, or alpha outside [0, 1].

    Example:
        >>> concept_overlay(image.display[0], concepts.heatmaps[0]).shape
        torch.Size([3, 224, 224])
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if heatmaps.dim() != 3 or heatmaps.shape[-2:] != photo.shape[-2:]:
        raise ValueError(
            f"heatmaps must be (K, H, W) at the photo's size {tuple(photo.shape[-2:])}; got {tuple(heatmaps.shape)}."
        )
    colors = concept_colors(heatmaps.shape[0]) if colors is None else colors.float()
    heat, strongest = heatmaps.detach().float().cpu().clamp(0, 1).max(0)
    coloured = colors[strongest].permute(2, 0, 1)  # (3, H, W)
    weight = alpha * heat[None]
    return (photo.detach().float().cpu() * (1 - weight) + coloured * weight).clamp(0, 1)


def concept_tile(photo: torch.Tensor, heatmap: torch.Tensor, color: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """One concept's ``(H, W)`` heat in its colour over the photo: ``(3, H, W)`` in [0, 1]."""
    return concept_overlay(photo, heatmap[None], color[None], alpha)
