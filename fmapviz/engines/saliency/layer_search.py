"""``layers=None``: the spatial layers of a model, searched once per model and input shape
(:func:`~fmapviz.engines.saliency.api.auto_layer` picks the layer a layer method uses from them).

What a search learns lives in a :class:`LayerSearchCache` the caller owns: pass the same one to
several :func:`fmapviz.saliency` calls (the CLI keeps one per run) and later calls skip the
shape-only forward and, on class-token models, the probe. Without one, calls share :data:`SHARED_SEARCHES`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ...hooks import capture, module_name
from ...tokens import as_spatial, resolve_layout, token_grid

PROBED_MODULES = 32
"""How many of the last spatial modules a probe captures to find those the target reaches."""


@dataclass
class LayerSearch:
    """What ``layers=None`` learns about a model for one input shape.

    Attributes:
        modules: modules with a ``(1, C, H, W)`` map over the image (:func:`is_image_grid`), in the order they
            finish; not a map returned beside other tensors (the model may go on with another) nor one whose
            height is a token count of the model (a per-head ``(N, heads, tokens, head_dim)`` attention tensor).
        has_class_tokens: the last one has leading class tokens (a ViT: its patch tokens may not
            reach the output).
        probed: class-token models: the last module whose map gets a gradient from a logit.
    """

    modules: list[str]
    has_class_tokens: bool
    probed: str | None = None


class LayerSearchCache:
    """Remembers layer searches per model (held weakly), input shape and module structure.

    Example:
        >>> searches = LayerSearchCache()
        >>> for image in images:  # the search runs on the first call only
        ...     fmapviz.saliency(vit, image, "gradcam", layer_search=searches)
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, LayerSearch]] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, model: nn.Module, x: torch.Tensor, until: str | None = None) -> LayerSearch:
        """The spatial modules of ``model`` for ``x[:1]``, up to ``until``: remembered, or found by one forward."""
        structure = tuple(id(module) for module in model.modules())
        key = (tuple(x.shape[1:]), x.dtype, x.device, until, structure)
        remembered = self._entries.get(model)
        if remembered is None or remembered[0] != key:  # one entry per model: the latest shape and structure
            remembered = self._entries[model] = (key, _spatial_layers(model, x, until))
        return remembered[1]

    def candidates_before(self, model: nn.Module, x: torch.Tensor, layer: str) -> list[str]:
        """The last :data:`PROBED_MODULES` spatial modules up to ``layer``: where to look for a layer the target
        reaches."""
        modules = self.search(model, x).modules
        name = module_name(layer)
        end = modules.index(name) + 1 if name in modules else len(modules)
        return modules[:end][-PROBED_MODULES:]


SHARED_SEARCHES = LayerSearchCache()
"""The cache :func:`fmapviz.saliency` uses when no ``layer_search`` is passed: one search per model (held weakly)
and input shape, so a default ``layers=None`` call costs what a call naming its layer does."""


def _layer_shape(name: str, tensor: torch.Tensor) -> tuple[tuple[int, ...], bool, int | None]:
    """The (N, C, H, W) shape a layer is captured with, whether it has leading (class) tokens, and its token count
    (None: not tokens)."""
    layout = resolve_layout(tensor, "auto", name, strict=False)
    tokens = tensor.shape[1] if layout == "tokens" else None
    leading = tokens is not None and token_grid(tokens)[0] > 0
    return tuple(as_spatial(tensor, layout).shape), leading, tokens


def is_image_grid(shape: tuple[int, ...], image: tuple[int, int]) -> bool:
    """Whether an ``(N, C, h, w)`` map is a grid over an ``image = (H, W)`` input: more than one cell, no larger than
    the image, and ``h : w`` the image's ratio up to the rounding of strided layers (``|h W - w H| < H + W``).

    A per-head attention tensor ``(N, heads, tokens, head_dim)`` (a ViT's ``attn.q_norm`` or ``k_norm``) is not
    one: read as a ``heads``-channel image it would be meaningless.

    Example:
        >>> is_image_grid((1, 512, 7, 7), (224, 224)), is_image_grid((1, 3, 197, 64), (224, 224))
        (True, False)
    """
    h, w = shape[-2:]
    height, width = image
    return h * w > 1 and h <= height and w <= width and abs(h * width - w * height) < height + width


def _spatial_layers(model: nn.Module, x: torch.Tensor, until: str | None) -> LayerSearch:
    with torch.no_grad(), capture(model, "all", layout="nchw", reduce=_layer_shape) as shapes:
        model(x[:1])
    names = list(shapes)
    if until is not None:
        reached = [index for index, name in enumerate(names) if module_name(name) == until]
        names = names[: reached[-1] + 1] if reached else names
    # a map returned beside other tensors may be off the path to the output: HF's SwinModel returns
    # last_hidden_state and pooler_output, and its classifier reads only the pooler_output
    spatial = [name for name in names if len(shapes[name][0]) == 4 and shapes[name][0][0] == 1]
    spatial = [name for name in spatial if name not in shapes.partial]
    spatial = [name for name in spatial if is_image_grid(shapes[name][0], tuple(x.shape[-2:]))]
    # a per-head q or k (N, heads, tokens, head_dim) can pass for a grid at small sizes ((1, 2, 17, 16) at 64 px)
    token_counts = {shapes[name][2] for name in names if shapes[name][2] is not None}
    spatial = [name for name in spatial if shapes[name][0][-2] not in token_counts]
    modules = list(dict.fromkeys(module_name(name) for name in spatial))
    return LayerSearch(modules, bool(spatial) and shapes[spatial[-1]][1])
