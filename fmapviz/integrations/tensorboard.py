"""Log feature maps, channel health and activation histograms to TensorBoard while a model trains.

Needs the ``tensorboard`` extra (``pip install fmapviz[tensorboard]``). Logging rides on the
training forward pass: on a logging step, :meth:`FeatureMapLogger.watch` captures the chosen layers
during that forward (hooks live only inside the ``with`` block) and writes, per layer:

* ``fmapviz/maps/<layer>``: a grid of the first image's top channels (by mean), scaled per layer;
* ``fmapviz/activations/<layer>``: a histogram of every activation value of the batch;
* ``fmapviz/dead_fraction/<layer>``, ``fmapviz/weak_fraction/<layer>``, ``fmapviz/mean/<layer>``:
  channel health of the batch (see :class:`~fmapviz.engines.channels.ChannelStats`).

On other steps ``watch`` does nothing and registers nothing. :meth:`FeatureMapLogger.log` runs an
extra forward on a fixed batch (no gradients, eval mode) when you ask for one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    import tensorboard  # noqa: F401  (the extra; SummaryWriter comes from torch.utils.tensorboard)
except ImportError:
    raise ImportError(
        "fmapviz.integrations.tensorboard needs TensorBoard: pip install 'fmapviz[tensorboard]'"
    ) from None

import torch
from torch import nn

from ..engines.channels import compute_channel_stats, normalize_maps, select_channels
from ..hooks import LayerSelectors, capture, feature_maps, model_guard
from ..plot.mosaic import grid


def write_layers(
    writer: Any,
    maps: Mapping[str, torch.Tensor],
    step: int,
    *,
    top: int = 16,
    images: bool = True,
    histograms: bool = True,
    health: bool = True,
    weak_ratio: float = 0.1,
    prefix: str = "fmapviz",
) -> None:
    """Write one step's maps (layer → (N,C,H,W) or (N,C)) to a ``SummaryWriter``-like ``writer``.

    Example:
        >>> write_layers(SummaryWriter("runs/x"), fmapviz.feature_maps(model, x, "layer*"), step=0)
    """
    for layer, values in maps.items():
        values = values.detach()
        if images and values.ndim == 4:
            first = values[:1].float()
            chosen = select_channels(first, f"top:{top}")
            tiles = normalize_maps(first[:, chosen], "layer").values[0]
            writer.add_image(f"{prefix}/maps/{layer}", grid(tiles, cmap="viridis"), step, dataformats="HWC")
        if histograms:
            writer.add_histogram(f"{prefix}/activations/{layer}", values.float().flatten().cpu(), step)
        if health and values.ndim in (2, 4):
            stats = compute_channel_stats(values, layer, weak_ratio)
            writer.add_scalar(f"{prefix}/dead_fraction/{layer}", float(stats.dead.float().mean()), step)
            writer.add_scalar(f"{prefix}/weak_fraction/{layer}", float(stats.weak.float().mean()), step)
            writer.add_scalar(f"{prefix}/mean/{layer}", float(stats.mean.mean()), step)


class FeatureMapLogger:
    """Log chosen layers to a ``SummaryWriter`` every ``every`` steps, from the training forward pass.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with ``add_image``,
            ``add_histogram``, ``add_scalar``).
        model: the model being trained.
        layers: layer selectors (see :mod:`fmapviz.hooks`).
        every: log on steps divisible by this.
        top: channels per feature-map grid.
        images, histograms, health: what to write.
        weak_ratio: threshold for weak channels.

    Example:
        >>> logger = FeatureMapLogger(SummaryWriter("runs/a"), model, ["layer1", "layer4"], every=100)
        >>> for step, (x, y) in enumerate(loader):
        ...     with logger.watch(step):
        ...         loss = criterion(model(x), y)
        ...     loss.backward(); optimizer.step(); optimizer.zero_grad()
    """

    def __init__(
        self,
        writer: Any,
        model: nn.Module,
        layers: LayerSelectors,
        *,
        every: int = 100,
        top: int = 16,
        images: bool = True,
        histograms: bool = True,
        health: bool = True,
        weak_ratio: float = 0.1,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}.")
        self.writer, self.model, self.layers, self.every = writer, model, layers, every
        self.options = dict(top=top, images=images, histograms=histograms, health=health, weak_ratio=weak_ratio)

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logging step."""
        return step % self.every == 0

    @contextmanager
    def watch(self, step: int) -> Iterator[None]:
        """Capture the layers during the forward pass inside the block, on logging steps only; then write them.

        Hooks are removed when the block ends, even on an exception (nothing is written then).
        """
        if not self.due(step):
            yield
            return
        with capture(self.model, self.layers, train=None) as maps:  # the training step stays as it is
            yield
            captured = dict(maps)
        if captured:
            self.write(captured, step)

    def log(self, x: torch.Tensor, step: int) -> None:
        """Run an extra forward on ``x`` (eval mode, no gradients, model restored) and write its maps now."""
        with model_guard(self.model):
            maps = feature_maps(self.model, x, self.layers, stop_early=True)
        self.write(maps, step)

    def write(self, maps: Mapping[str, torch.Tensor], step: int) -> None:
        """Write captured maps for ``step`` (see :func:`write_layers`)."""
        write_layers(self.writer, maps, step, **self.options)
