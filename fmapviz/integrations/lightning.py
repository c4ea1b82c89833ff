"""A Lightning callback that logs feature maps, channel health and histograms to TensorBoard.

Needs the ``lightning`` extra (``pip install fmapviz[lightning]``) and a ``TensorBoardLogger``
on the trainer. It uses the same capture and writing code as
:class:`fmapviz.integrations.tensorboard.FeatureMapLogger`: on a logging step, hooks are added just
before the training step and removed right after it (or on an exception); no extra forward runs.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:
    raise ImportError("fmapviz.integrations.lightning needs Lightning: pip install 'fmapviz[lightning]'") from None

from ..hooks import Capture, LayerSelectors, capture
from .tensorboard import write_layers


class FeatureMapCallback(Callback):
    """Log chosen layers of the LightningModule every ``every`` global steps.

    Args:
        layers: layer selectors, relative to the LightningModule (``"net.layer1"``).
        every: log when ``trainer.global_step`` is divisible by this.
        **options: ``top``, ``images``, ``histograms``, ``health``, ``weak_ratio`` as in
            :func:`~fmapviz.integrations.tensorboard.write_layers`.

    Example:
        >>> callback = FeatureMapCallback("net.features.*", every=50)
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[callback])
    """

    def __init__(self, layers: LayerSelectors, *, every: int = 100, **options: Any) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}.")
        self.layers, self.every, self.options = layers, every, options
        self._capture: Capture | None = None
        self._maps: dict | None = None
        self._step = 0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.every == 0 and self._capture is None:
            self._capture = capture(pl_module, self.layers, train=None)  # the training step stays as it is
            self._maps = self._capture.__enter__()
            self._step = trainer.global_step  # the optimizer step increments it before on_train_batch_end

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._capture is None:
            return
        maps = dict(self._maps)
        self._release()
        writer = getattr(trainer.logger, "experiment", None)
        if not hasattr(writer, "add_histogram"):
            raise TypeError("FeatureMapCallback writes to TensorBoard: give the Trainer a TensorBoardLogger.")
        if maps:
            write_layers(writer, maps, self._step, **self.options)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._release()

    def _release(self) -> None:
        if self._capture is not None:
            captured, self._capture, self._maps = self._capture, None, None
            captured.__exit__(None, None, None)
