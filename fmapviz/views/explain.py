"""Channel-explanation view: per layer, the channels that drive the prediction, each as a map over the photo."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..engines.explain import ChannelExplanation
from ..plot.figures import Figure, annotated_grid
from ..plot.saliency import saliency_overlay

__all__ = ["show_channel_explanation"]


def show_channel_explanation(
    explanation: ChannelExplanation,
    image: torch.Tensor,
    *,
    index: int = 0,
    actmax: Mapping[str, Mapping[int, torch.Tensor]] | None = None,
    title: str | None = None,
    tile_pixels: int = 120,
) -> Figure:
    """Draw an explanation through channels: one row per layer, its top channels' attribution maps over the photo.

    Each tile shows where a channel adds to (red) or takes from (blue) the target class, with the
    unit name and its attribution (the map summed over space). One colour scale per layer, so the
    tiles of a layer compare.

    Args:
        explanation: the result of :func:`fmapviz.explain_channels`.
        image: the display image(s) in [0, 1], (3,H,W) or (N,3,H,W) (``LoadedImage.display``).
        index: which image of the batch to draw.
        actmax: optional activation-maximization images ``{layer: {channel: (3,h,w) in [0,1]}}``;
            each layer then gets a second row with the images of its top channels (blank when missing).
        title: figure title (default: the explained class and the method).
        tile_pixels: tile width on screen.

    Returns:
        A :class:`fmapviz.plot.Figure` (``.save(path)``, shown inline in Jupyter).

    Raises:
        ValueError: ``index`` out of range or an image that does not match.

    Example:
        >>> found = fmapviz.explain_channels(model, image.tensor, ["features.7", "features.14"], top=5)
        >>> fmapviz.show_channel_explanation(found, image.display).save("why.png")
        PosixPath('why.png')
    """
    batch = explanation.target.shape[0]
    if not 0 <= index < batch:
        raise ValueError(f"index {index} is out of range: the explanation holds {batch} images.")
    photos = image.detach().float().cpu()
    photos = photos[None] if photos.dim() == 3 else photos
    if photos.dim() != 4 or photos.shape[0] not in (1, batch):
        raise ValueError(f"image must be (3,H,W) or (N,3,H,W) with N = {batch}; got {tuple(image.shape)}.")
    photo = photos[min(index, photos.shape[0] - 1)]
    blank = torch.ones_like(photo)
    top = max(found.channels.shape[1] for found in explanation.layers.values())
    tiles, captions = [], []
    for name, found in explanation.layers.items():
        channels = found.channels[index].tolist()
        spatial = found.maps[index, channels].detach().float().cpu()
        peak = float(spatial.abs().max())
        tiles.append(photo)
        captions.append(name)
        for slot in range(top):
            tiles.append(saliency_overlay(photo, spatial[slot], True, 0.6, peak) if slot < len(channels) else blank)
            captions.append(
                f"{name}[{channels[slot]}]\n{float(found.values[index, slot]):+.2f}" if slot < len(channels) else ""
            )
        if actmax is not None:
            tiles.append(blank)
            captions.append("actmax")
            for slot in range(top):
                picture = actmax.get(name, {}).get(channels[slot]) if slot < len(channels) else None
                tiles.append(_resized(picture, photo.shape[-2:]) if picture is not None else blank)
                captions.append("")
    label = explanation.target_names[index] if explanation.target_names else f"class {int(explanation.target[index])}"
    return annotated_grid(
        torch.stack(tiles),
        captions,
        ncols=top + 1,
        title=title or f"Channels that drive '{label}' ({explanation.method})",
        tile_pixels=tile_pixels,
    )


def _resized(picture: torch.Tensor, size: torch.Size) -> torch.Tensor:
    picture = picture.detach().float().cpu()
    return torch.nn.functional.interpolate(picture[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
