"""scan: channel statistics, dead filters and top-activating examples over a whole dataset.

One streaming pass keeps, per channel of every selected layer:

* exact running statistics of every activation value (count, mean, std, max, min,
  fraction positive; :class:`~fmapviz.stats.RunningChannelStats`);
* the same statistics of each image's maximum (``image_max``), which rank channels by
  how strongly they fire (see :meth:`ScanResult.dead_channels`);
* a fixed-bin histogram of each image's maximum (bins :data:`HISTOGRAM_EDGES`, the same
  for every layer so histograms of shards add up);
* the top-k images by their maximum, with the (row, col) of that maximum in the map.

Layer outputs are reduced as each layer runs (``capture(reduce=...)``), so memory is
O(channels × k) whatever the dataset size. Images are named by their file path or, for a
DataLoader or Dataset, by their dataset index; crops are read back on demand
(:meth:`ScanResult.examples`). Shards (``shard=(i, n)``: every n-th image from i) merge
exactly (:meth:`ScanResult.merge`). Under ``torchrun`` the scan shards by rank and
gathers the shards, so ``torchrun --nproc-per-node 2 -m fmapviz.scan MODEL DATA --layer L -o out/``
runs two processes and writes one merged result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from .capture import LayerSelectors, capture, model_guard, resolve_layers
from .engines.direct import ChannelStats, stats_from_running
from .errors import FmapvizError, ImageLoadError
from .files import FolderLock, atomic_path, writable_folder, write_json
from .images import IMAGE_SUFFIXES, denormalize, read_image_file
from .layers import Geometry, layer_geometry
from .models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, default_transform, load_model
from .progress import Progress
from .stats import RunningChannelStats

_DECADES = 10.0 ** torch.linspace(-3, 4, 85, dtype=torch.float64)
HISTOGRAM_EDGES = torch.cat([-_DECADES.flip(0), torch.zeros(1, dtype=torch.float64), _DECADES])
"""Signed-log bin edges (12 per decade from 1e-3 to 1e4, both signs, and 0). Bin ``b`` counts
values in ``(edges[b-1], edges[b]]``; bin 0 and the last bin take everything beyond the ends."""

FORMAT_VERSION = 1
Source = str | int


@dataclass
class LayerScan:
    """What one scan keeps for one layer; every tensor is (C, ...) and merges exactly."""

    stats: RunningChannelStats
    image_max: RunningChannelStats
    top_values: torch.Tensor  # (C, m) per-image maxima, descending, m ≤ k
    top_sources: torch.Tensor  # (C, m) int64 global image index (into sources, or the dataset index)
    top_positions: torch.Tensor  # (C, m, 2) int64 (row, col) of the maximum in the layer's map
    histogram: torch.Tensor  # (C, len(HISTOGRAM_EDGES)+1) int64 counts of per-image maxima
    map_size: tuple[int, int] = (1, 1)

    @classmethod
    def start(cls, channels: int, device: torch.device) -> LayerScan:
        return cls(
            stats=RunningChannelStats(),
            image_max=RunningChannelStats(),
            top_values=torch.empty(channels, 0, device=device),
            top_sources=torch.empty(channels, 0, dtype=torch.int64, device=device),
            top_positions=torch.empty(channels, 0, 2, dtype=torch.int64, device=device),
            histogram=torch.zeros(channels, HISTOGRAM_EDGES.numel() + 1, dtype=torch.int64, device=device),
        )

    @property
    def channels(self) -> int:
        return self.top_values.shape[0]

    def update(self, maps: torch.Tensor, sources: torch.Tensor, k: int) -> None:
        """Fold in one batch of maps (N,C,H,W) or (N,C) from the images ``sources`` (N,)."""
        maps = maps.detach()
        self.map_size = tuple(maps.shape[2:]) if maps.ndim == 4 else (1, 1)
        self.stats.update(maps)
        image_max, flat_index = maps.flatten(2).max(dim=2) if maps.ndim == 4 else (maps, torch.zeros_like(maps).long())
        self.image_max.update(image_max)
        width = self.map_size[1]
        positions = torch.stack([flat_index // width, flat_index % width], dim=-1)  # (N, C, 2)
        bins = torch.bucketize(image_max.double(), HISTOGRAM_EDGES.to(maps.device))
        offsets = torch.arange(self.channels, device=maps.device) * self.histogram.shape[1]
        self.histogram += torch.bincount((bins + offsets).flatten(), minlength=self.histogram.numel()).view_as(
            self.histogram
        )
        batch = (image_max.T.to(self.top_values.dtype), sources.to(maps.device).expand(self.channels, -1))
        self._keep_top(batch[0], batch[1], positions.transpose(0, 1), k)

    def _keep_top(self, values: torch.Tensor, sources: torch.Tensor, positions: torch.Tensor, k: int) -> None:
        values = torch.cat([self.top_values, values], dim=1)
        sources = torch.cat([self.top_sources, sources], dim=1)
        positions = torch.cat([self.top_positions, positions], dim=1)
        # highest value first; ties go to the lower image index, so any sharding gives the same lists
        order = sources.argsort(dim=1, stable=True)
        order = order.gather(1, values.gather(1, order).argsort(dim=1, descending=True, stable=True))[:, :k]
        self.top_values = values.gather(1, order)
        self.top_sources = sources.gather(1, order)
        self.top_positions = positions.gather(1, order[..., None].expand(-1, -1, 2))

    @staticmethod
    def merge(a: LayerScan, b: LayerScan, k: int) -> LayerScan:
        """Exact combination of two shards of the same layer."""
        if a.channels != b.channels:
            raise ValueError(f"Cannot merge a layer scan of {a.channels} channels with one of {b.channels}.")
        device = a.top_values.device
        merged = LayerScan(
            stats=RunningChannelStats.merge(a.stats, b.stats),
            image_max=RunningChannelStats.merge(a.image_max, b.image_max),
            top_values=a.top_values,
            top_sources=a.top_sources,
            top_positions=a.top_positions,
            histogram=a.histogram + b.histogram.to(device),
            map_size=a.map_size,
        )
        merged._keep_top(b.top_values.to(device), b.top_sources.to(device), b.top_positions.to(device), k)
        return merged

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {f"top_{name}": getattr(self, f"top_{name}").cpu() for name in ("values", "sources", "positions")}
        state["histogram"] = self.histogram.cpu()
        state.update({f"stats.{key}": value.cpu() for key, value in self.stats.to_dict().items()})
        state.update({f"image_max.{key}": value.cpu() for key, value in self.image_max.to_dict().items()})
        return state

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor], map_size: Sequence[int]) -> LayerScan:
        def part(prefix: str) -> RunningChannelStats:
            return RunningChannelStats.from_dict(
                {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            )

        return cls(
            stats=part("stats."),
            image_max=part("image_max."),
            top_values=state["top_values"],
            top_sources=state["top_sources"],
            top_positions=state["top_positions"],
            histogram=state["histogram"],
            map_size=tuple(map_size),
        )


@dataclass
class TopExample:
    """One of a channel's top-activating images, with the crop its maximum can see.

    ``window`` is (top, left, bottom, right), inclusive pixel bounds in the model input,
    clipped to the image; ``crop`` is ``image[:, top:bottom+1, left:right+1]``.
    """

    layer: str
    channel: int
    rank: int
    value: float
    source: Source
    position: tuple[int, int]
    window: tuple[int, int, int, int]
    crop: torch.Tensor  # (3,h,w) in [0,1]
    image: torch.Tensor  # (3,H,W) in [0,1], the whole model input as displayed


@dataclass
class ScanResult:
    """Everything a scan learned, by layer; small (O(channels × k)), mergeable and savable.

    Attributes:
        layers: :class:`LayerScan` by layer name, in execution order.
        sources: the image files, indexed by the global image index stored in the top-k
            lists; None when the data was a DataLoader/Dataset (the index is then the dataset index).
        skipped: (image, reason) for every image that could not be read; these are left out.
        images: how many images were scanned.
        topk: the k of the top-k lists.
        input_size: (H, W) of the model input.
        geometry: receptive-field :class:`~fmapviz.layers.Geometry` by layer (None when the
            output is not a 2-D map).
        mean, std: the input normalization, to display crops.
        transform_repr: ``repr`` of the transform used on image files.
        shard: (i, n) when this result covers one shard only.
    """

    layers: dict[str, LayerScan]
    sources: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0
    topk: int = 16
    input_size: tuple[int, int] | None = None
    geometry: dict[str, Geometry | None] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    transform_repr: str | None = None
    shard: tuple[int, int] | None = None
    transform: Callable[[Any], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, layer: str) -> LayerScan:
        if layer not in self.layers:
            raise KeyError(f"Layer '{layer}' was not scanned. Scanned: {', '.join(self.layers)}.")
        return self.layers[layer]

    def stats(self, layer: str) -> RunningChannelStats:
        """Running statistics of every activation of ``layer`` (mean, std, max, fraction_positive…)."""
        return self[layer].stats

    def histogram(self, layer: str, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, edges) of one channel's per-image maxima; ``counts[b]`` is for ``(edges[b-1], edges[b]]``."""
        return self[layer].histogram[channel], HISTOGRAM_EDGES

    @staticmethod
    def merge(a: ScanResult, b: ScanResult) -> ScanResult:
        """Exact combination of two shards of the same scan (statistics, histograms and top-k lists).

        Raises:
            ValueError: the two results scanned different layers, data, k or input sizes.
        """
        for name in ("sources", "topk", "input_size"):
            if getattr(a, name) != getattr(b, name):
                raise ValueError(f"Cannot merge scans with different {name}: scan each shard of the same data alike.")
        if list(a.layers) != list(b.layers):
            raise ValueError(f"Cannot merge scans of different layers: {list(a.layers)} vs {list(b.layers)}.")
        layers = {name: LayerScan.merge(a.layers[name], b.layers[name], a.topk) for name in a.layers}
        skipped = sorted(a.skipped + b.skipped, key=lambda item: _sort_key(item[0]))
        return ScanResult(
            layers=layers,
            sources=a.sources,
            skipped=skipped,
            images=a.images + b.images,
            topk=a.topk,
            input_size=a.input_size,
            geometry=a.geometry or b.geometry,
            mean=a.mean,
            std=a.std,
            transform_repr=a.transform_repr,
            shard=None,  # several shards together: which ones is not tracked
            transform=a.transform or b.transform,
        )

    def dead_channels(self, weak_ratio: float = 0.1) -> dict[str, ChannelStats]:
        """Channels that never fire and channels that fire far less than their layer's median, by layer.

        The definitions are those of :class:`~fmapviz.engines.direct.ChannelStats`, over every
        image and position scanned: dead means ``max <= 0``; weak means alive with
        ``max < weak_ratio`` × the median max of the layer's live channels.

        Returns:
            A ``ChannelStats`` by layer (``.dead_channels``, ``.weak_channels``, ``str()`` for a summary).

        Example:
            >>> health = result.dead_channels()["features.7"]
            >>> len(health.dead_channels), len(health.weak_channels), health.channels
            (0, 2, 64)
        """
        return {name: stats_from_running(layer.stats, name, weak_ratio) for name, layer in self.layers.items()}

    def examples(
        self,
        layer: str,
        channel: int,
        *,
        data: DataLoader | Dataset | None = None,
        transform: Callable[[Any], torch.Tensor] | None = None,
        k: int | None = None,
    ) -> list[TopExample]:
        """The channel's top images, read back now, with the receptive-field crop around each maximum.

        Args:
            layer, channel: which unit.
            data: the DataLoader or Dataset that was scanned (only when the scan was not over files).
            transform: the transform used in the scan, for files (default: the scan's own when
                still in memory, else the default ImageNet transform if the scan used that).
            k: at most this many examples (default: all kept).

        Returns:
            :class:`TopExample` items, strongest first.

        Raises:
            KeyError: the layer was not scanned. IndexError: no such channel.
            ValueError: ``data`` is missing for a DataLoader scan, or the transform is unknown.
            ImageLoadError: an image file has gone since the scan.
        """
        scanned = self[layer]
        if not 0 <= channel < scanned.channels:
            raise IndexError(f"Channel {channel} out of range: '{layer}' has {scanned.channels} channels.")
        read = self._reader(data, transform)
        geometry = self.geometry.get(layer)
        count = scanned.top_values.shape[1] if k is None else min(k, scanned.top_values.shape[1])
        found = []
        for rank in range(count):
            index = int(scanned.top_sources[channel, rank])
            row, col = (int(v) for v in scanned.top_positions[channel, rank])
            image = read(index)
            window = receptive_window(geometry, row, col, tuple(image.shape[-2:]))
            top, left, bottom, right = window
            found.append(
                TopExample(
                    layer=layer,
                    channel=channel,
                    rank=rank,
                    value=float(scanned.top_values[channel, rank]),
                    source=self.sources[index] if self.sources is not None else index,
                    position=(row, col),
                    window=window,
                    crop=image[:, top : bottom + 1, left : right + 1],
                    image=image,
                )
            )
        return found

    def _reader(self, data: Any, transform: Callable | None) -> Callable[[int], torch.Tensor]:
        if self.sources is None:
            if data is None:
                raise ValueError("This scan was over a DataLoader/Dataset: pass data=<the same loader or dataset>.")
            dataset = data.dataset if isinstance(data, DataLoader) else data
            return lambda index: denormalize(_image_of(dataset[index]).float(), self.mean, self.std)
        transform = transform or self.transform
        if transform is None:
            transform = default_transform()
            if self.transform_repr is not None and repr(transform) != self.transform_repr:
                raise ValueError(
                    f"The scan used the transform {self.transform_repr}; pass it as transform= to read crops."
                )
        return lambda index: denormalize(transform(read_image_file(self.sources[index])), self.mean, self.std)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result to a folder: ``scan.json`` (names, paths, settings) and ``scan.pt`` (plain tensors).

        Neither file holds pickled objects: :func:`load_scan` reads ``scan.pt`` with
        ``torch.load(weights_only=True)``.

        Returns:
            The folder.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{name}/{key}": value for name, layer in self.layers.items() for key, value in layer.tensors().items()
        }
        meta = {
            "format": FORMAT_VERSION,
            "layers": list(self.layers),
            "map_sizes": {name: list(layer.map_size) for name, layer in self.layers.items()},
            "geometry": {name: _geometry_dict(geometry) for name, geometry in self.geometry.items()},
            "sources": self.sources,
            "skipped": [list(item) for item in self.skipped],
            "images": self.images,
            "topk": self.topk,
            "input_size": list(self.input_size) if self.input_size else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "transform": self.transform_repr,
            "shard": list(self.shard) if self.shard else None,
            "histogram_edges": HISTOGRAM_EDGES.tolist(),
        }
        with atomic_path(folder / "scan.pt") as temporary:  # an interrupted save leaves no half file
            torch.save(tensors, temporary)
        write_json(folder / "scan.json", meta)
        return folder

    def to_state(self) -> dict[str, Any]:
        """Plain data (tensors on CPU, lists, numbers), for gathering across processes."""
        return {"meta": self._meta(), "tensors": {n: layer.tensors() for n, layer in self.layers.items()}}

    def _meta(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "skipped": self.skipped,
            "images": self.images,
            "topk": self.topk,
            "input_size": self.input_size,
            "geometry": {name: _geometry_dict(geometry) for name, geometry in self.geometry.items()},
            "map_sizes": {name: layer.map_size for name, layer in self.layers.items()},
            "mean": self.mean,
            "std": self.std,
            "transform_repr": self.transform_repr,
            "shard": self.shard,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScanResult:
        meta = dict(state["meta"])
        map_sizes = meta.pop("map_sizes")
        layers = {name: LayerScan.from_tensors(tensors, map_sizes[name]) for name, tensors in state["tensors"].items()}
        meta["geometry"] = {name: _geometry_from(value) for name, value in meta["geometry"].items()}
        return cls(layers=layers, **meta)


def load_scan(path: str | os.PathLike) -> ScanResult:
    """Read a result written by :meth:`ScanResult.save` (the folder or its ``scan.json``).

    Raises:
        FmapvizError: the folder holds no scan, or a newer format.

    Example:
        >>> saved = fmapviz.scan(loaded, "photos/", "features.7", topk=2).save("out/")
        >>> result = fmapviz.load_scan("out/")
        >>> result.stats("features.7").mean.shape
        torch.Size([64])
    """
    folder = Path(path)
    if folder.name == "scan.json":
        folder = folder.parent
    if not (folder / "scan.json").is_file() or not (folder / "scan.pt").is_file():
        raise FmapvizError(f"No scan in '{folder}': expected scan.json and scan.pt written by ScanResult.save.")
    meta = json.loads((folder / "scan.json").read_text())
    if meta.get("format", 0) > FORMAT_VERSION:
        raise FmapvizError(f"'{folder}' holds scan format {meta['format']}; this fmapviz reads up to {FORMAT_VERSION}.")
    flat = torch.load(folder / "scan.pt", weights_only=True, map_location="cpu")
    tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta["layers"]}
    for key, value in flat.items():
        name, _, part = key.rpartition("/")
        tensors[name][part] = value
    state = {
        "meta": {
            "sources": meta["sources"],
            "skipped": [tuple(item) for item in meta["skipped"]],
            "images": meta["images"],
            "topk": meta["topk"],
            "input_size": tuple(meta["input_size"]) if meta["input_size"] else None,
            "geometry": meta["geometry"],
            "map_sizes": meta["map_sizes"],
            "mean": tuple(meta["mean"]),
            "std": tuple(meta["std"]),
            "transform_repr": meta["transform"],
            "shard": tuple(meta["shard"]) if meta["shard"] else None,
        },
        "tensors": tensors,
    }
    return ScanResult.from_state(state)


