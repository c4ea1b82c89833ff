"""The result of a scan: :class:`ScanResult` (query, merge, read examples back), saved and loaded as plain files."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ...data import batch_images, read_input
from ...errors import FmapvizError
from ...files import write_json, write_tensors
from ...inputs import IMAGENET_MEAN, IMAGENET_STD, default_transform, denormalize
from ...layers import Geometry
from ..channels import ChannelStats, RunningChannelStats, stats_from_running
from .reduce import HISTOGRAM_EDGES, LayerScan

FORMAT_VERSION = 1
Source = str | int


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
        device: where the scan ran, as :func:`fmapviz.devices.describe` writes it (rank 0's under torchrun).
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
    device: str | None = None
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
            device=a.device,
            transform=a.transform or b.transform,
        )

    @staticmethod
    def concatenate(a: ScanResult, b: ScanResult) -> ScanResult:
        """``a`` followed by ``b``, a scan of more images with the same settings: exact, as one scan of both.

        ``b``'s image indices are shifted past ``a``'s sources; ``a`` and ``b`` are changed in place.
        """
        offset, union = len(a.sources), a.sources + b.sources
        if not b.layers:  # nothing in b could be read
            a.sources, a.skipped = union, a.skipped + b.skipped
            return a
        for layer in b.layers.values():
            layer.top_sources = layer.top_sources + offset
        b.sources = union
        if not a.layers:  # nothing in a could be read
            b.skipped = a.skipped + b.skipped
            return b
        a.sources = union
        return ScanResult.merge(a, b)

    def dead_channels(self, weak_ratio: float = 0.1) -> dict[str, ChannelStats]:
        """Channels that never fire and channels that fire far less than their layer's median, by layer.

        The definitions are those of :class:`~fmapviz.engines.channels.ChannelStats`, over every
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

    def dead_channels_text(self, weak_ratio: float = 0.1) -> str:
        """:meth:`dead_channels` as text, one line per layer (what ``fmapviz scan`` writes to ``channels.txt``).

        Example:
            >>> print(fmapviz.scan(loaded, "photos/", "features.7", progress=False).dead_channels_text(), end="")
            features.7: 64 channels over 588 values each; dead (never > 0): none; weak (...): none
        """
        return "".join(f"{stats}\n" for stats in self.dead_channels(weak_ratio).values())

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
            return lambda index: denormalize(batch_images(dataset[index]).float(), self.mean, self.std)
        transform = transform or self.transform
        if transform is None:
            transform = default_transform()
            if self.transform_repr is not None and repr(transform) != self.transform_repr:
                raise ValueError(
                    f"The scan used the transform {self.transform_repr}; pass it as transform= to read crops."
                )
        return lambda index: denormalize(read_input(self.sources[index], transform), self.mean, self.std)

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
            "device": self.device,
        }
        write_tensors(folder / "scan.pt", tensors)  # an interrupted save leaves no half file
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
            "device": self.device,
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
            "device": meta.get("device"),  # scans written before fmapviz recorded it have none
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
