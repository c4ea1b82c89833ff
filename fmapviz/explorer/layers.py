"""Which layers an explorer site shows: selectors checked for spatial maps, ``all``/``blocks`` for the whole model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..engines.compare.blocks import block_layers
from ..errors import FmapvizError
from ..hooks import feature_maps, resolve_layers
from ..models import LoadedModel


def safe_name(text: str) -> str:
    """A layer name as a file name: ``layer4.1.relu#2`` -> ``layer4.1.relu_2``."""
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in text)


WHOLE_MODEL = ("all", "blocks")  # selectors meaning every block of the model with spatial maps


class NoSpatialLayersError(FmapvizError):
    """``--layers all`` on a model none of whose blocks gives (N, C, H, W) maps (a usage error: exit 2)."""


def spatial_layers(loaded: LoadedModel, layers: Any, input_size: tuple[int, int]) -> list[str]:
    """The layer names ``layers`` selects, checked to give (N, C, H, W) maps.

    ``"all"`` and ``"blocks"`` select the model's blocks (:func:`~fmapviz.engines.compare.block_layers`:
    ``features.0`` … ``features.18`` of mobilenet_v2, not each BatchNorm and ReLU) that give spatial maps;
    other selectors must each give spatial maps.

    Raises:
        LayerNotFoundError: a selector matches no module (the message lists the closest names).
        FmapvizError: a layer's output is not a spatial map.
        NoSpatialLayersError: ``"all"``/``"blocks"`` on a model without spatial blocks.
    """
    selectors = [layers] if isinstance(layers, str) or not isinstance(layers, Sequence) else list(layers)
    whole = [s for s in selectors if isinstance(s, str) and s in WHOLE_MODEL]
    chosen = [s for s in selectors if not (isinstance(s, str) and s in WHOLE_MODEL)]
    names = resolve_layers(loaded.model, chosen) if chosen else []
    blocks = [name for name in block_layers(loaded.model) if name not in names] if whole else []
    probe = torch.zeros(1, 3, *input_size, device=loaded.device)
    maps = feature_maps(loaded.model, probe, names + blocks)
    for name in names:
        if name not in maps or maps[name].dim() != 4:
            shape = tuple(maps[name].shape) if name in maps else "no tensor"
            raise FmapvizError(
                f"Layer '{name}' gives {shape} outputs, not (N,C,H,W) spatial maps; explore needs convolutional "
                "layers (see `fmapviz layers MODEL`)."
            )
    found = [key for key, value in maps.items() if value.dim() == 4]
    if whole and not found:
        raise NoSpatialLayersError(
            f"--layers {whole[0]}: no block of {type(loaded.model).__name__} gives (N,C,H,W) spatial maps on a "
            f"{input_size[0]}×{input_size[1]} input; explore needs convolutional layers (see `fmapviz layers MODEL`)."
        )
    return found
