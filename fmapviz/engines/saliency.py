"""Gradient saliency: which input pixels (or which places in a layer) drive a chosen output.

Every method is one small function in :data:`METHODS`; :func:`saliency` is the one entry point.
Input-space methods (``gradient``, ``input_x_gradient``, ``smoothgrad``, ``integrated_gradients``,
``guided_backprop``, ``guided_gradcam``) explain the input tensor; layer methods (``gradcam``,
``gradcam++``, ``layercam``) weigh a captured layer's channels by their gradients and upsample
the result to the input size with :func:`torch.nn.functional.interpolate`.

.. _targets:

Targets (the ``target`` argument, explained here once for every function that takes one):

* ``"top"``: the highest-scoring class of each image; ``"top:3"``: the three best, one map each.
* an ``int``: that class index for every image; a list or 1-D tensor of ints: one class per image.
* a ``str``: a class name looked up in ``categories`` (e.g. ``LoadedModel.categories``).
* a callable ``fn(output) -> (N,) tensor``: any score computed from the model output
  (the output passes through :func:`fmapviz.outputs.output_tensor` first, unless the callable
  has ``raw_output = True``: then it gets the model's output as returned, e.g. a detection
  model's list of dicts). :mod:`fmapviz.targets` has ready-made ones: ``BoxScoreTarget`` for
  detection models and ``MaskTarget`` for segmentation models.
* a feature-map target ``("features.10", 17)``: the mean activation of channel 17 of layer
  ``features.10``, so the map shows which pixels drive that feature map.

Class targets are scored on the raw output (logits), not on softmax probabilities.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import LayerSelectors, capture, model_guard, module_name, resolve_layers
from ..outputs import output_tensor
from ..tokens import as_spatial, resolve_layout, token_grid

View = Literal["signed", "abs", "positive"]
TargetSpec = Any  # see the module docstring, section "Targets"


@dataclass
class SaliencyResult:
    """Saliency maps and how they were made.

    Attributes:
        maps: ``(N, K, H, W)`` on the input's device, one map per image and target (K > 1 for
            ``"top:k"``). Input-space methods sum their attributions over colour channels, so
            the maps keep their sign; layer methods give the (ReLU'd) upsampled class map.
        method: the method name (a key of :data:`METHODS`).
        view: how to display the maps by default: ``"signed"``, ``"abs"`` or ``"positive"``.
        target: ``(N, K)`` class indices used, or None for callable and feature-map targets.
        target_names: class names for ``target`` when ``categories`` were given.
        target_label: a short description of the target, for titles.
        layer: the layer the map comes from (layer methods), or the list of layers.
        layer_maps: every requested layer's ``(N, K, H, W)`` map, in execution order.
        attributions: ``(N, K, C, H, W)`` per-channel attributions (input-space methods).
        delta: ``(N, K)`` Integrated Gradients convergence delta
            (sum of attributions minus ``f(x) - f(baseline)``), else None.
        settings: the method's settings, defaults filled in.
    """

    maps: torch.Tensor
    method: str
    view: View
    target: torch.Tensor | None
    target_label: str
    target_names: list[list[str]] | None = None
    layer: str | list[str] | None = None
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    attributions: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def view_maps(self, view: View | None = None) -> torch.Tensor:
        """The maps as shown: ``"signed"`` as they are, ``"abs"`` magnitudes, ``"positive"`` clamped at 0."""
        return apply_view(self.maps, view or self.view)

    def for_layer(self, layer: str) -> SaliencyResult:
        """This multi-layer Grad-CAM result narrowed to one of its layers.

        Example:
            >>> cams = fmapviz.saliency(model, x, "gradcam", layer=["features.7", "features.18"])
            >>> cams.for_layer("features.7").maps.shape
            torch.Size([1, 1, 224, 224])
        """
        if layer not in self.layer_maps:
            raise KeyError(f"No map for layer '{layer}'; this result has {', '.join(self.layer_maps) or 'none'}.")
        return replace(self, maps=self.layer_maps[layer], layer=layer, layer_maps={layer: self.layer_maps[layer]})


def apply_view(maps: torch.Tensor, view: View) -> torch.Tensor:
    """``maps`` as ``"signed"`` (unchanged), ``"abs"`` or ``"positive"`` values."""
    if view == "signed":
        return maps
    if view == "abs":
        return maps.abs()
    if view == "positive":
        return maps.clamp(min=0)
    raise ValueError(f"Unknown view '{view}'. Use 'signed', 'abs' or 'positive'.")


# ----------------------------------------------------------------------------------------- targets


@dataclass
class _Target:
    """A parsed target: class indices (fixed or top-k), a score function, or a feature map."""

    label: str
    classes: torch.Tensor | None = None  # (K,) or (N, 1) fixed class indices
    top: int = 0
    score: Callable[[Any], torch.Tensor] | None = None
    feature: tuple[str, int] | None = None
    raw: bool = False  # the score function takes the model output as returned

    @property
    def needs_output(self) -> bool:
        return self.feature is None

    def indices(self, output: torch.Tensor) -> torch.Tensor | None:
        """``(N, K)`` class indices for this output, or None for score and feature targets."""
        if self.top:
            if self.top > output.shape[1]:
                raise ValueError(
                    f"target 'top:{self.top}' asks for more classes than the output has ({output.shape[1]})."
                )
            return output.topk(self.top, dim=1).indices
        if self.classes is None:
            return None
        classes = self.expanded_classes(output.shape[0], output.device)
        if int(classes.max()) >= output.shape[1] or int(classes.min()) < 0:
            raise ValueError(
                f"Class index {int(classes.max())} is out of range: the model has {output.shape[1]} outputs."
            )
        return classes

    def expanded_classes(self, batch: int, device: torch.device) -> torch.Tensor:
        """``(N, 1)`` fixed class indices for a batch of ``batch`` images."""
        if self.classes.shape[0] not in (1, batch):
            raise ValueError(f"Got {self.classes.shape[0]} per-image class targets for a batch of {batch} images.")
        return self.classes.to(device).expand(batch, -1)

    def scores(
        self, output: Any, maps: dict[str, torch.Tensor], indices: torch.Tensor | None, batch: int
    ) -> list[torch.Tensor]:
        """One ``(N,)`` score per target column, differentiable."""
        if self.feature is not None:
            return [feature_score(maps[self.feature[0]], self.feature[1])]
        if self.score is not None:
            return [_check_scores(self.score(output), batch)]
        return [output.gather(1, indices[:, k : k + 1]).squeeze(1) for k in range(indices.shape[1])]


def feature_score(feature_map: torch.Tensor, channel: int) -> torch.Tensor:
    """Mean activation of ``channel`` per image: the score of a feature-map target."""
    if not 0 <= channel < feature_map.shape[1]:
        raise ValueError(f"Channel {channel} is out of range: the layer has {feature_map.shape[1]} channels.")
    selected = feature_map[:, channel]
    return selected.flatten(1).mean(1) if selected.dim() > 1 else selected


def _check_scores(scores: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"A callable target must return one score per image, shape ({batch},); got {shape}.")
    return scores


def parse_target(target: TargetSpec, categories: Sequence[str] | None = None) -> _Target:
    """Turn a target spec (see :mod:`fmapviz.engines.saliency`, section Targets) into a :class:`_Target`."""
    if isinstance(target, str):
        match = re.fullmatch(r"top(?::(\d+))?", target)
        if match:
            top = int(match.group(1) or 1)
            if top < 1:
                raise ValueError("target 'top:k' needs k >= 1.")
            return _Target(label=target, top=top)
        if categories is None:
            raise ValueError(f"target '{target}' is a class name, but no categories were given. Pass categories=...")
        if target not in categories:
            from ..errors import closest_names

            hint = ", ".join(closest_names(target, categories)) or "none"
            raise ValueError(f"Unknown class name '{target}'. Closest: {hint}.")
        return _Target(label=target, classes=torch.tensor([[categories.index(target)]]))
    if isinstance(target, bool):
        raise TypeError("target must be 'top', a class index, a class name, a callable or (layer, channel).")
    if isinstance(target, int):
        return _Target(label=f"class {target}", classes=torch.tensor([[target]]))
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str) and isinstance(target[1], int):
        return _Target(label=f"{target[0]}:{target[1]}", feature=(target[0], target[1]))
    if isinstance(target, (list, torch.Tensor)):
        classes = torch.as_tensor(target, dtype=torch.long).reshape(-1, 1)
        return _Target(label="per-image classes", classes=classes)
    if callable(target):
        label = getattr(target, "label", None) or getattr(target, "__name__", type(target).__name__)
        return _Target(label=label, score=target, raw=bool(getattr(target, "raw_output", False)))
    raise TypeError(
        f"Cannot use a target of type {type(target).__name__}. Pass 'top', 'top:k', a class index, "
        "a class name with categories=, a callable on the output, or (layer, channel)."
    )


# ------------------------------------------------------------------------------------------- jobs


@dataclass
class _Job:
    """Everything a method function needs."""

    model: nn.Module
    x: torch.Tensor
    target: _Target
    layers: list[str]
    batch_size: int
    options: dict[str, Any]
    indices: torch.Tensor | None = None  # (N, K) class indices once known
    candidates: list[str] | None = None  # layer=None probe: the pipeline keeps the last one reached
    probe_for: LayerSearch | None = None  # where to remember the probe's pick (it holds for any logit target)

    def option(self, name: str, default: Any) -> Any:
        value = self.options.setdefault(name, default)
        return value

    def forward_scores(self, x: torch.Tensor, extra_layers: Sequence[str] = ()) -> tuple[Any, Any, list[torch.Tensor]]:
        """Run the model on ``x``, keeping ``extra_layers`` on the graph; return (output, maps, scores)."""
        layers = list(extra_layers) + ([self.target.feature[0]] if self.target.feature else [])
        maps: dict[str, torch.Tensor] = {}
        if not layers:
            output = self.output(self.model(x))
        else:
            output = None
            with capture(self.model, layers, keep_grad=True, stop_early=not self.target.needs_output) as maps:
                output = self.model(x)
            output = self.output(output) if output is not None else None
        if output is not None and self.indices is None and not self.target.raw:
            self.indices = self.target.indices(output)
        return output, maps, self.target.scores(output, maps, self.indices, x.shape[0])

    def output(self, raw: Any) -> Any:
        """The model output as the target reads it: raw for ``raw_output`` targets, else a tensor."""
        return raw if self.target.raw else output_tensor(raw)

    def class_indices(self) -> torch.Tensor | None:
        """``(N, K)`` class indices, running one gradient-free forward only for top-k targets."""
        if self.indices is None and self.target.top:
            with torch.no_grad():
                self.indices = self.target.indices(output_tensor(self.model(self.x)))
        elif self.indices is None and self.target.classes is not None:
            self.indices = self.target.expanded_classes(self.x.shape[0], self.x.device)
        return self.indices

    def score_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A captum ``forward_func``: logits for class targets, one score per row otherwise."""
        if self.target.feature is not None:
            layer, channel = self.target.feature

            def feature_forward(inputs: torch.Tensor) -> torch.Tensor:
                with capture(self.model, layer, keep_grad=True, stop_early=True) as maps:
                    self.model(inputs)
                return feature_score(maps[layer], channel)

            return feature_forward
        if self.target.score is not None:
            score = self.target.score
            return lambda inputs: _check_scores(score(self.output(self.model(inputs))), inputs.shape[0])
        return lambda inputs: output_tensor(self.model(inputs))

    def per_target(self, attribute: Callable[[torch.Tensor | None], Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Call ``attribute(class_column_or_None)`` per target column; stack (N, K, ...) results."""
        indices = self.class_indices()
        columns = [None] if indices is None else [indices[:, k] for k in range(indices.shape[1])]
        results = [attribute(column) for column in columns]
        if isinstance(results[0], tuple):
            attributions = torch.stack([r[0] for r in results], 1)
            return attributions, torch.stack([r[1].reshape(-1) for r in results], 1)
        return torch.stack(results, 1), None


def _input_gradients(job: _Job) -> torch.Tensor:
    """``(N, K, C, H, W)`` gradients of each target score with respect to the input, one forward."""
    x = job.x.detach().clone().requires_grad_(True)
    _, _, scores = job.forward_scores(x)
    return torch.stack(
        [torch.autograd.grad(s.sum(), x, retain_graph=k < len(scores) - 1)[0] for k, s in enumerate(scores)], 1
    )


# ---------------------------------------------------------------------------------- input methods


def gradient(job: _Job) -> torch.Tensor:
    """Vanilla gradient (Simonyan et al., 2014): d score / d input."""
    return _input_gradients(job)


def input_x_gradient(job: _Job) -> torch.Tensor:
    """Input times gradient (Shrikumar et al., 2016)."""
    return _input_gradients(job) * job.x.unsqueeze(1)


def smoothgrad(job: _Job) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017) via captum's NoiseTunnel.

    Options: ``noise`` (std as a fraction of the input's value range, default 0.15),
    ``samples`` (default 25), ``seed`` (default 0; the caller's RNG state is left untouched).
    """
    from captum.attr import NoiseTunnel, Saliency

    noise, samples, seed = job.option("noise", 0.15), job.option("samples", 25), job.option("seed", 0)
    stdev = float(noise * (job.x.max() - job.x.min()))
    tunnel = NoiseTunnel(Saliency(job.score_function()))
    x = job.x.detach()

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        with _seeded(seed, x.device):
            return tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=samples,
                nt_samples_batch_size=min(job.batch_size, samples),
                stdevs=stdev,
                target=column,
                abs=False,
            )

    return job.per_target(attribute)[0]


def integrated_gradients(job: _Job) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients (Sundararajan et al., 2017) via captum, chunked by ``batch_size``.

    Options: ``steps`` (default 50), ``baseline``: ``"black"`` (zeros, or true black if
    ``mean`` and ``std`` of the input normalization are given), ``"blur"`` (Gaussian-blurred input),
    ``"noise"`` (uniform noise over the input's range, seeded by ``seed``) or a tensor.
    """
    from captum.attr import IntegratedGradients

    steps = job.option("steps", 50)
    baseline = make_baseline(
        job.x, job.option("baseline", "black"), job.options.get("mean"), job.options.get("std"), job.option("seed", 0)
    )
    method = IntegratedGradients(job.score_function())
    x = job.x.detach()

    def attribute(column: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return method.attribute(
            x,
            baselines=baseline,
            target=column,
            n_steps=steps,
            internal_batch_size=job.batch_size,
            return_convergence_delta=True,
        )

    return job.per_target(attribute)


def guided_backprop(job: _Job) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015): only positive gradients pass ReLUs."""
    with guided_relus(job.model):
        return _input_gradients(job)


def guided_gradcam(job: _Job) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times the upsampled Grad-CAM map."""
    cams = _layer_pipeline(job, gradcam_weights)
    guided = guided_backprop(job)
    return guided * cams[job.layers[-1]].unsqueeze(2), cams


# ---------------------------------------------------------------------------------- layer methods


def gradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient."""
    return (grad.mean((2, 3), keepdim=True) * activation).sum(1)


def gradcam_plus_plus_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., 2018), with the usual exponential-score closed form."""
    grad_2, grad_3 = grad.pow(2), grad.pow(3)
    denominator = 2 * grad_2 + activation.sum((2, 3), keepdim=True) * grad_3
    alpha = grad_2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
    return (weights * activation).sum(1)


def layercam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021): each position weighted by its own positive gradient."""
    return (grad.clamp(min=0) * activation).sum(1)


def _layer_pipeline(job: _Job, weigh: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward, one backward per target down to the layers only; ``(N, K, H, W)`` maps per layer.

    A layer returning a dict of maps (an FPN backbone) gives one map per level (``"backbone:0"``, ...)
    and, under its own name, the sum of its level maps.
    """
    # x does not require grad: capture starts the graph at the first captured layer, so the
    # backward walks from the scores down to the layers only, never to the input.
    _, maps, scores = job.forward_scores(job.x.detach(), job.candidates or job.layers)
    if job.candidates:
        maps = {key: value for key, value in maps.items() if value.requires_grad}
        job.layers = list(dict.fromkeys(module_name(key) for key in maps))
    levels = {name: [name] if name in maps else _level_keys(maps, name) for name in job.layers}
    missing = [name for name, keys in levels.items() if not keys]
    if missing:
        raise ValueError(f"Layer {missing[0]} did not run before the target was computed; pick an earlier layer.")
    keys = [key for name in job.layers for key in levels[name]]
    activations = [maps[key] for key in keys]
    for key, activation in zip(keys, activations):
        if activation.dim() != 4:
            raise ValueError(f"Layer {key} has a {activation.dim()}-D output; CAM methods need a 4-D (N,C,H,W) layer.")
    relu = job.option("relu", True)
    per_key: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for k, score in enumerate(scores):
        grads = torch.autograd.grad(score.sum(), activations, retain_graph=k < len(scores) - 1, allow_unused=True)
        if job.candidates:  # layer=None with a probe: keep the last layer that gets a gradient
            keys, activations, grads = _last_reached(job, keys, activations, grads)
            per_key = {key: [] for key in keys}
        if k == 0:  # pyramid levels the target never reads (an FPN's "pool" feeds only the RPN) are left out
            keys, activations, grads = _drop_unread_levels(keys, activations, grads)
            per_key = {key: per_key.get(key, []) for key in keys}
        unused = [key for key, grad in zip(keys, grads) if grad is None]
        if unused:
            raise ValueError(f"The target does not depend on layer {unused[0]}; pick a layer that runs before it.")
        for key, activation, grad in zip(keys, activations, grads):
            cam = weigh(activation.detach(), grad).unsqueeze(1)
            cam = F.interpolate(cam, size=job.x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
            per_key[key].append(cam.clamp(min=0) if relu else cam)
    result = {key: torch.stack(cams, 1) for key, cams in per_key.items()}
    for name in job.layers:
        if levels[name] != [name]:
            result[name] = torch.stack([result[key] for key in levels[name] if key in result]).sum(0)
    return result


def _level_keys(maps: dict[str, torch.Tensor], name: str) -> list[str]:
    return [key for key in maps if key.startswith(f"{name}:")]


def _drop_unread_levels(
    keys: list[str], activations: list[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor | None]]:
    """Leave out the levels of a dict layer that get no gradient when another level of it does."""
    read = {module_name(key) for key, grad in zip(keys, grads) if grad is not None and ":" in key}
    kept = [i for i, key in enumerate(keys) if grads[i] is not None or ":" not in key or module_name(key) not in read]
    return [keys[i] for i in kept], [activations[i] for i in kept], [grads[i] for i in kept]


def _last_reached(
    job: _Job, keys: list[str], activations: list[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor | None]]:
    """Narrow the probed candidates to the last module whose map gets a non-zero gradient."""
    reached = [module_name(key) for key, grad in zip(keys, grads) if grad is not None and bool(grad.any())]
    if not reached:
        raise ValueError("No spatial layer near the output gets a gradient from the target; pass layer= explicitly.")
    job.layers, job.candidates = [reached[-1]], None
    if job.probe_for is not None:
        job.probe_for.probed = reached[-1]
    chosen = [index for index, key in enumerate(keys) if module_name(key) == reached[-1]]
    return [keys[i] for i in chosen], [activations[i] for i in chosen], [grads[i] for i in chosen]


# -------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Method:
    """A registry entry: the function, whether it explains the input or a layer, and its default view."""

    compute: Callable[..., Any]
    space: Literal["input", "layer"]
    view: View


METHODS: dict[str, Method] = {
    "gradient": Method(gradient, "input", "abs"),
    "input_x_gradient": Method(input_x_gradient, "input", "signed"),
    "smoothgrad": Method(smoothgrad, "input", "abs"),
    "integrated_gradients": Method(integrated_gradients, "input", "signed"),
    "guided_backprop": Method(guided_backprop, "input", "abs"),
    "gradcam": Method(gradcam_weights, "layer", "positive"),
    "gradcam++": Method(gradcam_plus_plus_weights, "layer", "positive"),
    "layercam": Method(layercam_weights, "layer", "positive"),
    "guided_gradcam": Method(guided_gradcam, "input", "abs"),
}
"""Every saliency method by name. Adding a method is adding one function and one entry here."""

_USES_LAYER = {"gradcam", "gradcam++", "layercam", "guided_gradcam"}


def auto_batch_size(device: torch.device) -> int:
    """Rows per chunk for expanded batches (IG steps, SmoothGrad samples): fast on this device kind."""
    return 8 if device.type == "cpu" else 64


def _layer_shape(name: str, tensor: torch.Tensor) -> tuple[tuple[int, ...], bool]:
    """The (N, C, H, W) shape a layer is captured with, and whether it has leading (class) tokens."""
    layout = resolve_layout(tensor, "auto", name, strict=False)
    leading = layout == "tokens" and token_grid(tensor.shape[1])[0] > 0
    return tuple(as_spatial(tensor, layout).shape), leading


@dataclass
class LayerSearch:
    """What ``layer=None`` learns about a model for one input shape; remembered by :func:`spatial_layers`."""

    modules: list[str]  # modules with a (1, C, H, W) map, H*W > 1, in the order they finish
    has_class_tokens: bool  # the last one has leading class tokens (a ViT: its patch tokens may not reach the output)
    probed: str | None = None  # class-token models: the last module whose map gets a gradient from a logit


_SPATIAL_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, LayerSearch]] = weakref.WeakKeyDictionary()


def spatial_layers(model: nn.Module, x: torch.Tensor, until: str | None = None) -> LayerSearch:
    """The spatial modules of ``model`` for ``x[:1]``, up to ``until``.

    The answer comes from one shape-only forward pass, remembered per model, input shape and
    module structure (with the probe's pick, once made), so repeated ``layer=None`` calls do not
    pay for it again.
    """
    structure = tuple(id(module) for module in model.modules())
    key = (tuple(x.shape[1:]), x.dtype, x.device, until, structure)
    remembered = _SPATIAL_LAYERS.setdefault(model, {})
    if key not in remembered:
        remembered.clear()  # one entry per model: the latest input shape and structure
        remembered[key] = _spatial_layers(model, x, until)
    return remembered[key]


def _spatial_layers(model: nn.Module, x: torch.Tensor, until: str | None) -> LayerSearch:
    with torch.no_grad(), capture(model, "all", layout="nchw", reduce=_layer_shape) as shapes:
        model(x[:1])
    names = list(shapes)
    if until is not None and until in shapes:
        names = names[: names.index(until) + 1]
    spatial = [name for name in names if len(shapes[name][0]) == 4 and shapes[name][0][0] == 1]
    spatial = [name for name in spatial if shapes[name][0][2] * shapes[name][0][3] > 1]
    modules = list(dict.fromkeys(module_name(name) for name in spatial))
    return LayerSearch(modules, bool(spatial) and shapes[spatial[-1]][1])


def auto_layer(job: _Job, until: str | None = None) -> str:
    """The layer Grad-CAM uses when ``layer=None``: the last spatial layer the target depends on.

    That is the last module with a 4-D map, unless that map has class tokens (ViT) or the target
    reads a raw output (detection): then the final 32 spatial modules become ``job.candidates``,
    all captured in the one Grad-CAM pass, which keeps the last whose map gets a non-zero gradient
    from the (first) target. For torchvision's ``vit_b_16`` this is
    ``encoder.layers.encoder_layer_11.ln_1``: the last block's output reaches the logits only
    through the class token, so its patch maps get no gradient; for a detector with a
    :class:`fmapviz.targets.BoxScoreTarget` it is ``backbone`` (one map per FPN level, summed).
    """
    search = spatial_layers(job.model, job.x, until)
    modules = search.modules
    if not modules:
        raise ValueError("The model has no layer with a 4-D (N,C,H,W) output; pass layer= explicitly.")
    if job.target.raw:
        job.candidates = modules[-32:]
    elif search.has_class_tokens:
        # which patch maps reach a logit through the class token is a property of the architecture,
        # not of the class: probe once per model and input shape, then reuse the pick
        if search.probed is not None:
            return search.probed
        job.candidates = modules[-32:]
        job.probe_for = search
    return modules[-1]


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec = "top",
    layer: LayerSelectors | None = None,
    batch_size: int | Literal["auto"] = "auto",
    categories: Sequence[str] | None = None,
    **options: Any,
) -> SaliencyResult:
    """Compute a saliency map of ``model`` for input ``x``.

    The model is run in eval mode with frozen parameters (no parameter gradient is ever
    computed) and comes back exactly as it was, hooks removed, even after an error.

    Args:
        model: any image model; its output goes through :func:`fmapviz.outputs.output_tensor`.
        x: ``(N, C, H, W)`` model input (normalized as the model expects).
        method: a key of :data:`METHODS`.
        target: what to explain; see the Targets section of :mod:`fmapviz.engines.saliency`.
        layer: layer methods only: one layer selector or a list of layers (one map each, from a
            single forward and backward pass); None picks the last layer with a 4-D output.
        batch_size: rows per chunk for IG steps and SmoothGrad samples; ``"auto"`` picks a size
            that is fast on ``x``'s device.
        categories: class names, for class-name targets and ``target_names``.
        **options: method settings: ``noise``, ``samples``, ``seed`` (smoothgrad); ``steps``,
            ``baseline``, ``mean``, ``std``, ``seed`` (integrated_gradients); ``relu`` (layer methods).

    Returns:
        A :class:`SaliencyResult` with ``(N, K, H, W)`` maps on ``x``'s device.

    Raises:
        ValueError: unknown method, bad target, or a layer that does not fit.
        LayerNotFoundError: ``layer`` or a feature-map target names no module.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> result = fmapviz.saliency(loaded.model, x, "gradcam", target="tabby", categories=loaded.categories)
        >>> result.maps.shape, result.layer
        (torch.Size([1, 1, 224, 224]), 'features.18')
    """
    if method not in METHODS:
        from ..errors import closest_names

        hint = ", ".join(closest_names(method, METHODS)) or ", ".join(METHODS)
        raise ValueError(f"Unknown saliency method '{method}'. Closest: {hint}. All: {', '.join(METHODS)}.")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor; got {getattr(x, 'shape', type(x).__name__)}.")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be 'auto' or a positive int, not {batch_size!r}.")
    entry = METHODS[method]
    parsed = parse_target(target, categories)
    if parsed.feature is not None:
        resolve_layers(model, parsed.feature[0])
    rows = auto_batch_size(x.device) if batch_size == "auto" else batch_size
    with model_guard(model):
        layers = resolve_layers(model, layer) if method in _USES_LAYER and layer is not None else []
        job = _Job(model, x, parsed, layers, rows, dict(options))
        if method in _USES_LAYER and layer is None:
            job.layers = [auto_layer(job, parsed.feature[0] if parsed.feature else None)]
        attributions = delta = None
        layer_maps: dict[str, torch.Tensor] = {}
        if entry.space == "layer":
            layer_maps = _layer_pipeline(job, entry.compute)
            maps = layer_maps[job.layers[-1]]
        else:
            produced = entry.compute(job)
            if method == "guided_gradcam":
                attributions, layer_maps = produced
            elif isinstance(produced, tuple):
                attributions, delta = produced
            else:
                attributions = produced
            maps = attributions.sum(2)
    indices = job.indices.detach() if job.indices is not None else None
    names = None
    if categories is not None and indices is not None:
        names = [[categories[int(i)] for i in row] for row in indices.cpu()]
    return SaliencyResult(
        maps=maps.detach(),
        method=method,
        view=entry.view,
        target=indices,
        target_label=parsed.label,
        target_names=names,
        layer=(job.layers[0] if len(job.layers) == 1 else job.layers) if job.layers else None,
        layer_maps={name: value.detach() for name, value in layer_maps.items()},
        attributions=attributions.detach() if attributions is not None else None,
        delta=delta.detach() if delta is not None else None,
        settings={"batch_size": rows, **job.options},
    )


def make_baseline(
    x: torch.Tensor,
    kind: str | torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A reference input for Integrated Gradients and the perturbation metrics.

    Args:
        x: ``(N, C, H, W)`` model input.
        kind: ``"black"``, ``"blur"``, ``"noise"`` or a tensor broadcastable to ``x``.
        mean, std: the input normalization; with both, ``"black"`` is true black pixels,
            otherwise zeros of the model input.
        seed: seeds ``"noise"``.

    Returns:
        A tensor shaped like ``x`` on its device.
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(x.device, x.dtype).expand_as(x)
    if kind == "black":
        if mean is None or std is None:
            return torch.zeros_like(x)
        shape = (1, -1, 1, 1)
        mean_t, std_t = (torch.tensor(v, device=x.device, dtype=x.dtype).reshape(shape) for v in (mean, std))
        return (-mean_t / std_t).expand_as(x).clone()
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        sigma = max(x.shape[-1], x.shape[-2]) / 20
        kernel = int(4 * sigma) | 1
        return gaussian_blur(x.detach(), [kernel, kernel], [sigma, sigma])
    if kind == "noise":
        generator = torch.Generator(device=x.device).manual_seed(seed)
        low, high = x.min(), x.max()
        return low + (high - low) * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    raise ValueError(f"Unknown baseline '{kind}'. Use 'black', 'blur', 'noise' or a tensor.")


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for code that does not take a generator (captum), restoring the caller's state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _GuidedClamp(torch.autograd.Function):
    """ReLU-family forward; backward passes only positive gradients where the unit was active."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(min=low) if high is None else x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        passes = (x > ctx.low) & (grad > 0)
        if ctx.high is not None:
            passes &= x < ctx.high
        return grad * passes, None, None


def _guided_forward(low: float, high: float | None, x: torch.Tensor) -> torch.Tensor:
    return _GuidedClamp.apply(x, low, high)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Swap the backward of every ``nn.ReLU`` / ``nn.ReLU6`` module for guided backprop; restore on exit.

    Functional ReLUs (``F.relu`` inside ``forward``) cannot be reached and keep their normal gradient.
    """
    overridden: list[tuple[nn.Module, Any]] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                bounds: tuple[float, float | None] = (0.0, None)
            elif isinstance(module, nn.Hardtanh) and module.min_val == 0:
                bounds = (0.0, module.max_val)
            else:
                continue
            overridden.append((module, module.__dict__.get("forward")))
            module.forward = functools.partial(_guided_forward, *bounds)
        if not overridden:
            raise ValueError("Guided backprop needs nn.ReLU or nn.ReLU6 modules; this model has none.")
        yield
    finally:
        for module, previous in overridden:
            if previous is None:
                del module.forward
            else:
                module.forward = previous