def _geometry_dict(geometry: Geometry | None) -> dict[str, list[float]] | None:
    if geometry is None:
        return None
    return {
        "receptive_field": list(geometry.receptive_field),
        "stride": list(geometry.stride),
        "start": list(geometry.start),
    }


def _geometry_from(value: dict[str, list[float]] | Geometry | None) -> Geometry | None:
    if value is None or isinstance(value, Geometry):
        return value
    return Geometry(**{key: tuple(item) for key, item in value.items()})


def receptive_window(
    geometry: Geometry | None, row: int, col: int, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds (top, left, bottom, right) that output pixel (row, col) sees, clipped to the image.

    Without geometry (a layer whose output is not a map) the whole image is returned.
    """
    height, width = image_size
    if geometry is None:
        return 0, 0, height - 1, width - 1
    top, left, bottom, right = geometry.window(row, col)
    eps = 1e-6
    return (
        max(0, math.ceil(top - eps)),
        max(0, math.ceil(left - eps)),
        min(height - 1, math.floor(bottom + eps)),
        min(width - 1, math.floor(right + eps)),
    )


def _sort_key(source: Source) -> tuple[int, Any]:
    return (0, source) if isinstance(source, int) else (1, str(source))


# ----------------------------------------------------------------------------------------------- data


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


def _image_of(item: Any) -> torch.Tensor:
    """The image tensor in a dataset item or batch: the item itself, or the first element of a tuple/list/dict."""
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    if isinstance(item, dict):
        for key in ("image", "pixel_values", "input", "x"):
            if isinstance(item.get(key), torch.Tensor):
                return item[key]
    raise TypeError(
        f"Cannot find the image tensor in a {type(item).__name__} from the data: yield a tensor, "
        "an (image, label) tuple or a dict with an 'image' key."
    )


def list_image_files(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The image files of a folder (searched recursively, sorted), a single file, or a list of paths.

    Raises:
        ImageLoadError: the folder holds no image files, or a path does not exist.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ImageLoadError(f"Folder '{path}' holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            return files
        if not path.exists():
            raise ImageLoadError(f"Cannot scan '{path}': no such file or folder.")
        return [str(path)]
    files = [str(item) for item in data]
    if not files:
        raise ImageLoadError("The list of images to scan is empty.")
    return files


def _batches(
    data: Any, shard: tuple[int, int] | None, transform: Callable, batch_size: int, num_workers: int
) -> tuple[list[str] | None, Any]:
    """(sources, iterable of (global indices, images or None, skipped)) for any kind of data."""
    first, step = shard or (0, 1)
    if isinstance(data, (str, os.PathLike, list, tuple)):
        paths = list_image_files(data)
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
            images = _image_of(batch)
            yield torch.tensor(indices[done : done + len(images)], dtype=torch.int64), images, []
            done += len(images)

    return None, generate()


# ----------------------------------------------------------------------------------------------- scan


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
        layers: layer selectors (see :mod:`fmapviz.capture`); outputs must be (N,C,H,W) or (N,C).
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
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if isinstance(model, LoadedModel):
        transform = transform or model.transform
        mean, std = model.mean, model.std
        model = model.model
    if isinstance(data, (DataLoader, Dataset)) and transform is not None:
        raise ValueError("transform= applies to image files only; a Dataset or DataLoader brings its own transform.")
    transform = transform or default_transform()
    mean = tuple(getattr(transform, "mean", mean))
    std = tuple(getattr(transform, "std", std))
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}.")
    distributed = shard is None and torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        shard = (torch.distributed.get_rank(), torch.distributed.get_world_size())
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}.")
    names = resolve_layers(model, layers)
    parameter = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None else None)
    sources, batches = _batches(data, shard, transform, batch_size, num_workers)

    scanned: dict[str, LayerScan] = {}
    current = {"sources": torch.empty(0, dtype=torch.int64)}

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
    bar = Progress("scan", len(batches) if hasattr(batches, "__len__") else None, enabled=progress)
    capturing = capture(model, names, stop_early=True, reduce=reduce)  # entered anew for each batch
    with model_guard(model), torch.no_grad():
        for indices, batch, bad in batches:
            skipped += [(sources[index] if sources else index, reason) for index, reason in bad]
            if batch is None:
                continue
            batch = batch.to(device) if device is not None else batch
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
        transform=transform if sources is not None else None,
    )
    if distributed:
        result = _gather(result)
    return result


def _gather(result: ScanResult) -> ScanResult:
    """Every rank's shard, merged in rank order (all ranks get the merged result)."""
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, result.to_state())
    shards = [ScanResult.from_state(state) for state in states]
    shards = [shard for shard in shards if shard.layers] or shards[:1]
    merged = shards[0]
    for shard in shards[1:]:
        merged = ScanResult.merge(merged, shard)
    merged.shard, merged.transform = None, result.transform
    return merged


