"""The scan driver: one streaming pass over the data, sharded by rank and gathered under ``torchrun``.

Data is read through :func:`fmapviz.data.indexed_batches`; ranks and gathers come from :mod:`fmapviz.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data import batch_images, indexed_batches
from ...devices import describe
from ...distributed import gather_objects, is_distributed, rank_and_world
from ...hooks import LayerSelectors, capture, model_guard, resolve_layers
from ...inputs import default_transform, model_device, model_dtype, normalization
from ...layers import layer_geometry
from ...memory import check_fits, forward_bytes, halving_chunks, rows_that_fit
from ...models import LoadedModel
from ...progress import Progress
from .reduce import BatchTree, LayerScan, Scans
from .result import ScanResult

AUTO_BATCH = 32
"""Images per forward pass with ``batch_size="auto"`` (fewer when the free memory holds fewer)."""


def scan(
    model: nn.Module | LoadedModel,
    data: str | os.PathLike | Sequence[str | os.PathLike] | DataLoader | Dataset,
    layers: LayerSelectors,
    *,
    topk: int = 16,
    batch_size: int | Literal["auto"] = "auto",
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
        batch_size: images per forward pass when reading image files or a Dataset (a DataLoader keeps its own);
            ``"auto"``: 32, fewer when the device's free memory holds fewer, halved and retried on out-of-memory.
            A given size whose forward cannot fit in the free memory is refused before a batch is read.
        num_workers: processes reading image files or a Dataset.
        device: where to run (default: the model's device); the model is not moved.
        transform: preprocessing for image files (default: the LoadedModel's, else resize 256,
            centre-crop 224, ImageNet normalization).
        shard: (i, n) scans shard i of n: blocks of whole batches dealt out in turn
            (:func:`fmapviz.data.shard_batches`). Under ``torch.distributed`` (e.g. ``torchrun``) and
            without ``shard``, each rank scans shard (rank, world_size), and the shards are gathered so
            every rank returns the merged result: the same numbers, bit for bit, as one process.
        progress: report each finished batch (a bar on a terminal, else one line on stderr).

    Returns:
        A :class:`ScanResult`. Unreadable files are listed in ``skipped`` with the reason.

    Raises:
        LayerNotFoundError: a selector matches no module.
        ValueError, TypeError: bad ``topk``, ``shard``, ``batch_size``, data or layer output shape.
        MemoryLimitError: a ``batch_size`` that cannot fit in the free memory (or one image that does not).

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> result = fmapviz.scan(loaded, "photos/", ["features.7", "features.14"], topk=8)
        >>> result.stats("features.7").fraction_positive.shape
        torch.Size([64])
        >>> result.examples("features.7", 5)[0].crop.shape  # what channel 5 saw in its best image
        torch.Size([3, 75, 75])
    """
    mean = std = None
    known_shape = None  # (C, H, W) of the images, when the model's own transform makes them
    if isinstance(model, LoadedModel):
        known_shape = (model.channels, *model.input_size) if transform is None else None
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
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be 'auto' or a positive int, not {batch_size!r}.")
    names = resolve_layers(model, layers)
    device = torch.device(device) if device is not None else model_device(model)
    read = AUTO_BATCH if batch_size == "auto" else batch_size
    sources, loader = indexed_batches(data, shard, transform, read, num_workers)
    readable = loader.dataset if sources is not None else data if isinstance(data, Dataset) else None
    rows = _batch_rows(model, readable, sources is not None, known_shape, batch_size, device)
    chosen = batch_size != "auto" and rows is not None  # a DataLoader's own batches halve on out-of-memory

    trees: list[tuple[int, BatchTree]] = []  # (first batch, its fold) per run of consecutive batches
    batch: Scans = {}  # the current batch's scans, reduced part by part
    current = {"sources": torch.empty(0, dtype=torch.int64)}  # cpu: the loader's indices, moved in update

    def reduce(key: str, output: torch.Tensor) -> None:
        if output.ndim not in (2, 4):
            raise ValueError(
                f"Layer '{key}' gives outputs of shape {tuple(output.shape)}; scan needs (N,C,H,W) or (N,C) maps."
            )
        if key not in batch:
            batch[key] = LayerScan.start(output.shape[1], output.device)
        batch[key].update(output, current["sources"], topk)

    skipped: list[tuple[str, str]] = []
    images = 0
    input_size = None
    channels = 3
    bar = Progress("scan", len(loader) if hasattr(loader, "__len__") else None, enabled=progress)
    capturing = capture(model, names, stop_early=True, reduce=reduce)  # entered anew for each batch

    def forward(part: slice) -> None:
        """The current batch's images ``part`` through the model; a part that fails leaves no trace."""
        kept = {key: layer.snapshot() for key, layer in batch.items()}
        current["sources"] = current["indices"][part]
        try:
            with capturing:
                model(current["batch"][part])
        except BaseException:  # out of memory half-way: the layers reduced so far forget this part
            batch.clear()
            batch.update(kept)
            raise

    with model_guard(model), torch.no_grad():
        for number, indices, pixels, bad in loader:
            skipped += [(sources[index] if sources else index, reason) for index, reason in bad]
            if not trees or number != trees[-1][0] + sum(size for size, _ in trees[-1][1].parts):
                trees.append((number, BatchTree(topk)))
            batch = {}
            if pixels is not None:
                pixels = pixels.to(device)
                channels, input_size = pixels.shape[1], tuple(pixels.shape[-2:])
                current.update(batch=pixels, indices=indices)
                rows = halving_chunks(
                    forward, len(indices), rows or len(indices), what="scan", option="batch_size", chosen=chosen
                )
                images += len(indices)
                bar.done(f"batch ({images} images)")
            trees[-1][1].push(batch)  # a batch of unreadable files too: the fold's shape counts every batch
        bar.close()
        scanned = _fold([part for _, tree in trees for part in tree.parts], topk)
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
        result = _gather(result, [(first, _plain(tree.parts)) for first, tree in trees])
    return result


