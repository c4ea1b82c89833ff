"""Direct display of feature maps: choose, rank and normalize channels; per-channel health statistics.

Tensors in, tensors out: nothing here reads files or draws. Maps are (N,C,H,W) (a
single (C,H,W) map is treated as a batch of one); statistics over a batch pool the
N images, so the same channels and the same scale are used for every image.

Normalization modes (the value range is explained once, here):

* ``"channel"``: each channel scaled to its own [low, high]: shows every channel's
  pattern, but brightness cannot be compared between channels;
* ``"layer"``: one [low, high] for the whole layer: channels can be compared, the
  layer's largest value is the brightest pixel;
* ``"global"``: one [low, high] over several layers (:func:`normalize_layers`).

``low``/``high`` are the ``clip`` percentiles (default 0 and 100, i.e. min and max) of
the finite values. NaN draws as ``low``, +inf as ``high``, -inf as ``low``; a constant
channel (``high == low``) becomes all zeros, never NaN.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks import LayerSelectors, capture, model_guard
from ...inputs import LoadedImage, batch_images, list_images, load_image, model_device
from ...vocabulary import parse_channels
from .statistics import RunningChannelStats

RankFunction = Callable[[torch.Tensor], torch.Tensor]


def _finite_or(maps: torch.Tensor, fill: float) -> torch.Tensor:
    return torch.where(torch.isfinite(maps), maps, torch.full_like(maps, fill))


def _rank_mean(maps: torch.Tensor) -> torch.Tensor:
    return _finite_or(maps, 0.0).mean(dim=(0, 2, 3))


def _rank_max(maps: torch.Tensor) -> torch.Tensor:
    return _finite_or(maps, float("-inf")).amax(dim=(0, 2, 3))


def _rank_std(maps: torch.Tensor) -> torch.Tensor:
    return _finite_or(maps, 0.0).std(dim=(0, 2, 3), unbiased=False)


RANKINGS: dict[str, RankFunction] = {"mean": _rank_mean, "max": _rank_max, "std": _rank_std}
"""Rank keys: name → function from maps (N,C,H,W) to one score per channel (C,). Add an entry to add a key."""

NORMALIZE_MODES = ("channel", "layer", "global")


def as_batch(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """A (C,H,W) or (N,C,H,W) tensor as (N,C,H,W).

    Raises:
        TypeError, ValueError: not a tensor, or another number of dimensions.
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of feature maps, not {type(maps).__name__}.")
    if maps.ndim == 3:
        return maps.unsqueeze(0)
    if maps.ndim != 4:
        raise ValueError(
            f"{name} must be (C,H,W) or (N,C,H,W), got shape {tuple(maps.shape)}. "
            "For a ViT's (N,tokens,dim) output, reshape tokens to a grid first."
        )
    return maps


def channel_scores(maps: torch.Tensor, rank: str | RankFunction | torch.Tensor = "mean") -> torch.Tensor:
    """One score per channel, used to pick the "top" channels.

    Args:
        maps: (N,C,H,W) or (C,H,W).
        rank: a key of :data:`RANKINGS` (``"mean"``, ``"max"``, ``"std"``), a function
            maps → (C,), or a ready (C,) score tensor (e.g. Grad-CAM channel weights).

    Returns:
        (C,) float scores; NaN scores become -inf so they rank last.

    Raises:
        ValueError: unknown rank name or a score tensor of the wrong length.

    Example:
        >>> channel_scores(torch.rand(1, 64, 7, 7), "max").shape
        torch.Size([64])
    """
    maps = as_batch(maps)
    channels = maps.shape[1]
    if isinstance(rank, str):
        if rank not in RANKINGS:
            raise ValueError(
                f"Unknown rank={rank!r}. Choose one of {', '.join(RANKINGS)}, or pass a (C,) score tensor."
            )
        scores = RANKINGS[rank](maps.float())
    elif isinstance(rank, torch.Tensor):
        scores = rank
    elif callable(rank):
        scores = rank(maps)
    else:
        raise TypeError(f"rank must be a name, a function or a (C,) tensor, not {type(rank).__name__}.")
    scores = scores.detach().reshape(-1).float()
    if scores.numel() != channels:
        raise ValueError(f"rank gives {scores.numel()} scores for {channels} channels; give one score per channel.")
    return torch.nan_to_num(scores.to(maps.device), nan=float("-inf"))


