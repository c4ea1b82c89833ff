"""The scan driver: one streaming pass over the data, sharded by rank and gathered under ``torchrun``.

Data is read through :func:`fmapviz.data.indexed_batches`; ranks and gathers come from :mod:`fmapviz.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data import indexed_batches
from ...devices import describe
from ...distributed import gather_objects, is_distributed, rank_and_world
from ...hooks import LayerSelectors, capture, model_guard, resolve_layers
from ...inputs import default_transform, model_device, normalization
from ...layers import layer_geometry
from ...models import LoadedModel
from ...progress import Progress
from .reduce import LayerScan
from .result import ScanResult


def scan(
    model: nn.Module | LoadedModel,
    data: str | os.PathLike | Sequence[str | os.PathLike] | DataLoader | Dataset,
    layers: LayerSelectors,
    *,
    topk: int = 16,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    transform: Callable[[Any], torch.Tensor] | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
) -> ScanResult:
    """Stream a dataset through the model once and keep channel statistics and top-k images per layer.

    Memory stays O(channels × k): each selected layer's output is reduced as it runs and
    then dropped, and the forward pass stops after the last selected layer.

    Args:
        model: an ``nn.Module`` or a :class:`~fmapviz.models.LoadedModel` (whose transform,
            mean and std are then used). Its mode and parameters are restored afterwards.
        data: a folder of images (searched recursively), a list of image paths, a Dataset or a
            DataLoader (in order, ``shuffle=False``) yielding image tensors or (image, label) pairs.
        layers: layer selectors (see :mod:`fmapviz.hooks`); outputs must be (N,C,H,W) or (N,C).
        topk: how many top images to keep per channel.
        batch_size, num_workers: for reading image files (a DataLoader keeps its own).
        device: where to run (default: the model's device); the model is not moved.
        transform: preprocessing for image files (default: the LoadedModel's, else resize 256,
            centre-crop 224, ImageNet normalization).
        shard: (i, n) scans every n-th image starting at i. Under ``torch.distributed``
            (e.g. ``torchrun``) and without ``shard``, each rank scans shard (rank, world_size),
            and the shards are gathered so every rank returns the merged result.
        progress: report each finished batch (a bar on a terminal, else one line on stderr).

    Returns:
        A :class:`ScanResult`. Unreadable files are listed in ``skipped`` with the reason.

    Raises:
        LayerNotFoundError: a selector matches no module.
        ValueError, TypeError: bad ``topk``, ``shard``, data or layer output shape.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> result = fmapviz.scan(loaded, "photos/", ["features.7", "features.14"], topk=8)
        >>> result.stats("features.7").fraction_positive.shape
        torch.Size([64])
        >>> result.examples("features.7", 5)[0].crop.shape  # what channel 5 saw in its best image
        torch.Size([3, 75, 75])
    """
    mean = std = None
    if isinstance(model, LoadedModel):
        transform = transform or model.transform
        mean, std = model.mean, model.std
        model = model.model
    if isinstance(data, (DataLoader, Dataset)) and transform is not None:
        raise ValueError("transform= applies to image files only; a Dataset or DataLoader brings its own transform.")
    transform = transform or default_transform()
    mean, std = normalization(transform, mean, std)
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}.")
    distributed = shard is None and is_distributed()
    if distributed:
        shard = rank_and_world()
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}.")
    names = resolve_layers(model, layers)
    device = torch.device(device) if device is not None else model_device(model)
    sources, loader = indexed_batches(data, shard, transform, batch_size, num_workers)

    scanned: dict[str, LayerScan] = {}
    current = {"sources": torch.empty(0, dtype=torch.int64)}  # cpu: the loader's indices, moved in update

    def reduce(key: str, output: torch.Tensor) -> None:
        if output.ndim not in (2, 4):
            raise ValueError(
                f"Layer '{key}' gives outputs of shape {tuple(output.shape)}; scan needs (N,C,H,W) or (N,C) maps."
            )
        if key not in scanned:
            scanned[key] = LayerScan.start(output.shape[1], output.device)
        scanned[key].update(output, current["sources"], topk)

    skipped: list[tuple[str, str]] = []
    images = 0
    input_size = None
    channels = 3
    bar = Progress("scan", len(loader) if hasattr(loader, "__len__") else None, enabled=progress)
    capturing = capture(model, names, stop_early=True, reduce=reduce)  # entered anew for each batch
    with model_guard(model), torch.no_grad():
        for indices, batch, bad in loader:
            skipped += [(sources[index] if sources else index, reason) for index, reason in bad]
            if batch is None:
                continue
            batch = batch.to(device)
            channels, input_size = batch.shape[1], tuple(batch.shape[-2:])
            current["sources"] = indices
            with capturing:
                model(batch)
            images += len(indices)
            bar.done(f"batch ({images} images)")
        bar.close()
        geometry = {}
        if input_size is not None:
            found = layer_geometry(model, names, (1, channels, *input_size))
            geometry = {name: found.get(name) for name in scanned}
    result = ScanResult(
        layers=scanned,
        sources=sources,
        skipped=skipped,
        images=images,
        topk=topk,
        input_size=input_size,
        geometry=geometry,
        mean=mean,
        std=std,
        transform_repr=repr(transform) if sources is not None else None,
        shard=shard,
        device=describe(device),
        transform=transform if sources is not None else None,
    )
    if distributed:
        result = _gather(result)
    return result


def _gather(result: ScanResult) -> ScanResult:
    """Every rank's shard, merged in rank order (all ranks get the merged result)."""
    shards = [ScanResult.from_state(state) for state in gather_objects(result.to_state())]
    shards = [shard for shard in shards if shard.layers] or shards[:1]
    merged = shards[0]
    for shard in shards[1:]:
        merged = ScanResult.merge(merged, shard)
    merged.shard, merged.transform = None, result.transform
    return merged
