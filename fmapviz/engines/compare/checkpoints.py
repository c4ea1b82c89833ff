"""A series of checkpoints of one architecture compared layer by layer over the same images.

Per layer and checkpoint: the dead- and weak-channel fractions, the activation mean and std, and the
linear CKA to the last checkpoint (:class:`CheckpointSeries`).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data import image_batches
from ...errors import ModelLoadError
from ...hooks import LayerSelectors, model_guard
from ...inputs import default_transform, is_glob, path_list
from ...models import load_checkpoint, load_model
from ..similarity import StreamingCKA
from .blocks import block_layers
from .tap import CompareError, Tap


@dataclass
class CheckpointSeries:
    """Per-layer curves over a series of checkpoints (rows follow the checkpoint order).

    Attributes:
        checkpoints: the checkpoint files, in order.
        layers: the layers measured.
        dead_fraction, weak_fraction, mean, std, cka_to_final: (checkpoints, layers) float64.
        count: images seen.
    """

    checkpoints: list[str]
    layers: list[str]
    dead_fraction: torch.Tensor
    weak_fraction: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cka_to_final: torch.Tensor
    count: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready curves."""
        values = {"checkpoints": self.checkpoints, "layers": self.layers, "images": self.count}
        for name in ("dead_fraction", "weak_fraction", "mean", "std", "cka_to_final"):
            values[name] = [[round(float(v), 6) for v in row] for row in getattr(self, name)]
        return values


def _natural_key(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def checkpoint_files(checkpoints: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The checkpoint files named by paths or globs, globs sorted naturally (``ckpt_2`` before ``ckpt_10``).

    Raises:
        CompareError: the series is empty, or a path or glob names no file.
    """
    empty = CompareError("The checkpoint series is empty; pass at least two checkpoint files (ckpt_*.pt).")
    files: list[str] = []
    for item in path_list(checkpoints, empty):
        text = str(item)
        if Path(text).is_file():
            files.append(text)
        elif is_glob(text):
            matches = sorted(glob.glob(text), key=_natural_key)
            if not matches:
                raise CompareError(f"No checkpoint matches '{text}'. Check the pattern.")
            files += matches
        else:
            raise CompareError(f"Checkpoint '{text}' does not exist.")
    return files


def compare_checkpoints(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike],
    factory: str | Callable[[], nn.Module],
    data: Any,
    layers: LayerSelectors | None = None,
    *,
    transform: Callable | None = None,
    batch_size: int = 32,
    grid: int = 1,
    weak_ratio: float = 0.1,
    trust_checkpoint: bool = False,
) -> CheckpointSeries:
    """Dead channels, activation mean/std and CKA to the last checkpoint, per layer, over a checkpoint series.

    All checkpoints run on each batch in turn, so the images are read once and memory stays flat
    in their number (the models are held together: fine for tens of small checkpoints).

    Args:
        checkpoints: state-dict files or globs, in training order (globs sort naturally).
        factory: ``"file.py:build"`` / ``"package.module:build"`` or a callable building the model.
        data: images, as in :func:`compare`.
        layers: layer selectors (default :func:`block_layers`).
        transform: preprocessing of image files (default ImageNet 224 px).
        batch_size, grid, weak_ratio: as in :func:`compare`.
        trust_checkpoint: unpickle arbitrary objects from the checkpoints.

    Returns:
        A :class:`CheckpointSeries`.

    Raises:
        CompareError: an empty series, a missing file, no images, or a model that cannot run on them.
        ModelLoadError: a checkpoint does not fit the factory's model (names the file and the keys).
        ImageLoadError, TypeError, ValueError: ``data`` cannot be read as images (see
            :func:`fmapviz.data.image_batches`).

    Example:
        >>> net = torchvision.models.mobilenet_v2()
        >>> for step in range(3):  # a stand-in for a training run: one layer drifts step by step
        ...     _ = net.features[1].conv[0][0].weight.data.mul_(0.5)
        ...     torch.save(net.state_dict(), f"ckpt_{step}.pt")
        >>> series = fmapviz.compare_checkpoints("ckpt_*.pt", "torchvision.models:mobilenet_v2", "photos/")
        >>> [path.rsplit("/", 1)[-1] for path in series.checkpoints], series.layers[:2]
        (['ckpt_0.pt', 'ckpt_1.pt', 'ckpt_2.pt'], ['features.0', 'features.1'])
    """
    files = checkpoint_files(checkpoints)
    models = [_build(factory) for _ in files]
    for model, path in zip(models, files):
        load_checkpoint(model, path, trust=trust_checkpoint)
        model.eval()
    selectors = layers if layers is not None else block_layers(models[-1])
    taps = [Tap(model, selectors, f"Checkpoint {Path(path).name}", grid) for model, path in zip(models, files)]
    _, batches = image_batches(data, [transform or default_transform()], batch_size, recursive=True)
    cka: StreamingCKA | None = None
    count = 0
    with ExitStack() as stack, torch.no_grad():
        for model in models:
            stack.enter_context(model_guard(model))
        for (x,) in batches:
            runs = [tap.run(x)[0] for tap in taps]
            if cka is None:
                keys = list(runs[-1])
                cka = StreamingCKA([(f"{k}:{key}", f"{len(taps) - 1}:{key}") for k in range(len(taps)) for key in keys])
            cka.update({f"{k}:{key}": value for k, run in enumerate(runs) for key, value in run.items()})
            count += len(x)
    if cka is None or count < 2:
        raise CompareError("compare_checkpoints needs at least 2 images; data gave fewer.")
    stats = [tap.stats(weak_ratio) for tap in taps]
    keys = list(stats[-1])
    last = len(taps) - 1

    def table(value: Callable[[int, str], float]) -> torch.Tensor:
        # cpu: a table of Python numbers for the result record
        return torch.tensor([[value(k, key) for key in keys] for k in range(len(taps))], dtype=torch.float64)

    return CheckpointSeries(
        checkpoints=files,
        layers=keys,
        dead_fraction=table(lambda k, key: float(stats[k][key].dead.double().mean())),
        weak_fraction=table(lambda k, key: float(stats[k][key].weak.double().mean())),
        mean=table(lambda k, key: float(stats[k][key].mean.double().mean())),
        std=table(lambda k, key: float(taps[k].running[key].pooled_std)),
        cka_to_final=table(lambda k, key: 1.0 if k == last else cka.cka(f"{k}:{key}", f"{last}:{key}")),
        count=count,
    )


def _build(factory: str | Callable[[], nn.Module]) -> nn.Module:
    if callable(factory):
        model = factory()
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"The factory returned {type(model).__name__}, not a torch.nn.Module.")
        return model
    return load_model(factory).model