def select_channels(
    maps: torch.Tensor,
    channels: str | int | Sequence[int] | torch.Tensor = "top:16",
    rank: str | RankFunction | torch.Tensor = "mean",
) -> torch.Tensor:
    """Indices of the channels to show.

    Args:
        maps: (N,C,H,W) or (C,H,W).
        channels: which channels (:func:`fmapviz.vocabulary.parse_channels`): ``"all"`` (index
            order), ``"top:K"`` / ``"bottom:K"`` (best or worst K by ``rank``, best first),
            ``"0-15"``, ``"3,7"``, or indices (negative ones count from the end).
        rank: how to score channels (see :func:`channel_scores`).

    Returns:
        int64 tensor of channel indices on the maps' device.

    Raises:
        ValueError: malformed ``channels`` or an index out of range.

    Example:
        >>> select_channels(maps["layer4"], "top:8", rank="max")
        tensor([311, 47, ...])
    """
    maps = as_batch(maps)
    count, device = maps.shape[1], maps.device
    if isinstance(channels, torch.Tensor):
        channels = channels.reshape(-1).tolist()
    choice = parse_channels(channels)
    if choice.kind == "all":
        return torch.arange(count, device=device)
    if choice.kind in ("top", "bottom"):
        order = torch.sort(channel_scores(maps, rank), descending=choice.kind == "top", stable=True).indices
        return order[: min(choice.count, count)]
    indices = torch.tensor(choice.indices, dtype=torch.int64)
    if bool(((indices < -count) | (indices >= count)).any()):
        raise ValueError(f"channels {indices.tolist()} has indices out of range for {count} channels (0..{count - 1}).")
    return (indices % count).to(device)


@dataclass
class NormalizedMaps:
    """Maps scaled to [0, 1], with the real values drawn as 0 (``low``) and 1 (``high``).

    ``low``/``high`` are (N or 1, C or 1, 1, 1) tensors broadcastable against ``values``:
    one per channel for ``"channel"`` mode, a single value otherwise.
    """

    values: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    mode: str

    @property
    def value_range(self) -> tuple[float, float]:
        """(smallest low, largest high): the real range behind a colour bar."""
        return float(self.low.min()), float(self.high.max())


def _quantiles(rows: torch.Tensor, lower: float, upper: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentiles of each row's finite values: (R, M) → two (R,) tensors; rows with no finite value give 0."""
    if lower <= 0.0 and upper >= 100.0 and rows.shape[1]:
        low, high = rows.amin(dim=1), rows.amax(dim=1)  # NaN propagates, so finite bounds mean clean rows
        if bool(torch.isfinite(low).all() and torch.isfinite(high).all()):
            return low, high
    finite = torch.isfinite(rows)
    counts = finite.sum(dim=1)
    empty = counts == 0
    if lower <= 0.0 and upper >= 100.0:
        low = torch.where(finite, rows, torch.full_like(rows, float("inf"))).amin(dim=1)
        high = torch.where(finite, rows, torch.full_like(rows, float("-inf"))).amax(dim=1)
    else:
        ordered = torch.sort(torch.where(finite, rows, torch.full_like(rows, float("nan"))), dim=1).values
        last = (counts - 1).clamp_min(0)

        def pick(percent: float) -> torch.Tensor:
            position = (last.double() * percent / 100.0).round().long()
            return ordered.gather(1, position[:, None])[:, 0]

        low, high = pick(lower), pick(upper)
    zero = torch.zeros_like(low)
    return torch.where(empty, zero, low), torch.where(empty, zero, high)


def _check_clip(clip: tuple[float, float] | None) -> tuple[float, float]:
    lower, upper = clip if clip is not None else (0.0, 100.0)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"clip={clip!r} must be two percentiles 0 <= lower < upper <= 100, e.g. (1, 99).")
    return float(lower), float(upper)


