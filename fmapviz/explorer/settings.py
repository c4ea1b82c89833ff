"""What an explorer site shows and how hard it works: :class:`ExploreSettings` and its quick preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engines.explain import ATTRIBUTIONS

# --quick: a whole mobilenet_v2 over 100 photos in under 20 minutes on a 2-core CPU (benchmarks/RESULTS.md)
QUICK = {"actmax_steps": 48, "actmax_size": 64, "actmax_copies": 1}


@dataclass(frozen=True)
class ExploreSettings:
    """What an explorer site shows and how hard it works; every field is part of the cache keys.

    Attributes:
        topk: dataset examples kept per channel by the scan.
        crops: examples shown on a channel page (at most ``topk``).
        least: least-activating photos shown on a channel page.
        explain_top: channels explained per layer on each image page.
        method: the channel attribution method (a key of :data:`fmapviz.engines.explain.ATTRIBUTIONS`).
        actmax_top: channels per layer (those firing hardest over the data) that get an activation-maximization
            image, the tile of their channel page; None: every channel.
        actmax_copies: images (other seeds) shown on the channel pages of the ``alternatives_top`` channels
            of each layer that fire hardest (the first is the tile, the others are alternatives).
        alternatives_top: channels per layer whose pages show the ``actmax_copies`` images.
        actmax_steps, actmax_size: optimization steps and image size of activation maximization.
        actmax_stop: stop an image's optimization once its objective has converged (``stop_tolerance`` of
            :func:`~fmapviz.maximize`: 1 % gained over a window of steps); None: every image runs every step.
            On mobilenet_v2 at 128 steps it halves the time of features.18 and leaves the images' sizes as they
            were (benchmarks/RESULTS.md).
        seed: seed of activation maximization.
        batch_size: images per forward pass.
    """

    topk: int = 16
    crops: int = 8
    least: int = 4
    explain_top: int = 5
    method: str = "activation_x_gradient"
    actmax_top: int | None = None
    actmax_copies: int = 3
    alternatives_top: int = 16
    actmax_steps: int = 128
    actmax_size: int = 128
    actmax_stop: float | None = 0.01
    seed: int = 0
    batch_size: int = 16

    @classmethod
    def quick(cls, **changes: Any) -> ExploreSettings:
        """The quick preset (``fmapviz explore --quick``), for a whole model on a CPU: activation maximization
        with 48 steps at 64 px, one image per channel (:data:`QUICK`; about 0.15 s a channel of mobilenet_v2 on
        2 CPU cores, a tenth of the defaults);
        ``changes`` override it.

        Example:
            >>> ExploreSettings.quick().actmax_copies, ExploreSettings.quick(actmax_size=96).actmax_size
            (1, 96)
        """
        return cls(**{**QUICK, **changes})

    def __post_init__(self) -> None:
        if self.method not in ATTRIBUTIONS:
            raise ValueError(f"Unknown attribution method '{self.method}'. Use one of: {', '.join(ATTRIBUTIONS)}.")
        for name in ("topk", "crops", "explain_top", "actmax_copies", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("least", "actmax_top", "alternatives_top", "actmax_steps"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}.")
