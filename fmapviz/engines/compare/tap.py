"""What a comparison reads from each model in one forward pass, and the error it raises.

A :class:`Tap` folds each chosen layer's maps into running per-channel statistics
(:class:`~fmapviz.engines.channels.RunningLayerStats`: dead and weak channels) and average-pools them
into features for linear CKA (:func:`~fmapviz.engines.similarity.pooled_features`), inside the
forward pass (capture's ``reduce=``), so memory does not grow with the number of images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import FmapvizError
from ...hooks import LayerSelectors, capture, resolve_layers
from ...inputs import model_device
from ..channels import ChannelStats, RunningLayerStats
from ..similarity import pooled_features


class CompareError(FmapvizError, ValueError):
    """The two models (or the checkpoint series) cannot be compared as given."""


class Tap:
    """One model's chosen layers folded into channel statistics and pooled features per forward pass."""

    def __init__(self, model: nn.Module, layers: LayerSelectors, label: str, grid: int) -> None:
        self.model, self.label, self.grid = model, label, grid
        self.names = resolve_layers(model, layers)
        self.running = RunningLayerStats()
        self.device = model_device(model)

    def _fold(self, name: str, output: torch.Tensor) -> torch.Tensor:
        self.running.fold(name, output)
        return pooled_features(output, self.grid)

    def run(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        """(layer → pooled features, the model's output) of one batch.

        Raises:
            CompareError: the model cannot run on ``x``.
        """
        try:
            with capture(self.model, self.names, reduce=self._fold) as features:
                output = self.model(x.to(self.device))
        except (RuntimeError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CompareError(
                f"{self.label} cannot run on inputs of shape {tuple(x.shape)} ({reason}). "
                "Give each model inputs of the size it expects (transform_a= / transform_b=, CLI --size)."
            ) from None
        return dict(features), output

    def stats(self, weak_ratio: float) -> dict[str, ChannelStats]:
        """Layer → channel health over every batch run so far."""
        return self.running.health(weak_ratio)