def scale_to_unit(maps: torch.Tensor, low: torch.Tensor, high: torch.Tensor, finite: bool = False) -> torch.Tensor:
    """(maps - low) / (high - low) clamped to [0, 1]; NaN → 0, +inf → 1, flat ranges → 0.

    ``finite=True`` promises ``maps`` holds no NaN or inf and skips that pass.
    """
    span = high - low
    flat = span <= 0
    scaled = (maps - low).mul_(1.0 / torch.where(flat, torch.ones_like(span), span))
    if not finite:
        scaled = torch.nan_to_num_(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    scaled = scaled.clamp_(0.0, 1.0)
    return scaled.masked_fill_(flat.expand_as(scaled), 0.0) if bool(flat.any()) else scaled


def normalize_maps(maps: torch.Tensor, mode: str = "layer", clip: tuple[float, float] | None = None) -> NormalizedMaps:
    """Scale feature maps to [0, 1] for display (modes and NaN/inf handling: see the module docstring).

    Args:
        maps: (N,C,H,W) or (C,H,W); any float dtype, any device.
        mode: ``"channel"`` or ``"layer"`` (``"global"`` equals ``"layer"`` for one tensor).
        clip: (lower, upper) percentiles of the finite values mapped to 0 and 1, e.g. (1, 99.5).

    Returns:
        :class:`NormalizedMaps` with float32 ``values`` of shape (N,C,H,W) and the real range.

    Raises:
        ValueError: unknown mode or bad percentiles.

    Example:
        >>> normalized = normalize_maps(maps["layer4"], "layer")
        >>> float(normalized.values.max()), normalized.value_range
        (1.0, (0.0, 7.93))
    """
    maps = as_batch(maps).float()
    lower, upper = _check_clip(clip)
    finite = maps.numel() > 0 and bool(torch.isfinite(maps.sum()))  # one cheap pass: a NaN or inf poisons the sum
    if mode == "channel":
        rows = maps.transpose(0, 1).reshape(maps.shape[1], -1)
        low, high = _quantiles(rows, lower, upper)
        low, high = low.view(1, -1, 1, 1), high.view(1, -1, 1, 1)
    elif mode in ("layer", "global"):
        low, high = _quantiles(maps.reshape(1, -1), lower, upper)
        low, high = low.view(1, 1, 1, 1), high.view(1, 1, 1, 1)
    else:
        raise ValueError(f"Unknown normalize={mode!r}. Choose one of {', '.join(NORMALIZE_MODES)}.")
    return NormalizedMaps(scale_to_unit(maps, low, high, finite), low, high, mode)


def normalize_layers(
    maps: dict[str, torch.Tensor], mode: str = "global", clip: tuple[float, float] | None = None
) -> dict[str, NormalizedMaps]:
    """Normalize several layers: ``"global"`` uses one range across all of them; other modes go layer by layer.

    Example:
        >>> normalized = normalize_layers(fmapviz.feature_maps(model, x, ["layer1", "layer4"]), "global")
    """
    if mode != "global":
        return {name: normalize_maps(value, mode, clip) for name, value in maps.items()}
    lower, upper = _check_clip(clip)
    batches = {name: as_batch(value, f"maps[{name!r}]").float() for name, value in maps.items()}
    if not batches:
        raise ValueError("maps is empty; capture at least one layer.")
    device = next(iter(batches.values())).device
    everything = torch.cat([value.reshape(-1).to(device) for value in batches.values()])[None]
    low, high = (bound.view(1, 1, 1, 1) for bound in _quantiles(everything, lower, upper))
    return {
        name: NormalizedMaps(scale_to_unit(value, low.to(value.device), high.to(value.device)), low, high, "global")
        for name, value in batches.items()
    }


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps (N,C,h,w) to the input's (H,W), so a map pixel lies over the input region it sees.

    With ``align_corners=False`` a map of stride s covers the input evenly: map pixel i
    spans input rows [i·H/h, (i+1)·H/h). ``mode`` is ``"bilinear"`` (smooth overlays),
    ``"nearest"`` (honest blocks) or ``"area"`` (shrinking).

    Example:
        >>> upsample(maps["layer4"], (224, 224)).shape
        torch.Size([1, 512, 224, 224])
    """
    maps = as_batch(maps)
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(maps.float(), size=size, mode=mode, align_corners=False)
    if mode in ("nearest", "area", "nearest-exact"):
        return F.interpolate(maps.float(), size=size, mode=mode)
    raise ValueError(f"Unknown mode={mode!r}; use 'bilinear', 'nearest' or 'area'.")


@dataclass
class ChannelStats:
    """Health of each channel of one layer over every value seen (all images and positions).

    A channel is **dead** when it was never positive (``max <= 0``: after a ReLU it is
    always zero). It is **weak** when it is not dead but its ``max`` is below
    ``weak_ratio`` × the median of the maxima of the layer's live channels (default
    0.1: a tenth of a typical channel's peak).
    """

    layer: str | None
    mean: torch.Tensor
    std: torch.Tensor
    max: torch.Tensor
    min: torch.Tensor
    fraction_positive: torch.Tensor
    count: int
    weak_ratio: float

    @property
    def channels(self) -> int:
        return self.mean.numel()

    @property
    def weak_threshold(self) -> float:
        """The ``max`` below which a live channel counts as weak: ``weak_ratio`` × median max of live channels."""
        alive = self.max[self.max > 0]
        return self.weak_ratio * float(alive.median()) if alive.numel() else 0.0

    @property
    def dead(self) -> torch.Tensor:
        """(C,) bool: never positive."""
        return self.max <= 0

    @property
    def weak(self) -> torch.Tensor:
        """(C,) bool: alive but max < weak_ratio × median channel max."""
        return ~self.dead & (self.max < self.weak_threshold)

    @property
    def dead_channels(self) -> list[int]:
        return torch.nonzero(self.dead).flatten().tolist()

    @property
    def weak_channels(self) -> list[int]:
        return torch.nonzero(self.weak).flatten().tolist()

    def __str__(self) -> str:
        name = self.layer or "maps"
        return (
            f"{name}: {self.channels} channels over {self.count:,} values each; "
            f"dead (never > 0): {_short_list(self.dead_channels)}; "
            f"weak (max < {self.weak_ratio:g} × median max = {self.weak_threshold:.3g}): "
            f"{_short_list(self.weak_channels)}"
        )


def _short_list(values: list[int], limit: int = 12) -> str:
    if not values:
        return "none"
    shown = ", ".join(str(v) for v in values[:limit])
    return f"{len(values)} [{shown}{', …' if len(values) > limit else ''}]"


def stats_from_running(running: RunningChannelStats, layer: str | None = None, weak_ratio: float = 0.1) -> ChannelStats:
    """A :class:`ChannelStats` from streamed :class:`~fmapviz.engines.channels.statistics.RunningChannelStats`."""
    if not weak_ratio >= 0:
        raise ValueError(f"weak_ratio must be >= 0, got {weak_ratio}.")
    return ChannelStats(
        layer=layer,
        mean=running.mean.float(),
        std=running.std.float(),
        max=running.max.float(),
        min=running.min.float(),
        fraction_positive=running.fraction_positive.float(),
        count=int(running.count),
        weak_ratio=float(weak_ratio),
    )


def compute_channel_stats(maps: torch.Tensor, layer: str | None = None, weak_ratio: float = 0.1) -> ChannelStats:
    """Per-channel mean, std, max, min, fraction positive, dead and weak flags of (N,C,H,W) or (N,C) maps.

    Example:
        >>> stats = compute_channel_stats(maps["layer4"])
        >>> stats.dead_channels
        []
    """
    if not isinstance(maps, torch.Tensor) or maps.ndim not in (2, 3, 4):
        raise ValueError(f"maps must be a (N,C,H,W), (C,H,W) or (N,C) tensor, got {getattr(maps, 'shape', maps)!r}.")
    maps = maps.unsqueeze(0) if maps.ndim == 3 else maps
    return stats_from_running(RunningChannelStats().update(maps), layer, weak_ratio)


def stream_channel_stats(
    model: nn.Module,
    batches: Iterable[object],
    layers: LayerSelectors,
    *,
    weak_ratio: float = 0.1,
    device: torch.device | str | None = None,
) -> dict[str, ChannelStats]:
    """Channel statistics of ``layers`` over many batches, in O(channels) memory.

    Each layer's output is folded into a :class:`~fmapviz.engines.channels.statistics.RunningChannelStats`
    inside the forward pass (capture's ``reduce=``), so no whole layer is kept.

    Args:
        model: the network; left exactly as it was (mode, flags, parameters, no hooks).
        batches: an iterable of (N,3,H,W) tensors, (tensor, label) pairs or dicts with
            an ``"image"`` tensor, e.g. a DataLoader.
        layers: layer selectors (see :mod:`fmapviz.hooks`).
        weak_ratio: see :class:`ChannelStats`.
        device: where to run; default the model's parameters' device.

    Returns:
        Layer name → :class:`ChannelStats`, in execution order.

    Raises:
        ValueError: no batch was given.

    Example:
        >>> loader = DataLoader(ImageFolder("photos", loaded.transform), batch_size=32)
        >>> stats = stream_channel_stats(model, loader, "features.*.conv.2")
    """
    if device is None:
        device = model_device(model)
    running: dict[str, RunningChannelStats] = {}

    def fold(name: str, output: torch.Tensor) -> None:
        running.setdefault(name, RunningChannelStats()).update(output)

    with model_guard(model), torch.no_grad():
        for batch in batches:
            images = batch_images(batch).to(device)
            with capture(model, layers, stop_early=True, reduce=fold):
                model(images)
    if not running:
        raise ValueError("batches yielded nothing; pass at least one batch of images.")
    return {name: stats_from_running(value, name, weak_ratio) for name, value in running.items()}


def _image_files(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str] | None:
    items = [data] if isinstance(data, (str, os.PathLike)) else data
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, os.PathLike)) for i in items):
        return None
    return list_images(items)


def _batches(data: Any, transform: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(data, LoadedImage):
        data = data.tensor
    if isinstance(data, torch.Tensor):
        return torch.split(as_batch(data, "images"), batch_size)
    files = _image_files(data)
    if files is None:
        return data

    def load() -> Iterator[torch.Tensor]:
        for start in range(0, len(files), batch_size):
            yield load_image(files[start : start + batch_size], transform).tensor

    return load()


def channel_stats(
    data: Any,
    model: nn.Module | None = None,
    layers: LayerSelectors | None = None,
    *,
    transform: Any = None,
    batch_size: int = 16,
    weak_ratio: float = 0.1,
    device: torch.device | str | None = None,
) -> ChannelStats | dict[str, ChannelStats]:
    """Per-channel mean, max and fraction of positive values, with dead and weak channels flagged.

    A channel is dead when it is never positive, weak when its max is below
    ``weak_ratio`` × the median channel max of its layer (see
    :class:`~fmapviz.engines.channels.ChannelStats`).

    Args:
        data: maps ((N,C,H,W) tensor or dict of them) when ``model`` is None; otherwise
            images: a (N,3,H,W) tensor, a ``LoadedImage``, a folder, a glob, a list of paths,
            or any iterable of batches (a DataLoader of tensors or (tensor, label) pairs).
        model: run over the images, streaming statistics in O(channels) memory.
        layers: layer selectors, needed with ``model``.
        transform: preprocessing for image files (usually ``loaded.transform``).
        batch_size: images per forward pass for tensors and files.
        weak_ratio: threshold for weak channels.
        device: where to run the model (default: its parameters' device).

    Returns:
        A :class:`ChannelStats` for a tensor; a dict layer name → :class:`ChannelStats` otherwise.

    Raises:
        ValueError: ``model`` without ``layers``, nothing to read, or bad maps.

    Example:
        >>> stats = fmapviz.channel_stats("photos/", loaded.model, "features.*.conv.2", transform=loaded.transform)
        >>> stats["features.7.conv.2"].dead_channels  # never positive on these photos
        [9, 52, 54, 56]
    """
    if model is None:
        if isinstance(data, dict):
            return {name: compute_channel_stats(value, name, weak_ratio) for name, value in data.items()}
        return compute_channel_stats(data, None, weak_ratio)
    if layers is None:
        raise ValueError("layers= is required with model=: say which layers to measure, e.g. 'features.*'.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    return stream_channel_stats(
        model, _batches(data, transform, batch_size), layers, weak_ratio=weak_ratio, device=device
    )
