"""The explorer's activation-maximization stage: every missing image of every layer, in as few batches as fit.

The work is one image per (layer, channel, copy) not yet in the cache, ordered shallow to deep (the site's
layers are in execution order), then by copy and channel, and cut into chunks of :func:`maximize`'s
automatic batch size (16 on the CPU; on a GPU, what its free memory holds). A chunk can mix layers, whose
forward captures each and stops after the deepest, and copies, since every image has its own seed
(``seed + copy``): each image is the one a one-channel ``maximize`` call with that seed gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..engines.actmax import maximize
from ..engines.actmax.objectives import channel as channel_objective
from ..engines.actmax.optimize import auto_batch_size
from ..model_input import fixed_model_size
from ..models import LoadedModel
from .settings import ExploreSettings


@dataclass(frozen=True)
class ActMaxImage:
    """One activation-maximization image of a site: channel ``channel`` of ``layer``, seed ``seed + copy``."""

    layer: str
    channel: int
    copy: int


def actmax_work(
    chosen: dict[str, list[int]], settings: ExploreSettings, cached: Callable[[ActMaxImage], bool]
) -> list[ActMaxImage]:
    """The images not yet ``cached``, shallow to deep: for each layer (``chosen`` in execution order, with its
    channels), copy 0 of every chosen channel, then the other copies of the first ``alternatives_top``.

    Example:
        >>> settings = ExploreSettings(actmax_copies=2, alternatives_top=1)
        >>> [(i.layer, i.channel, i.copy) for i in actmax_work({"a": [3, 1]}, settings, lambda image: False)]
        [('a', 3, 0), ('a', 1, 0), ('a', 3, 1)]
    """
    work = []
    for layer, channels in chosen.items():
        for copy in range(settings.actmax_copies):
            for index in channels if copy == 0 else channels[: settings.alternatives_top]:
                work.append(ActMaxImage(layer, index, copy))
    return [image for image in work if not cached(image)]


def actmax_chunks(loaded: LoadedModel, work: list[ActMaxImage], size: int) -> list[list[ActMaxImage]]:
    """``work`` cut into batches of :func:`maximize`'s automatic size (neighbours in depth share a batch), sized
    for what the model sees: images of ``size``, or a fixed-size model's own size they are resized to."""
    chunk = auto_batch_size(loaded.model, fixed_model_size(loaded) or size, max(len(work), 1), loaded.channels)
    return [work[start : start + chunk] for start in range(0, len(work), chunk)]


def optimize_chunk(loaded: LoadedModel, chunk: list[ActMaxImage], settings: ExploreSettings) -> torch.Tensor:
    """The (N, 3, size, size) images of ``chunk`` in [0, 1], optimized together."""
    result = maximize(
        loaded.model,
        [channel_objective(image.layer, image.channel) for image in chunk],
        seeds=[settings.seed + image.copy for image in chunk],
        size=settings.actmax_size,
        model_size=fixed_model_size(loaded),  # a ViT of fixed size sees the image resized to its own
        steps=settings.actmax_steps,
        stop_tolerance=settings.actmax_stop,
        batch_size="auto",  # the chunk, or halves of it after an out-of-memory error
        progress=False,
        mean=loaded.mean,
        std=loaded.std,
    )
    return result.images


def chunk_label(chunk: list[ActMaxImage]) -> str:
    """What a chunk holds, for the progress line: ``features.3 16 channels``, ``features.3-features.4 16 channels``.

    Example:
        >>> chunk_label([ActMaxImage("a", 0, 0), ActMaxImage("b", 0, 0)])
        'a-b 2 channels'
    """
    layers = list(dict.fromkeys(image.layer for image in chunk))
    return f"{layers[0] if len(layers) == 1 else f'{layers[0]}-{layers[-1]}'} {len(chunk)} channels"
