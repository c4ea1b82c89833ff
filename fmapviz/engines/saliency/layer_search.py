"""``layers=None``: which layer a layer method uses, found once per model and input shape.

What a search learns lives in a :class:`LayerSearchCache` the caller owns: pass the same one to
several :func:`fmapviz.saliency` calls (the CLI keeps one per run) and later calls skip the
shape-only forward and, on class-token models, the probe. Without one, each call searches afresh.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...hooks import capture, module_name
from ...tokens import as_spatial, resolve_layout, token_grid

if TYPE_CHECKING:
    from .pipeline import Job

PROBED_MODULES = 32
"""How many of the last spatial modules a probe captures to find those the target reaches."""


@dataclass
class LayerSearch:
    """What ``layers=None`` learns about a model for one input shape.

    Attributes:
        modules: modules with a ``(1, C, H, W)`` map, H*W > 1, in the order they finish.
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


def _layer_shape(name: str, tensor: torch.Tensor) -> tuple[tuple[int, ...], bool]:
    """The (N, C, H, W) shape a layer is captured with, and whether it has leading (class) tokens."""
    layout = resolve_layout(tensor, "auto", name, strict=False)
    leading = layout == "tokens" and token_grid(tensor.shape[1])[0] > 0
    return tuple(as_spatial(tensor, layout).shape), leading


def _spatial_layers(model: nn.Module, x: torch.Tensor, until: str | None) -> LayerSearch:
    with torch.no_grad(), capture(model, "all", layout="nchw", reduce=_layer_shape) as shapes:
        model(x[:1])
    names = list(shapes)
    if until is not None:
        reached = [index for index, name in enumerate(names) if module_name(name) == until]
        names = names[: reached[-1] + 1] if reached else names
    spatial = [name for name in names if len(shapes[name][0]) == 4 and shapes[name][0][0] == 1]
    spatial = [name for name in spatial if shapes[name][0][2] * shapes[name][0][3] > 1]
    modules = list(dict.fromkeys(module_name(name) for name in spatial))
    return LayerSearch(modules, bool(spatial) and shapes[spatial[-1]][1])


def auto_layer(job: Job, until: str | None = None) -> str:
    """The layer a layer method uses when ``layers=None``: the last spatial layer the target depends on.

    That is the last module with a 4-D map, unless that map has class tokens (ViT) or the target
    reads a raw output (detection): then the final :data:`PROBED_MODULES` spatial modules become
    ``job.candidates``, all captured in the one Grad-CAM pass, which keeps the last whose map gets
    a non-zero gradient from the (first) target. For torchvision's ``vit_b_16`` this is
    ``encoder.layers.encoder_layer_11.ln_1``: the last block's output reaches the logits only
    through the class token, so its patch maps get no gradient; for a detector with a
    :class:`fmapviz.engines.saliency.region_targets.BoxScoreTarget` it is ``backbone`` (one map per FPN level, summed).

    Raises:
        ValueError: the model has no layer with a 4-D output.
    """
    search = job.layer_search.search(job.model, job.x, until)
    modules = search.modules
    if not modules:
        raise ValueError("The model has no layer with a 4-D (N,C,H,W) output; pass layers= explicitly.")
    if job.target.raw:
        job.candidates = modules[-PROBED_MODULES:]
    elif search.has_class_tokens:
        # which patch maps reach a logit through the class token is a property of the architecture,
        # not of the class: probe once per model and input shape, then reuse the pick
        if search.probed is not None:
            return search.probed
        job.candidates = modules[-PROBED_MODULES:]
        job.probe_for = search
    return modules[-1]


def candidates_before(job: Job, layer: str) -> list[str]:
    """The last :data:`PROBED_MODULES` spatial modules up to ``layer``: where to look for a layer the target reaches."""
    modules = job.layer_search.search(job.model, job.x).modules
    name = module_name(layer)
    end = modules.index(name) + 1 if name in modules else len(modules)
    return modules[:end][-PROBED_MODULES:]
