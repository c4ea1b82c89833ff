"""Scale feature maps to [0, 1] for display, and upsample them onto the input.

Maps are (N,C,H,W) (a single (C,H,W) map is treated as a batch of one, :func:`as_batch`); a range
over a batch pools the N images, so the same scale is used for every image.

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
