"""Token and channels-last layouts turned into (N, C, H, W) feature maps.

Vision Transformers return ``(N, T, C)`` token sequences (a class token, maybe register tokens,
then one token per image patch, row by row) and Swin-style models return channels-last
``(N, H, W, C)`` maps. fmapviz shows, ranks and explains ``(N, C, H, W)`` maps, so
:func:`fmapviz.capture` passes every captured output through :func:`to_spatial`.

Layouts (the ``layout`` argument of :func:`to_spatial` and :func:`fmapviz.capture`):

* ``"auto"`` (default): a 4-D tensor stays NCHW unless ``shape[1] == shape[2] != shape[3]``
  (then NHWC, as Swin's ``(1, 56, 56, 96)``); a 3-D ``(N, T, C)`` tensor with ``C > 1`` is tokens when ``T``
  minus 0 to 8 leading tokens is a perfect square (a class token is tried first, then none, then
  1 + k register tokens); when only register counts fit and several do (``T = 11``: 2 + 3x3 or
  7 + 2x2) the guess is ambiguous and :func:`to_spatial` raises. A 4-D tensor with ``C == H == W``
  stays NCHW. Anything else is left as it is.
* ``"nchw"``: leave the tensor as it is.
* ``"tokens"``: ``(N, T, C)``; drop the leading non-grid tokens (1 class token, else 0, else
  1 + k registers: the smallest count that leaves a perfect square) and fold the rest into a grid.
* ``"nhwc"``: channels-last ``(N, H, W, C)``.

The result is a view of the input (no copy), so captured maps stay cheap.
"""

from __future__ import annotations

import math

import torch

LAYOUTS = ("auto", "nchw", "tokens", "nhwc")
MAX_LEADING_TOKENS = 8
_LEADING_ORDER = (1, 0, *range(2, MAX_LEADING_TOKENS + 1))  # class token first, then none, then registers


def token_grids(tokens: int) -> list[tuple[int, int]]:
    """Every ``(leading, side)`` leaving a ``side * side`` grid, most likely first (class token, none, registers)."""
    fits = []
    for leading in _LEADING_ORDER:
        remaining = tokens - leading
        side = math.isqrt(max(remaining, 0))
        if remaining > 0 and side * side == remaining:
            fits.append((leading, side))
    return fits


def token_grid(tokens: int) -> tuple[int, int] | None:
    """``(leading, side)``: how many leading tokens to drop so that ``side * side`` remain, or None."""
    fits = token_grids(tokens)
    return fits[0] if fits else None


def _override_hint(name: str | None) -> str:
    where = f"layout={{'{name}': ...}}" if name else "layout=..."
    return f"Pass {where} with one of 'nchw', 'tokens', 'nhwc' to say how to read it."


def resolve_layout(tensor: torch.Tensor, layout: str = "auto", name: str | None = None, strict: bool = True) -> str:
    """The concrete layout (``"nchw"``, ``"tokens"`` or ``"nhwc"``) of ``tensor`` under ``layout``.

    Args:
        tensor: a layer output.
        layout: one of :data:`LAYOUTS` (see the module docstring).
        name: the layer name, for error messages.
        strict: with ``"auto"``, raise on a 3-D tensor whose tokens form no square grid
            (otherwise it is left as it is).

    Raises:
        ValueError: unknown layout, or a tensor that does not fit it.
    """
    where = f"Layer '{name}'" if name else "The tensor"
    shape = tuple(tensor.shape)
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout '{layout}'. Use one of {', '.join(LAYOUTS)}.")
    if layout == "auto":
        if tensor.dim() == 4 and shape[1] == shape[2] != shape[3]:
            return "nhwc"
        if tensor.dim() == 3 and shape[2] > 1:  # (N, C, 1) is a pooled output, not tokens of one channel
            fits = token_grids(shape[1])
            if strict and len(fits) > 1 and fits[0][0] >= 2:
                options = " or ".join(f"{leading} leading + {side}x{side}" for leading, side in fits[:2])
                raise ValueError(
                    f"{where} has shape {shape}: {shape[1]} tokens are ambiguous ({options}). {_override_hint(name)}"
                )
            if fits:
                return "tokens"
            if strict:
                raise ValueError(
                    f"{where} has shape {shape}: {shape[1]} tokens do not form a square grid after dropping "
                    f"0 to {MAX_LEADING_TOKENS} leading tokens. {_override_hint(name)}"
                )
        return "nchw"
    if layout == "tokens" and (tensor.dim() != 3 or token_grid(shape[1]) is None):
        raise ValueError(
            f"{where} has shape {shape}, not (N, T, C) tokens forming a square grid after dropping "
            f"0 to {MAX_LEADING_TOKENS} leading tokens. {_override_hint(name)}"
        )
    if layout == "nhwc" and tensor.dim() != 4:
        raise ValueError(f"{where} has shape {shape}; layout 'nhwc' needs a 4-D (N, H, W, C) tensor.")
    return layout


def as_spatial(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """``tensor`` read in a concrete layout (from :func:`resolve_layout`), as an (N, C, H, W) view."""
    if layout == "nhwc":
        return tensor.permute(0, 3, 1, 2)
    if layout == "tokens":
        leading, side = token_grid(tensor.shape[1])
        return tensor[:, leading:].transpose(1, 2).unflatten(2, (side, side))
    return tensor


def from_spatial(spatial: torch.Tensor, original: torch.Tensor, layout: str) -> torch.Tensor:
    """A new tensor in ``original``'s layout whose grid part is ``spatial`` (the inverse of :func:`as_spatial`).

    Capture uses it so that the model goes on computing from the captured map, which keeps that
    map on the autograd path from the input to the output (Grad-CAM differentiates through it).
    """
    if layout == "nhwc":
        return spatial.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
    if layout == "tokens":
        leading = original.shape[1] - spatial.shape[2] * spatial.shape[3]
        return torch.cat([original[:, :leading], spatial.flatten(2).transpose(1, 2)], 1)
    return spatial.clone()


def to_spatial(tensor: torch.Tensor, layout: str = "auto", name: str | None = None) -> torch.Tensor:
    """Turn a token sequence or a channels-last map into an (N, C, H, W) feature map.

    Args:
        tensor: a layer output: ``(N, C, H, W)``, ``(N, H, W, C)``, ``(N, T, C)`` tokens or ``(N, C)``.
        layout: ``"auto"``, ``"nchw"``, ``"tokens"`` or ``"nhwc"`` (see :mod:`fmapviz.tokens`).
        name: the layer name, used in error messages.

    Returns:
        An (N, C, H, W) view of ``tensor`` (no copy); NCHW and 2-D tensors come back as they are.

    Raises:
        ValueError: the layout is unknown, does not fit the shape, or ``"auto"`` cannot place a
            3-D tensor's tokens on a square grid (the message names the ``layout=`` override).

    Example:
        >>> to_spatial(torch.zeros(1, 197, 768)).shape  # ViT-B/16 at 224: class token + 14x14 patches
        torch.Size([1, 768, 14, 14])
        >>> to_spatial(torch.zeros(1, 56, 56, 96)).shape  # Swin stage 1, channels last
        torch.Size([1, 96, 56, 56])
    """
    return as_spatial(tensor, resolve_layout(tensor, layout, name))