def channel_page(
    model: nn.Module | LoadedModel,
    scan_result: ScanResult,
    layer: str,
    channel: int,
    *,
    with_actmax: bool = True,
    steps: int = 128,
    size: int = 128,
    seed: int = 0,
    data: DataLoader | Dataset | None = None,
    transform: Callable[[Any], torch.Tensor] | None = None,
) -> Any:
    """A channel page: the unit's activation-maximization image beside its top-k crops and histogram.

    Glue over :func:`fmapviz.maximize` and :func:`fmapviz.show_channel_page`.

    Args:
        model: the scanned model (``nn.Module`` or :class:`~fmapviz.models.LoadedModel`).
        scan_result: its :class:`ScanResult`.
        layer, channel: which unit.
        with_actmax: optimize an image for the unit (``steps`` Adam steps at ``size`` pixels, ``seed``).
        data, transform: passed to :meth:`ScanResult.examples` to read the top images.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`.

    Example:
        >>> result = fmapviz.scan(loaded, "photos/", "features.7", topk=3)
        >>> fmapviz.channel_page(loaded, result, "features.7", 12, steps=8, size=64).save("features7_12.png")
        PosixPath('features7_12.png')
    """
    from .views.scan import show_channel_page

    if isinstance(model, LoadedModel):
        transform = transform or model.transform
        model = model.model
    actmax_image = None
    if with_actmax:
        from .engines.actmax import maximize

        optimized = maximize(
            model,
            f"{layer}[{channel}]",
            size=size,
            steps=steps,
            seed=seed,
            progress=False,
            mean=scan_result.mean,
            std=scan_result.std,
        )
        actmax_image = optimized.images[0]
    examples = scan_result.examples(layer, channel, data=data, transform=transform)
    return show_channel_page(scan_result, layer, channel, examples=examples, actmax_image=actmax_image)


