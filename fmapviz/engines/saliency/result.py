"""The one result type every saliency method produces, and the named views of its maps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

View = Literal["signed", "abs", "positive", "max_abs", "sum_abs"]

VIEWS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "signed": (lambda a: a.sum(2), "sum over colour channels, sign kept (captum's 'all')"),
    "abs": (lambda a: a.sum(2).abs(), "|sum over colour channels|: the figures' view of gradient methods"),
    "positive": (lambda a: a.sum(2).clamp(min=0), "sum over colour channels, clamped at 0"),
    "max_abs": (lambda a: a.abs().amax(2), "max over colour channels of |a|: Simonyan et al. (2014)"),
    "sum_abs": (lambda a: a.abs().sum(2), "sum over colour channels of |a|: captum's absolute_value view"),
}
"""Each view: how per-channel attributions ``(N, K, C, H, W)`` become ``(N, K, H, W)`` maps, and what it is."""


def apply_view(values: torch.Tensor, view: View) -> torch.Tensor:
    """``values`` in a named view (see :data:`VIEWS`).

    Args:
        values: ``(N, K, C, H, W)`` per-channel attributions, or maps with no channel axis
            (``(N, K, H, W)``, ``(N, H, W)``), which count as one channel.
        view: a key of :data:`VIEWS`.

    Raises:
        ValueError: an unknown view; the message lists them.
    """
    if view not in VIEWS:
        raise ValueError(f"Unknown view '{view}'. Use one of: {', '.join(VIEWS)}.")
    if values.dim() == 5:
        return VIEWS[view][0](values)
    return (
        VIEWS[view][0](values.unsqueeze(2)).squeeze(2) if values.dim() == 4 else apply_view(values[:, None], view)[:, 0]
    )


@dataclass
class Attribution:
    """What a method's compute function returns (the one shape every method has).

    Attributes:
        maps: ``(N, K, H, W)`` at the input's resolution: the channel sum for input-space
            methods, the class map for layer methods.
        attributions: ``(N, K, C, H, W)`` per input channel (input-space methods), else None.
        layer_maps: every layer's ``(N, K, H, W)`` map (layer methods), in execution order.
        delta: ``(N, K)`` convergence delta (Integrated Gradients), else None.
    """

    maps: torch.Tensor
    attributions: torch.Tensor | None = None
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    delta: torch.Tensor | None = None

    @classmethod
    def of_input(cls, attributions: torch.Tensor, **extra: Any) -> Attribution:
        """An input-space attribution: maps are the signed sum over colour channels."""
        return cls(maps=attributions.sum(2), attributions=attributions, **extra)

    @classmethod
    def of_layers(cls, layer_maps: dict[str, torch.Tensor], layers: list[str]) -> Attribution:
        """A layer attribution: the map of the last requested layer, and every layer's map."""
        return cls(maps=layer_maps[layers[-1]], layer_maps=layer_maps)


@dataclass
class SaliencyResult:
    """Saliency maps and how they were made.

    Attributes:
        maps: ``(N, K, H, W)`` on the input's device, one map per image and target (K > 1 for
            ``"top:k"``). Input-space methods sum their attributions over colour channels, so
            the maps keep their sign; layer methods give the upsampled class map.
        method: the method name (a key of :data:`fmapviz.engines.saliency.METHODS`).
        view: the default view (a key of :data:`VIEWS`).
        target: ``(N, K)`` class indices used, or None for callable and unit targets.
        target_label: a short description of the target, for titles.
        target_names: class names for ``target`` when ``categories`` were given.
        layers: the layers the map comes from (methods that take layers), as capture keys.
        layer_maps: every requested layer's ``(N, K, H, W)`` map, in execution order.
        attributions: ``(N, K, C, H, W)`` per-channel attributions (input-space methods).
        delta: ``(N, K)`` Integrated Gradients convergence delta
            (sum of attributions minus ``f(x) - f(baseline)``), else None.
        settings: the method's options, defaults filled in, and the batch size.
    """

    maps: torch.Tensor
    method: str
    view: View
    target: torch.Tensor | None
    target_label: str
    target_names: list[list[str]] | None = None
    layers: list[str] = field(default_factory=list)
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    attributions: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> str | None:
        """The layer of the map in ``maps`` (the last of ``layers``), or None for input methods."""
        return self.layers[-1] if self.layers else None

    def view_maps(self, view: View | None = None) -> torch.Tensor:
        """``(N, K, H, W)`` maps as shown in ``view`` (default: the method's), see :data:`VIEWS`.

        Example:
            >>> fmapviz.saliency(model, x, "gradient").view_maps("max_abs")  # Simonyan et al.'s view
        """
        return apply_view(self.attributions if self.attributions is not None else self.maps, view or self.view)

    def for_layer(self, layer: str) -> SaliencyResult:
        """This multi-layer result narrowed to one of its layers.

        Raises:
            KeyError: ``layer`` is not one of this result's layers; the message lists them.

        Example:
            >>> cams = fmapviz.saliency(model, x, "gradcam", layers=["features.7", "features.18"])
            >>> cams.for_layer("features.7").maps.shape
            torch.Size([1, 1, 224, 224])
        """
        if layer not in self.layer_maps:
            raise KeyError(f"No map for layer '{layer}'; this result has {', '.join(self.layer_maps) or 'none'}.")
        only = {layer: self.layer_maps[layer]}
        return replace(self, maps=self.layer_maps[layer], layers=[layer], layer_maps=only)
