"""Channel health of a model's layers over many images, streamed in O(channels) memory.

The model runs batch by batch; each chosen layer's output is folded into a running accumulator
(:class:`~fmapviz.engines.channels.statistics.RunningLayerStats`) inside the forward pass, so no
whole layer is kept. Images are read through :mod:`fmapviz.data`; nothing here opens a file itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ...data import batch_images, image_batches
from ...hooks import LayerSelectors, capture, model_guard
from ...inputs import default_transform, model_device
from ...model_input import accepts_loaded_model, as_model_input
from ...models import LoadedModel
from .statistics import ChannelStats, RunningLayerStats, compute_channel_stats


def stream_channel_stats(
    model: nn.Module,
    batches: Iterable[object],
    layers: LayerSelectors,
    *,
    weak_ratio: float = 0.1,
    device: torch.device | str | None = None,
) -> dict[str, ChannelStats]:
    """Channel statistics of ``layers`` over many batches, in O(channels) memory.

    Each layer's output is folded into a :class:`~fmapviz.engines.channels.statistics.RunningChannelStats`
    inside the forward pass (capture's ``reduce=``), so no whole layer is kept.

    Args:
        model: the network; left exactly as it was (mode, flags, parameters, no hooks).
        batches: an iterable of (N,3,H,W) tensors, (tensor, label) pairs or dicts with
            an ``"image"`` tensor, e.g. a DataLoader.
        layers: layer selectors (see :mod:`fmapviz.hooks`).
        weak_ratio: see :class:`ChannelStats`.
        device: where to run; default the model's parameters' device.

    Returns:
        Layer name → :class:`ChannelStats`, in execution order.

    Raises:
        ValueError: no batch was given.

    Example:
        >>> loader = DataLoader(ImageFolder("photos", loaded.transform), batch_size=32)
        >>> stats = stream_channel_stats(model, loader, "features.*.conv.2")
    """
    if device is None:
        device = model_device(model)
    running = RunningLayerStats()
    with model_guard(model), torch.no_grad():
        for batch in batches:
            images = batch_images(batch).to(device)
            with capture(model, layers, stop_early=True, reduce=running.fold):
                model(images)
    if not running:
        raise ValueError("batches yielded nothing; pass at least one batch of images.")
    return running.health(weak_ratio)


@accepts_loaded_model(inputs=("data",), transform="transform")
def channel_stats(
    data: Any,
    model: nn.Module | LoadedModel | None = None,
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
    :class:`~fmapviz.engines.channels.ChannelStats`).

    Args:
        data: maps ((N,C,H,W) tensor or dict of them) when ``model`` is None; otherwise
            images: a (N,3,H,W) tensor, a ``LoadedImage``, a folder, a glob, a list of paths,
            or any iterable of batches (a DataLoader of tensors or (tensor, label) pairs), read
            through :func:`fmapviz.data.image_batches`.
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
        >>> stats["features.7.conv.2"].dead_channels  # never positive on these photos
        [9, 52, 54, 56]
    """
    if model is None:
        if isinstance(data, dict):
            return {name: compute_channel_stats(value, name, weak_ratio) for name, value in data.items()}
        return compute_channel_stats(data, None, weak_ratio)
    if layers is None:
        raise ValueError("layers= is required with model=: say which layers to measure, e.g. 'features.*'.")
    _, batches = image_batches(data, [transform or default_transform()], batch_size)
    return stream_channel_stats(
        model, (as_model_input(model, x) for (x,) in batches), layers, weak_ratio=weak_ratio, device=device
    )
