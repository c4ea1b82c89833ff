"""explain_channels: a prediction explained through the channels of chosen layers (Building Blocks style).

For a target score ``y`` (a class logit) and a layer's activations ``A`` (N, C, H, W), an
attribution method gives a spatial map per channel, ``m[c, i, j]``: how much channel ``c`` at
position ``(i, j)`` contributes to ``y``. A channel's attribution is its map summed over space,
and the channels are ranked by it. The methods are entries of :data:`ATTRIBUTIONS`, a plain dict
``name -> function(activation, gradient) -> (N, C, H, W) map``; add one by adding an entry:

* ``"activation_x_gradient"`` (default): ``A * dy/dA``, the first-order Taylor contribution of each
  activation (Olah et al., *The Building Blocks of Interpretability*, 2018).
* ``"gradcam_weights"``: ``A * mean_ij(dy/dA)``, Grad-CAM's channel weights times the activation,
  so the maps summed over channels are the Grad-CAM map before its ReLU.

Engines take tensors and give tensors: nothing here reads files or draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..devices import check_model_input
from ..hooks import LayerSelectors, capture, layer_keys, model_guard, resolve_layers
from ..model_input import accepts_loaded_model
from ..models import LoadedModel
from ..outputs import output_tensor
from ..vocabulary import class_index

Attribution = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def activation_x_gradient(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``A * dy/dA`` per position: the Building Blocks attribution."""
    return activation * gradient


def gradcam_weights(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``A * mean over space of dy/dA``: Grad-CAM's per-channel weighting of the activation."""
    return activation * gradient.mean(dim=(2, 3), keepdim=True)


ATTRIBUTIONS: dict[str, Attribution] = {
    "activation_x_gradient": activation_x_gradient,
    "gradcam_weights": gradcam_weights,
}
"""Channel attribution methods by name: ``function(activation, gradient) -> (N, C, H, W) map``."""


@dataclass
class LayerExplanation:
    """The channels of one layer that drive the target, for every image.

    Attributes:
        layer: the layer name.
        attributions: ``(N, C)`` every channel's attribution (its map summed over space).
        maps: ``(N, C, H, W)`` every channel's spatial attribution map, at the layer's resolution.
        channels: ``(N, top)`` the channels with the largest attribution, best first.
        values: ``(N, top)`` their attributions.
        activations: ``(N, C)`` each channel's mean activation (to compare with "most active").
    """

    layer: str
    attributions: torch.Tensor
    maps: torch.Tensor
    channels: torch.Tensor
    values: torch.Tensor
    activations: torch.Tensor


@dataclass
class ChannelExplanation:
    """What :func:`explain_channels` found: per layer, the channels that drive each image's target.

    Attributes:
        layers: a :class:`LayerExplanation` by layer name, in execution order.
        target: ``(N,)`` the class index explained for each image.
        target_names: their class names when ``categories`` were given.
        logits: ``(N, classes)`` the model output.
        method: the key of :data:`ATTRIBUTIONS` used.
    """

    layers: dict[str, LayerExplanation]
    target: torch.Tensor
    logits: torch.Tensor
    method: str
    target_names: list[str] | None = None
    settings: dict[str, object] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> LayerExplanation:
        if layer not in self.layers:
            raise KeyError(f"Layer '{layer}' was not explained. Explained: {', '.join(self.layers)}.")
        return self.layers[layer]


@accepts_loaded_model(categories="categories")
def explain_channels(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    layers: LayerSelectors,
    target: str | int | Sequence[int] | torch.Tensor = "top",
    *,
    top: int = 5,
    method: str = "activation_x_gradient",
    categories: Sequence[str] | None = None,
) -> ChannelExplanation:
    """Which channels of ``layers`` make the model predict ``target`` on ``x``, and where.

    One forward and one backward pass; no parameter gradient is computed and the model comes back
    as it was (mode, ``requires_grad``, no hooks), even after an error.

    Args:
        model: an image classifier (its output goes through :func:`fmapviz.outputs.output_tensor`).
        x: ``(N, C, H, W)`` model input.
        layers: one or many layer selectors whose outputs are ``(N, C, H, W)`` maps.
        target: ``"top"`` (each image's predicted class), a class index or name, or one index per image.
        top: how many channels to rank per layer and image.
        method: a key of :data:`ATTRIBUTIONS`.
        categories: class names, for class-name targets and ``target_names``.

    Returns:
        A :class:`ChannelExplanation`.

    Raises:
        ValueError: unknown method, bad ``top``, ``x`` or target, or a layer without spatial maps.
        LayerNotFoundError: a selector matches no module.

    Example:
        >>> found = fmapviz.explain_channels(model, x, "features.14", "top", top=5)
        >>> found["features.14"].channels.shape, found["features.14"].maps.shape
        (torch.Size([1, 5]), torch.Size([1, 160, 7, 7]))
    """
    if method not in ATTRIBUTIONS:
        raise ValueError(f"Unknown attribution method '{method}'. Use one of: {', '.join(ATTRIBUTIONS)}.")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"top must be a positive integer (how many channels), got {top!r}.")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor; got {getattr(x, 'shape', type(x).__name__)}.")
    check_model_input(model, x)
    names = resolve_layers(model, layers)
    with model_guard(model), capture(model, names, keep_grad=True) as maps:
        logits = output_tensor(model(x))
        if logits.dim() != 2:
            raise ValueError(f"explain_channels needs (N, classes) logits; the model gives {tuple(logits.shape)}.")
        classes = _target_classes(target, logits, categories)
        keys = {name: (layer_keys(maps, name) or [name])[0] for name in names}  # a reused module: its last call
        for name, key in keys.items():
            if maps[key].dim() != 4:
                raise ValueError(
                    f"Layer '{name}' gives {tuple(maps[key].shape)} outputs, not (N,C,H,W) spatial maps; "
                    "pick a convolutional layer (see fmapviz.summary(model))."
                )
        chosen = logits.gather(1, classes[:, None]).sum()
        if chosen.requires_grad:
            chosen.backward()
        for name, key in keys.items():
            if key not in maps.grads:
                raise ValueError(
                    f"The logits do not depend on layer '{name}' (the model goes on with another of its outputs); "
                    "pick a layer inside it (see fmapviz.summary(model))."
                )
        found = {}
        for name, key in keys.items():
            activation, gradient = maps[key].detach(), maps.grads[key]
            spatial = ATTRIBUTIONS[method](activation, gradient)
            attributions = spatial.sum(dim=(2, 3))
            count = min(top, attributions.shape[1])
            values, channels = attributions.topk(count, dim=1)
            found[name] = LayerExplanation(name, attributions, spatial, channels, values, activation.mean(dim=(2, 3)))
    names_out = [categories[int(c)] for c in classes] if categories is not None else None
    return ChannelExplanation(
        layers=found,
        target=classes.detach(),
        logits=logits.detach(),
        method=method,
        target_names=names_out,
        settings={"top": top},
    )