def _batch_rows(
    model: nn.Module,
    dataset: Dataset | None,
    files: bool,
    shape: tuple[int, ...] | None,
    batch_size: int | Literal["auto"],
    device: torch.device,
) -> int | None:
    """Images per forward pass: ``batch_size``, checked against the free memory before a batch is read, or
    :data:`AUTO_BATCH` and fewer if the free memory holds fewer; None for a DataLoader's own batches (no
    ``dataset``: the files or Dataset scan reads, ``files`` for files).

    The need is the least a pass without gradients holds (the input and the largest layer output), from the
    model's own image size or else the first image read alone.
    """
    if dataset is None:
        return None
    if len(dataset) == 0:
        return AUTO_BATCH if batch_size == "auto" else batch_size
    if shape is None:
        item = dataset[0]
        image = item[1] if files else batch_images(item)  # files: (index, tensor or None, reason)
        shape = tuple(image.shape[-3:]) if isinstance(image, torch.Tensor) and image.ndim >= 3 else None
    per_image = forward_bytes(model, (1, *shape), model_dtype(model), kept=False) if shape else 0
    if batch_size == "auto":
        return max(1, min(AUTO_BATCH, rows_that_fit(device, per_image) or AUTO_BATCH))
    needed = min(batch_size, len(dataset)) * per_image
    check_fits(needed, device, f"scan with batch_size={batch_size}", "lower batch_size (--batch-size)")
    return batch_size


def _fold(parts: list[tuple[int, Scans]], topk: int) -> Scans:
    """Parts of consecutive batches (in batch order) folded as one pass folds them."""
    tree = BatchTree(topk)
    for size, scans in parts:
        tree.push(scans, size)
    return tree.total()


def _plain(parts: list[tuple[int, Scans]]) -> list[tuple[int, dict[str, Any]]]:
    """Parts as plain data for a gather: each layer's tensors (on the CPU) and map size."""
    return [(size, {name: (layer.tensors(), layer.map_size) for name, layer in scans.items()}) for size, scans in parts]


def _gather(result: ScanResult, trees: list[tuple[int, list[tuple[int, dict[str, Any]]]]]) -> ScanResult:
    """Every rank's shard merged (all ranks get the merged result): the statistics folded batch by batch as
    one process would fold them, so that any number of ranks gives the same numbers."""
    # the layers travel once, as the parts of the fold; the rest of each rank's result is merged as it was
    gathered = gather_objects((replace(result, layers={}).to_state(), trees))
    shards = [ScanResult.from_state(state) for state, _ in gathered]
    shards = [shard for shard in shards if shard.input_size is not None] or shards[:1]  # ranks that read an image
    merged = shards[0]
    for shard in shards[1:]:
        merged = ScanResult.merge(merged, shard)
    runs = sorted((run for _, runs in gathered for run in runs), key=lambda run: run[0])
    parts = [
        (size, {name: LayerScan.from_tensors(state, map_size) for name, (state, map_size) in scans.items()})
        for _, plain in runs
        for size, scans in plain
    ]
    merged.layers = _fold(parts, result.topk)  # on the CPU, as gathered
    merged.shard, merged.transform = None, result.transform
    return merged
