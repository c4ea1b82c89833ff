"""What a scan reads: image files (through :func:`fmapviz.inputs.list_images`), Datasets and DataLoaders."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from ...errors import ImageLoadError
from ...inputs import batch_images, list_images, read_image_file


class _ImageFiles(Dataset):
    """Image files by global index; an unreadable file yields its reason instead of a tensor."""

    def __init__(self, paths: list[str], indices: list[int], transform: Callable) -> None:
        self.paths, self.indices, self.transform = paths, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str | None]:
        index = self.indices[position]
        try:
            tensor = self.transform(read_image_file(self.paths[index]))
        except ImageLoadError as error:
            return index, None, str(error)
        except (OSError, ValueError, RuntimeError, TypeError) as error:
            return index, None, f"the transform failed: {type(error).__name__}: {error}"
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            return index, None, f"the transform gave {type(tensor).__name__}, not a (3,H,W) tensor"
        return index, tensor, None


def _collate_files(items: list[tuple[int, torch.Tensor | None, str | None]]) -> tuple:
    good = [(index, tensor) for index, tensor, _ in items if tensor is not None]
    skipped = [(index, reason) for index, tensor, reason in items if tensor is None]
    if not good:
        return torch.empty(0, dtype=torch.int64), None, skipped
    shapes = {tuple(tensor.shape) for _, tensor in good}
    if len(shapes) > 1:
        raise ImageLoadError(
            f"Images have different sizes after the transform ({sorted(shapes)}). "
            "Use a transform that crops to one size."
        )
    indices = torch.tensor([index for index, _ in good], dtype=torch.int64)
    return indices, torch.stack([tensor for _, tensor in good]), skipped


def batches(
    data: Any, shard: tuple[int, int] | None, transform: Callable, batch_size: int, num_workers: int
) -> tuple[list[str] | None, Any]:
    """(sources, iterable of (global indices, images or None, skipped)) for any kind of data."""
    first, step = shard or (0, 1)
    if isinstance(data, (str, os.PathLike, list, tuple)):
        paths = list_images(data, recursive=True)
        files = _ImageFiles(paths, list(range(first, len(paths), step)), transform)
        loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_files)
        return paths, loader
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    if not isinstance(data, DataLoader):
        raise TypeError(
            f"Cannot scan a {type(data).__name__}: pass a folder, a list of image paths, a Dataset or a DataLoader."
        )
    if not isinstance(data.sampler, SequentialSampler) or data.batch_size is None:
        raise ValueError(
            "scan needs a DataLoader that visits the dataset in order with a batch_size "
            "(shuffle=False, no custom sampler), so images can be found again by index."
        )
    indices = list(range(first, len(data.dataset), step))
    if shard:
        data = DataLoader(
            Subset(data.dataset, indices),
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
        )

    def generate():
        done = 0
        for batch in data:
            images = batch_images(batch)
            yield torch.tensor(indices[done : done + len(images)], dtype=torch.int64), images, []
            done += len(images)

    return None, generate()