def _target_classes(
    target: str | int | Sequence[int] | torch.Tensor, logits: torch.Tensor, categories: Sequence[str] | None
) -> torch.Tensor:
    """``(N,)`` class indices for ``target`` on these logits."""
    batch = logits.shape[0]
    if isinstance(target, str) and target == "top":
        return logits.argmax(dim=1)
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        index = class_index(target, categories, "target")
        classes = torch.full((batch,), index, dtype=torch.long, device=logits.device)
    else:
        classes = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
        if classes.numel() != batch:
            raise ValueError(f"target gives {classes.numel()} classes for {batch} images; give one per image.")
    if int(classes.min()) < 0 or int(classes.max()) >= logits.shape[1]:
        raise ValueError(f"target class out of range: the model has {logits.shape[1]} classes.")
    return classes


def unit_gradients(model: nn.Module, x: torch.Tensor, layer: str, channels: Sequence[int]) -> torch.Tensor:
    """``(N, H, W)`` |input gradient| (summed over colours) of row ``i``'s unit ``layer[channels[i]]`` (its mean).

    What drives each channel on its own image, for many channels in one pass: the saliency
    ``"gradient"`` method with a unit target, batched across units. The forward pass stops at ``layer``.

    Args:
        model: any image model; it comes back as it was.
        x: ``(N, C, H, W)`` model input, one row per unit.
        layer: a layer with (N, C, H, W) outputs.
        channels: ``N`` channel indices, one per row of ``x``.

    Raises:
        ValueError: ``channels`` does not match ``x`` or a channel is out of range.

    Example:
        >>> unit_gradients(model, x[:2], "features.14", [5, 17]).shape
        torch.Size([2, 224, 224])
    """
    if len(channels) != x.shape[0]:
        raise ValueError(f"Got {len(channels)} channels for {x.shape[0]} images; give one channel per row of x.")
    name = resolve_layers(model, layer)[0]
    x = x.detach().clone().requires_grad_(True)
    with model_guard(model):
        with capture(model, name, keep_grad=True, stop_early=True) as maps:
            model(x)  # stops at the layer: the rest of this block is skipped
        activation = maps[name]
        if any(not 0 <= c < activation.shape[1] for c in channels):
            raise ValueError(f"A channel is out of range: '{name}' has {activation.shape[1]} channels.")
        rows = torch.arange(x.shape[0], device=x.device)
        score = activation[rows, torch.as_tensor(list(channels), device=x.device)].flatten(1).mean(1)
        (gradient,) = torch.autograd.grad(score.sum(), x)
    return gradient.sum(dim=1).abs()
