"""Rank and choose channels: one score per channel (:data:`RANKINGS`), and the channels to show."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ...vocabulary import parse_channels
from .normalize import as_batch

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
    indices = torch.tensor(choice.indices, dtype=torch.int64)  # cpu: checked here (no sync), then moved
    if bool(((indices < -count) | (indices >= count)).any()):
        raise ValueError(f"channels {indices.tolist()} has indices out of range for {count} channels (0..{count - 1}).")
    return (indices % count).to(device)