# ----------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fmapviz.scan MODEL DATA --layer L -o OUT``; under ``torchrun`` each rank scans a shard.

    Returns 0 on success, 1 on a runtime error, 2 on a usage error.
    """
    parser = argparse.ArgumentParser(prog="fmapviz.scan", description="Scan a dataset: channel statistics, top-k.")
    parser.add_argument("model", help="torchvision name, file.py:factory, module:factory or TorchScript file")
    parser.add_argument("data", help="a folder of images (searched recursively)")
    parser.add_argument("--layer", "-l", action="append", required=True, help="layer selector (repeatable)")
    parser.add_argument("--output", "-o", required=True, help="folder to write scan.json and scan.pt")
    parser.add_argument("--weights", default="DEFAULT", help="torchvision weights name, or 'none' for random")
    parser.add_argument("--topk", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None, help="resize and centre-crop to this size")
    parser.add_argument("--device", default=None)
    parser.add_argument("--force", action="store_true", help="overwrite an existing scan in --output")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    started = _init_distributed()
    try:
        if (Path(args.output) / "scan.json").exists() and not args.force:
            raise FmapvizError(f"{Path(args.output) / 'scan.json'} already exists; pass --force to overwrite it.")
        writable_folder(args.output)  # before the scan, not after it
        device = args.device
        if device is None and torch.distributed.is_initialized() and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        weights = None if args.weights.lower() == "none" else args.weights
        loaded = load_model(args.model, weights=weights, device=device)
        if args.image_size:
            from torchvision.transforms._presets import ImageClassification

            loaded.transform = ImageClassification(
                crop_size=args.image_size, resize_size=args.image_size, mean=loaded.mean, std=loaded.std
            )
        result = scan(
            loaded,
            args.data,
            args.layer,
            topk=args.topk,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=device,
        )
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0:
            with FolderLock(args.output):
                folder = result.save(args.output)
            print(f"Scanned {result.images} images ({len(result.skipped)} skipped) into {folder}")
            for source, reason in result.skipped:
                print(f"skipped {source}: {reason}", file=sys.stderr)
        return 0
    except (FmapvizError, ValueError, TypeError, OSError) as error:
        print(f"fmapviz.scan: error: {error}", file=sys.stderr)
        return 1
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _init_distributed() -> bool:
    """Join the process group that torchrun describes in the environment; True if this call started it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or torch.distributed.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
