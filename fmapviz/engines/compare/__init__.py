"""Two models, or a series of checkpoints, compared layer by layer over the same images.

* :mod:`.models`: :func:`compare` of two models (CKA of every layer pair, channel health, predictions);
* :mod:`.checkpoints`: :func:`compare_checkpoints` over a checkpoint series (dead channels, activation
  mean and std, CKA to the last checkpoint);
* :mod:`.tap`: what both read from a model in one forward pass, and :class:`CompareError`;
* :mod:`.blocks`: the default layers (:func:`block_layers`).
"""

from .blocks import block_layers
from .checkpoints import CheckpointSeries, checkpoint_files, compare_checkpoints
from .models import MAX_SHOWN_IMAGES, ModelComparison, compare
from .tap import CompareError

__all__ = [
    "MAX_SHOWN_IMAGES",
    "CheckpointSeries",
    "CompareError",
    "ModelComparison",
    "block_layers",
    "checkpoint_files",
    "compare",
    "compare_checkpoints",
]
