"""Per-channel statistics and health: one exact, mergeable running accumulator, and dead/weak channels.

:class:`RunningChannelStats` sees feature maps batch by batch and keeps, per channel,
the count, mean, sum of squared deviations (``M2``), max, min and number of positive
values, all in float64 (counts in int64) on the device of the maps it is fed.
A batch is folded in, and two shards are merged, with the parallel-variance formula of
Chan, Golub and LeVeque: for parts A and B with counts ``n_a``, ``n_b``, means
``m_a``, ``m_b`` and ``δ = m_b − m_a``::

    n    = n_a + n_b
    mean = m_a + δ · n_b / n
    M2   = M2_a + M2_b + δ² · n_a · n_b / n

so one pass over everything and any split into shards agree to float rounding.

Everything that measures channels folds maps into it: :func:`compute_channel_stats` (one tensor),
:class:`RunningLayerStats` (a running accumulator per layer, filled inside a forward pass by
``stream_channel_stats``, ``compare`` and ``compare_checkpoints``), ``scan`` and the TensorBoard
logger. :class:`ChannelStats` reads channel health (dead and weak channels) from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RunningChannelStats:
    """Per-channel count, mean, std, max, min and fraction positive, updated batch by batch.

    Each channel's values are all N·H·W entries of a (N,C,H,W) map, or the N entries
    of a (N,C) map. Start empty and call :meth:`update`; combine shards with
    :meth:`merge`; store with :meth:`to_dict` / :meth:`from_dict` (plain tensors only).

    Example:
        >>> stats = RunningChannelStats()
        >>> for x in batches:
        ...     stats.update(model.features(x))
        >>> stats.mean.shape, stats.std.shape, stats.fraction_positive.shape
        (torch.Size([1280]), torch.Size([1280]), torch.Size([1280]))
    """

    count: torch.Tensor | None = None  # int64 scalar: values seen per channel
    total_mean: torch.Tensor | None = None  # (C,) float64
    m2: torch.Tensor | None = None  # (C,) float64, sum of squared deviations from the mean
    maximum: torch.Tensor | None = None  # (C,) float64
    minimum: torch.Tensor | None = None  # (C,) float64
    positive: torch.Tensor | None = None  # (C,) int64, values > 0

    @property
    def channels(self) -> int:
        """Number of channels (0 before the first update)."""
        return 0 if self.total_mean is None else self.total_mean.numel()

    @property
    def empty(self) -> bool:
        return self.count is None or int(self.count) == 0

    def update(self, maps: torch.Tensor) -> RunningChannelStats:
        """Fold a batch of maps (N,C,H,W) or (N,C) into the statistics; returns ``self``.

        Raises:
            ValueError: ``maps`` is not 2-D or 4-D, or its channel count differs from earlier batches.
        """
        if maps.ndim not in (2, 4):
            raise ValueError(f"maps must be (N,C,H,W) or (N,C), got shape {tuple(maps.shape)}.")
        if maps.numel() == 0:
            return self
        merged = self.merge(self, _batch_stats(maps.detach()))
        for field in fields(self):
            setattr(self, field.name, getattr(merged, field.name))
        return self

    @staticmethod
    def merge(a: RunningChannelStats, b: RunningChannelStats) -> RunningChannelStats:
        """Exact combination of two shards' statistics (either may be empty); returns a new object.

        Raises:
            ValueError: the shards have different channel counts.
        """
        if a.empty:
            return b.copy()
        if b.empty:
            return a.copy()
        if a.channels != b.channels:
            raise ValueError(f"Cannot merge statistics of {a.channels} and {b.channels} channels.")
        b = b.to(a.total_mean.device)
        count = a.count + b.count
        n_a, n_b, n = a.count.double(), b.count.double(), count.double()
        delta = b.total_mean - a.total_mean
        return RunningChannelStats(
            count=count,
            total_mean=a.total_mean + delta * (n_b / n),
            m2=a.m2 + b.m2 + delta.square() * (n_a * n_b / n),
            maximum=torch.maximum(a.maximum, b.maximum),
            minimum=torch.minimum(a.minimum, b.minimum),
            positive=a.positive + b.positive,
        )

    @property
    def mean(self) -> torch.Tensor:
        """(C,) mean of every value seen."""
        return self._require(self.total_mean)

    @property
    def variance(self) -> torch.Tensor:
        """(C,) population variance (divided by the count)."""
        return self._require(self.m2) / self.count.double()

    @property
    def std(self) -> torch.Tensor:
        """(C,) population standard deviation."""
        return self.variance.clamp_min(0).sqrt()

    @property
    def max(self) -> torch.Tensor:
        """(C,) largest value seen."""
        return self._require(self.maximum)

    @property
    def min(self) -> torch.Tensor:
        """(C,) smallest value seen."""
        return self._require(self.minimum)

    @property
    def fraction_positive(self) -> torch.Tensor:
        """(C,) share of values > 0."""
        return self._require(self.positive).double() / self.count.double()

    @property
    def pooled_std(self) -> torch.Tensor:
        """Std of every value of all channels pooled (a 0-dim tensor), from the per-channel moments."""
        mean = self.mean
        second = self.variance + mean.square()
        return (second.mean() - mean.mean().square()).clamp_min(0).sqrt()

    def _require(self, value: torch.Tensor | None) -> torch.Tensor:
        if value is None or self.empty:
            raise ValueError("No statistics yet: call update(maps) with at least one batch first.")
        return value

    def to(self, device: torch.device | str) -> RunningChannelStats:
        """A copy with every tensor on ``device``."""
        return RunningChannelStats(**{k: None if v is None else v.to(device) for k, v in self.to_dict().items()})

    def copy(self) -> RunningChannelStats:
        return RunningChannelStats(**{k: None if v is None else v.clone() for k, v in self.to_dict().items()})

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors by field name (safe for ``torch.save`` / ``torch.load(weights_only=True)``)."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {name: value for name, value in values.items() if value is not None}

    @classmethod
    def from_dict(cls, state: dict[str, torch.Tensor]) -> RunningChannelStats:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ValueError: a field is missing or unknown.
        """
        names = {field.name for field in fields(cls)}
        if set(state) != names and state:
            raise ValueError(f"Statistics dict needs exactly the keys {sorted(names)}, got {sorted(state)}.")
        return cls(**state)


