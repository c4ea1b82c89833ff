"""Average Drop and Increase in Confidence (Chattopadhyay et al., "Grad-CAM++", 2018; torchcam's
``ClassificationMetric``): show the model only ``map * x`` and measure how much the class probability
drops (lower is better) and how often it rises (higher is better).

Maps and targets: see :mod:`.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...hooks import model_guard
from ...model_input import accepts_loaded_model
from ...models import LoadedModel
from ..inference import fast_forward
from .common import class_scores, full_precision, maps_and_classes


@dataclass
class ConfidenceChange:
    """Average Drop and Increase in Confidence per image.

    Attributes:
        drop: ``(N,)`` ``max(0, p - p_masked) / p``: how much of the class probability is lost
            when the model sees only ``map * x`` (lower is better).
        increase: ``(N,)`` bool, ``p_masked > p`` (the share of True is the Increase in Confidence).
        probability, masked_probability: ``(N,)`` the two probabilities.

    Example:
        >>> change = fmapviz.evaluate.average_drop_increase(model, x, fmapviz.saliency(model, x, "gradcam"))
        >>> tuple(change.drop.shape), change.increase.dtype
        ((1,), torch.bool)
    """

    drop: torch.Tensor
    increase: torch.Tensor
    probability: torch.Tensor
    masked_probability: torch.Tensor


@accepts_loaded_model()
@full_precision
def average_drop_increase(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    maps: Any,
    target: int | Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 16,
) -> ConfidenceChange:
    """Average Drop and Increase in Confidence (Chattopadhyay et al., 2018), as torchcam computes them.

    Each map is min-max scaled to [0, 1] and multiplies the model input ``x`` (so a zero in the
    map shows the model a zero input there: the dataset mean for normalized inputs).

    Args:
        model: a classifier.
        x: ``(N, C, H, W)`` model input.
        maps: ``(N, H, W)`` maps or a SaliencyResult.
        target: class per image; taken from a SaliencyResult when None.
        batch_size: images per forward pass.

    Returns:
        A :class:`ConfidenceChange`; ``drop.mean()`` is the Average Drop,
        ``increase.float().mean()`` the Increase in Confidence.

    Example:
        >>> change = fmapviz.evaluate.average_drop_increase(model, x, fmapviz.saliency(model, x, "gradcam"))
        >>> 0.0 <= float(change.drop.mean()) <= 1.0
        True
    """
    maps, classes = maps_and_classes(maps, target, x, model)
    maps = maps.float()
    low = maps.flatten(1).amin(1)[:, None, None]
    scaled = (maps - low) / (maps.flatten(1).amax(1)[:, None, None] - low + 1e-8)
    with torch.no_grad(), model_guard(model):
        forward = fast_forward(model)
        probability = class_scores(forward, x, classes, "probability", batch_size)
        masked = class_scores(forward, scaled[:, None].to(x.dtype) * x, classes, "probability", batch_size)
    return ConfidenceChange(
        (probability - masked).clamp(min=0) / probability, masked > probability, probability, masked
    )
