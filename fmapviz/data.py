"""Images in batches: paths, folders, globs, tensors, Datasets and DataLoaders -> model inputs.

The one place the engines read image data through:

* :func:`image_batches`: a ``LoadedImage``, a tensor, image files or any iterable of batches as
  batches of model inputs, one tensor per transform (``channel_stats`` and ``compare``);
* :func:`indexed_batches`: files, a Dataset or a DataLoader as batches that know the global index
  of every image, sharded, unreadable files skipped with their reason (``scan``);
* :func:`file_batches`: image files as batches, each file read once for several transforms;
* :func:`read_input`: one image file as a model input (reading back a scan's top images);
* :func:`list_photos`: the photos of an explorer site, as absolute paths;
* :func:`batch_images`: the image tensor inside a dataset item or a batch.

Which files a path, folder or glob names is :func:`fmapviz.inputs.list_images`; how one file is read,
:func:`fmapviz.inputs.read_image_file`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from .errors import ImageLoadError
from .inputs import LoadedImage, PathSource, list_images, path_list, read_image_file, stack_images, transform_images

Transform = Callable[[Any], torch.Tensor]


def batch_images(item: Any) -> torch.Tensor:
    """The image tensor in a dataset item or batch: the item itself, the first element of a tuple or
    list, or the ``image``/``images``/``pixel_values``/``input``/``x`` entry of a dict.

    Raises:
        TypeError: no tensor is found; the message says what to yield.

    Example:
        >>> batch_images((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))).shape
        torch.Size([2, 3, 8, 8])
    """
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    if isinstance(item, dict):
        for key in ("image", "images", "pixel_values", "input", "x"):
            if isinstance(item.get(key), torch.Tensor):
                return item[key]
    raise TypeError(
        f"Cannot find the image tensor in a data item or batch of type {type(item).__name__}: yield a tensor, "
        "an (image, label) tuple or a dict with an 'image' key."
    )


def read_input(path: str | os.PathLike, transform: Transform) -> torch.Tensor:
    """One image file as the model input ``transform`` makes of it.

    Raises:
        ImageLoadError: the file is missing, unreadable or not an image.
    """
    return transform(read_image_file(path))


def image_batches(
    data: Any, transforms: Sequence[Transform], batch_size: int, *, recursive: bool = False
) -> tuple[list[str] | None, Iterable[tuple[torch.Tensor, ...]]]:
    """``data`` as batches of model inputs: each batch is a tuple with one tensor per transform.

    Args:
        data: a :class:`~fmapviz.inputs.LoadedImage` or a (N,C,H,W) or (C,H,W) tensor (split into
            ``batch_size`` images, the transforms not applied); a path, folder or glob, or a non-empty
            list of them (each file read once per batch and given to every transform); or any iterable
            of batches, e.g. a DataLoader, yielding what :func:`batch_images` finds a tensor in.
        transforms: the preprocessing of image files, one per tensor of a batch.
        batch_size: images per batch from tensors and files.
        recursive: also read the images in sub-folders of folders.

    Returns:
        (the files read, or None when ``data`` was not files; the batches, read lazily).

    Raises:
        ValueError: ``batch_size`` below 1, or a tensor that is not (C,H,W) or (N,C,H,W).
        TypeError: ``data`` holds no images.
        ImageLoadError: a path names no image, a file cannot be read, or the transform gives no
            tensor or tensors of different sizes (when the batches are read).

    Example:
        >>> files, batches = image_batches("photos/", [loaded.transform], 16)
        >>> next(iter(batches))[0].shape
        torch.Size([16, 3, 224, 224])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(data, LoadedImage):
        data = data.tensor
    if isinstance(data, torch.Tensor):
        images = data.unsqueeze(0) if data.ndim == 3 else data
        if images.ndim != 4:
            raise ValueError(f"images must be (C,H,W) or (N,C,H,W), got shape {tuple(data.shape)}.")
        return None, ((chunk,) * len(transforms) for chunk in torch.split(images, batch_size))
    items = [data] if isinstance(data, (str, os.PathLike)) else data
    if isinstance(items, (list, tuple)) and items and all(isinstance(item, (str, os.PathLike)) for item in items):
        files = list_images(items, recursive=recursive)
        return files, file_batches(files, transforms, batch_size)
    if isinstance(data, Iterable):
        return None, ((batch_images(batch),) * len(transforms) for batch in data)
    raise TypeError(
        f"Cannot read images from a {type(data).__name__}: pass a folder, files, a glob, a tensor or batches."
    )