def _batch_stats(maps: torch.Tensor) -> RunningChannelStats:
    """Statistics of one (N,C,H,W) or (N,C) batch, reduced over every axis but the channels.

    One float64 copy of the maps (no transposed copy, no temporaries of deviations): the mean and
    variance are one Welford pass over it, the extremes and signs are read from the maps as they are.
    """
    dims = (0, 2, 3) if maps.ndim == 4 else (0,)
    count = maps.numel() // maps.shape[1]
    variance, mean = torch.var_mean(maps.double(), dim=dims, correction=0)
    return RunningChannelStats(
        count=torch.tensor(count, dtype=torch.int64, device=maps.device),
        total_mean=mean,
        m2=variance * count,
        maximum=maps.amax(dim=dims).double(),
        minimum=maps.amin(dim=dims).double(),
        positive=(maps > 0).sum(dim=dims),
    )


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
    """A :class:`ChannelStats` from streamed :class:`RunningChannelStats`."""
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


class RunningLayerStats(dict[str, RunningChannelStats]):
    """A :class:`RunningChannelStats` per layer name, in the order the layers were first folded in.

    :meth:`fold` has the signature of capture's ``reduce=`` callback.
    """

    def fold(self, name: str, maps: torch.Tensor) -> None:
        """Fold one layer's maps (N,C,H,W) or (N,C) into its statistics."""
        self.setdefault(name, RunningChannelStats()).update(maps)

    def health(self, weak_ratio: float = 0.1) -> dict[str, ChannelStats]:
        """Layer name → :class:`ChannelStats`."""
        return {name: stats_from_running(running, name, weak_ratio) for name, running in self.items()}
