"""The streaming reducer of a scan: what one pass keeps per channel of one layer, mergeable across shards."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..channels.statistics import RunningChannelStats

# cpu: constant bin edges, moved to the maps' device in update
_DECADES = 10.0 ** torch.linspace(-3, 4, 85, dtype=torch.float64)
# cpu: as _DECADES
HISTOGRAM_EDGES = torch.cat([-_DECADES.flip(0), torch.zeros(1, dtype=torch.float64), _DECADES])
"""Signed-log bin edges (12 per decade from 1e-3 to 1e4, both signs, and 0). Bin ``b`` counts
values in ``(edges[b-1], edges[b]]``; bin 0 and the last bin take everything beyond the ends."""


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
        # every update replaces tensors instead of writing into them: a shallow copy is a snapshot (see snapshot)
        self.histogram = self.histogram + torch.bincount(
            (bins + offsets).flatten(), minlength=self.histogram.numel()
        ).view_as(self.histogram)
        batch = (image_max.T.to(self.top_values.dtype), sources.to(maps.device).expand(self.channels, -1))
        self._keep_top(batch[0], batch[1], positions.transpose(0, 1), k)

    def snapshot(self) -> LayerScan:
        """A copy that later updates leave as it is (they replace tensors, never write into them): cheap."""
        return replace(self, stats=copy.copy(self.stats), image_max=copy.copy(self.image_max))

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
        """Every tensor on the CPU, the counts and indices as int32 (images, positions and counts stay far below
        2^31; int64 made the histograms two thirds of a whole model's saved scan)."""
        state = {"top_values": self.top_values.cpu()}
        for name in ("top_sources", "top_positions", "histogram"):
            state[name] = getattr(self, name).to("cpu", torch.int32)
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
            top_sources=state["top_sources"].long(),
            top_positions=state["top_positions"].long(),
            histogram=state["histogram"].long(),
            map_size=tuple(map_size),
        )


Scans = dict[str, LayerScan]
"""One part of a pass: a LayerScan per layer (empty for a batch none of whose images could be read)."""


def merge_scans(first: Scans, then: Scans, k: int) -> Scans:
    """Two consecutive parts of a pass, layer by layer (a layer only one part saw is kept as it is)."""
    return {
        name: LayerScan.merge(first[name], then[name], k)
        if name in first and name in then
        else first.get(name) or then[name]
        for name in {**first, **then}
    }


@dataclass
class BatchTree:
    """The batches of a pass folded pairwise: the scans of 2^j consecutive batches merge once they are complete.

    The shape of the fold depends only on the batch numbers, never on who scanned them: a shard of whole
    power-of-two blocks of batches (:func:`fmapviz.data.shard_batches`) folds into complete subtrees, and
    pushing every shard's parts in batch order gives the tree, and the float64 statistics, of one pass bit for
    bit. (Pairwise folding also rounds less than folding batch by batch.)
    """

    k: int
    parts: list[tuple[int, Scans]] = field(default_factory=list)  # (batches, scans), batch counts decreasing

    def push(self, scans: Scans, batches: int = 1) -> None:
        """Append the next ``batches`` consecutive batches' scans (a part of another tree, or one batch)."""
        while self.parts and self.parts[-1][0] == batches:
            size, first = self.parts.pop()
            scans, batches = merge_scans(first, scans, self.k), size + batches
        self.parts.append((batches, scans))

    def total(self) -> Scans:
        """Every batch pushed so far, merged (the parts from first to last)."""
        merged: Scans = {}
        for _, scans in self.parts:
            merged = merge_scans(merged, scans, self.k)
        return merged
