"""channel_page: one unit's page from a scan, glue over maximize, ScanResult.examples and show_channel_page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..engines.actmax import maximize
from ..engines.scan import ScanResult
from ..models import LoadedModel
from ..progress import Progress
from ..views.scan import show_channel_page


def channel_page(
    model: nn.Module | LoadedModel,
    scan_result: ScanResult,
    layer: str,
    channel: int,
    *,
    with_actmax: bool = True,
    steps: int = 128,
    size: int = 128,
    seed: int = 0,
    data: DataLoader | Dataset | None = None,
    transform: Callable[[Any], torch.Tensor] | None = None,
    progress: bool = False,
) -> Any:
    """A channel page: the unit's activation-maximization image beside its top-k crops and histogram.

    Glue over :func:`fmapviz.maximize` and :func:`fmapviz.show_channel_page`.

    Args:
        model: the scanned model (``nn.Module`` or :class:`~fmapviz.models.LoadedModel`).
        scan_result: its :class:`ScanResult`.
        layer, channel: which unit.
        with_actmax: optimize an image for the unit (``steps`` Adam steps at ``size`` pixels, ``seed``).
        data, transform: passed to :meth:`ScanResult.examples` to read the top images.
        progress: report each finished stage (actmax image, top-k crops): a bar on a terminal,
            else one line on stderr.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`.

    Example:
        >>> result = fmapviz.scan(loaded, "photos/", "features.7", topk=3)
        >>> fmapviz.channel_page(loaded, result, "features.7", 12, steps=8, size=64).save("features7_12.png")
        PosixPath('features7_12.png')
    """
    if isinstance(model, LoadedModel):
        transform = transform or model.transform
        model = model.model
    actmax_image = None
    stages = Progress("channel", 2 if with_actmax else 1, enabled=progress)
    if with_actmax:
        optimized = maximize(
            model,
            f"{layer}[{channel}]",
            size=size,
            steps=steps,
            seed=seed,
            progress=False,
            mean=scan_result.mean,
            std=scan_result.std,
        )
        actmax_image = optimized.images[0]
        stages.done(f"actmax image of {layer}[{channel}]")
    examples = scan_result.examples(layer, channel, data=data, transform=transform)
    stages.done(f"{len(examples)} top-k crops")
    stages.close()
    return show_channel_page(scan_result, layer, channel, examples=examples, actmax_image=actmax_image)
