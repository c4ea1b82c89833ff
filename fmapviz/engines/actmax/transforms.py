"""Random transformations that make visualizations robust (Lucid's transformation robustness), in plain torch.

A transform is ``transform(images, generators) -> images`` for a (B,3,H,W) batch and one
``torch.Generator`` per image: image ``i`` draws its offsets, scale and angle from
``generators[i]`` only, so it is transformed the same whatever batch it is part of.
:data:`TRANSFORMS` holds the factories, :data:`PIPELINES` the named lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, Sequence[torch.Generator]], torch.Tensor]


def _choice(options: Sequence[float], generator: torch.Generator) -> float:
    return float(options[int(torch.randint(len(options), (1,), generator=generator))])  # cpu: a Python number


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant ``value`` (grey), so jitter does not wrap content."""

    def transform(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        return F.pad(images, (width, width, width, width), mode="constant", value=value)

    return transform


def jitter(distance: int) -> Transform:
    """Crop ``distance`` pixels less on each axis, at a random offset per image (a random shift)."""

    def transform(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        batch, colours, full_width = images.shape[0], images.shape[1], images.shape[-1]
        height, width = images.shape[-2] - distance, full_width - distance
        offsets = torch.stack([torch.randint(distance + 1, (2,), generator=g) for g in generators]).to(images.device)
        rows = offsets[:, :1] + torch.arange(height, device=images.device)
        cols = offsets[:, 1:] + torch.arange(width, device=images.device)
        # one gather: per-image slices + stack would backprop through B full-size zero tensors
        index = (rows[:, :, None] * full_width + cols[:, None, :]).view(batch, 1, -1).expand(-1, colours, -1)
        return images.flatten(2).gather(2, index).view(batch, colours, height, width)

    return transform


def _warp(images: torch.Tensor, zoom: Sequence[float], degrees: Sequence[float]) -> torch.Tensor:
    radians = torch.tensor([math.radians(angle) for angle in degrees])  # cpu: theta is moved to the images
    inverse_zoom = 1.0 / torch.tensor(list(zoom))  # cpu: as radians
    cos, sin = torch.cos(radians) * inverse_zoom, torch.sin(radians) * inverse_zoom
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_affine(scales: Sequence[float] = (1.0,), degrees: Sequence[float] = (0.0,)) -> Transform:
    """Zoom each image about its centre by a factor from ``scales`` and rotate it by an angle (degrees) from
    ``degrees``, in one resampling (size unchanged)."""

    def transform(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        zoom = [_choice(scales, g) for g in generators]
        return _warp(images, zoom, [_choice(degrees, g) for g in generators])

    return transform


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image about its centre by a factor drawn from ``scales`` (size unchanged)."""
    return random_affine(scales=scales)


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate each image about its centre by an angle in degrees drawn from ``degrees``."""
    return random_affine(degrees=degrees)


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "pad": pad,
    "jitter": jitter,
    "random_scale": random_scale,
    "random_rotate": random_rotate,
    "random_affine": random_affine,
}


def standard() -> list[Transform]:
    """Lucid's standard transforms: pad 12, jitter 8, scale 0.9-1.1 and rotate -10..10 degrees (one resampling),
    jitter 4."""
    return [
        pad(12),
        jitter(8),
        random_affine(scales=[1 + (i - 5) / 50.0 for i in range(11)], degrees=list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


PIPELINES: dict[str, Callable[[], list[Transform]]] = {"standard": standard, "none": list}


def resolve_transforms(transforms: str | Sequence[Transform] | None) -> list[Transform]:
    """A named pipeline (``"standard"``, ``"none"``), None (no transforms) or a list of transforms."""
    if transforms is None:
        return []
    if isinstance(transforms, str):
        if transforms not in PIPELINES:
            raise ValueError(f"Unknown transforms '{transforms}'. Use one of {sorted(PIPELINES)} or a list.")
        return PIPELINES[transforms]()
    return list(transforms)


def apply(images: torch.Tensor, transforms: Sequence[Transform], generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Apply ``transforms`` in order."""
    for transform in transforms:
        images = transform(images, generators)
    return images
