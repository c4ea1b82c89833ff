"""Exact, mergeable running statistics per channel.

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