def file_batches(
    files: Sequence[str], transforms: Sequence[Transform], batch_size: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Image files as batches of ``batch_size``, each a tuple with one (N,C,H,W) tensor per transform.

    Each file is read once per batch and given to every transform (equal transforms run once).

    Raises:
        ImageLoadError: a file cannot be read, or a transform gives no (C,H,W) tensor or tensors of
            different sizes.

    Example:
        >>> x_a, x_b = next(file_batches(["assets/chelsea.png"], [loaded.transform, default_transform(160)], 1))
        >>> x_a.shape, x_b.shape
        (torch.Size([1, 3, 224, 224]), torch.Size([1, 3, 160, 160]))
    """
    distinct: list[Transform] = []
    for transform in transforms:
        if transform not in distinct:
            distinct.append(transform)
    slots = [distinct.index(transform) for transform in transforms]
    for start in range(0, len(files), batch_size):
        pictures = [(path, read_image_file(path)) for path in files[start : start + batch_size]]
        made = [transform_images(pictures, transform) for transform in distinct]
        yield tuple(made[slot] for slot in slots)


class _ImageFiles(Dataset):
    """Image files by global index; an unreadable file yields its reason instead of a tensor."""

    def __init__(self, paths: list[str], indices: list[int], transform: Transform) -> None:
        self.paths, self.indices, self.transform = paths, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str | None]:
        index = self.indices[position]
        try:
            tensor = read_input(self.paths[index], self.transform)
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
    indices = torch.tensor([index for index, _ in good], dtype=torch.int64)
    return indices, stack_images([tensor for _, tensor in good]), skipped


IndexedBatch = tuple[int, torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]
"""(batch number, global indices (N,), images (N,C,H,W) or None, [(global index, reason)] of the files skipped)."""


def shard_batches(batches: int, shard: tuple[int, int] | None) -> list[int]:
    """The numbers of the batches that shard (i, n) of ``batches`` batches reads: consecutive batches in blocks
    dealt out in turn (block b to shard b mod n), each block the largest power of two that still gives every
    shard four blocks (at least one batch); all of them for None.

    Whole batches keep every image in the batch one pass puts it in (float results depend on the batch), and
    power-of-two blocks are subtrees of the pairwise fold of a scan (:class:`fmapviz.engines.scan.reduce.BatchTree`),
    so gathered shards give one pass's numbers bit for bit.

    Example:
        >>> shard_batches(16, (1, 2))  # blocks of 2 batches
        [2, 3, 6, 7, 10, 11, 14, 15]
    """
    first, count = shard or (0, 1)
    block = 1 << max(0, (batches // (4 * count)).bit_length() - 1)
    return [number for number in range(batches) if (number // block) % count == first]


class _NumberedBatches:
    """The batches of a DataLoader over image files, each with its number in one pass over all the files."""

    def __init__(self, numbers: list[int], loader: DataLoader) -> None:
        self.numbers, self.loader, self.dataset = numbers, loader, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[IndexedBatch]:
        return ((number, *batch) for number, batch in zip(self.numbers, self.loader))


def indexed_batches(
    data: Any, shard: tuple[int, int] | None, transform: Transform, batch_size: int, num_workers: int
) -> tuple[list[str] | None, Iterable[IndexedBatch]]:
    """Batches that know where each image came from, for a pass that must find images again.

    Args:
        data: a folder (searched recursively), a file, a glob or a list of them; a Dataset; or a
            DataLoader that visits its dataset in order with a ``batch_size``.
        shard: (i, n): the batches of shard i of n (:func:`shard_batches`); None keeps all.
        transform: the preprocessing of image files (a Dataset or DataLoader brings its own).
        batch_size, num_workers: of the DataLoader that reads files or wraps a Dataset.

    Returns:
        (the files, indexed by global image index, or None for a Dataset or DataLoader, whose index is
        then the dataset index; the batches, each an :data:`IndexedBatch`: the batch's number in one pass
        over all of the data, the global indices, the images or None when no image of the batch could be read,
        and the files skipped with their reason).

    Raises:
        TypeError: ``data`` is none of these. ValueError: a shuffled or unbatched DataLoader.
        ImageLoadError: a path names no image, or readable images of different sizes.

    Example:
        >>> files, batches = indexed_batches("photos/", (0, 2), loaded.transform, 16, 0)
        >>> number, indices, images, skipped = next(iter(batches))
        >>> number, indices[:3].tolist()  # the first batch of shard 0
        (0, [0, 1, 2])
    """
    if isinstance(data, (str, os.PathLike, list, tuple)):
        paths = list_images(data, recursive=True)
        numbers, indices = _sharded(len(paths), batch_size, shard)
        files = _ImageFiles(paths, indices, transform)
        loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_files)
        return paths, _NumberedBatches(numbers, loader)
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
    numbers, indices = _sharded(len(data.dataset), data.batch_size, shard)
    if shard:
        data = DataLoader(
            Subset(data.dataset, indices),
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
        )

    def generate() -> Iterator[IndexedBatch]:
        done = 0
        for number, batch in zip(numbers, data):
            images = batch_images(batch)
            yield number, torch.tensor(indices[done : done + len(images)], dtype=torch.int64), images, []
            done += len(images)

    return None, generate()


def _sharded(count: int, batch_size: int, shard: tuple[int, int] | None) -> tuple[list[int], list[int]]:
    """The batch numbers and the image indices of ``shard`` of ``count`` images in batches of ``batch_size``."""
    numbers = shard_batches(-(-count // batch_size), shard)
    indices = [
        index for number in numbers for index in range(number * batch_size, min(count, (number + 1) * batch_size))
    ]
    return numbers, indices


def list_photos(data: PathSource) -> list[str]:
    """The photo files of ``data`` (folders searched recursively, files as given) as absolute paths, each once.

    Absolute paths keep a cache valid when the working folder changes.

    Raises:
        ImageLoadError: no such folder or file, a folder without images, or one that cannot be read.

    Example:
        >>> list_photos("photos/")[0].startswith("/")
        True
    """
    files: list[str] = []
    for item in path_list(data, ImageLoadError("No photos given: pass a folder of photos or photo files.")):
        if Path(item).is_dir() and not os.access(item, os.R_OK | os.X_OK):
            raise ImageLoadError(f"Cannot read folder '{item}': permission denied.")
        files += [str(Path(file).resolve()) for file in list_images(item, recursive=True)]
    return list(dict.fromkeys(files))
