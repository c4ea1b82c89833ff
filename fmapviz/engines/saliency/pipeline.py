"""The machinery every method shares: the :class:`Job` a compute function gets, input gradients,
gradients over expanded batches (noise samples), attributions per target column (captum-backed
methods), and the layer pass of the CAM methods."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks import capture, layer_keys, module_name
from ...outputs import output_tensor
from .baselines import make_baseline
from .layer_search import LayerSearch, LayerSearchCache
from .result import Attribution
from .targets import Target, check_scores, unit_score

Weigh = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(activation, gradient) -> tensor``: :func:`layer_pass` takes one giving the ``(N, h, w)`` map; a gradient CAM's
weighing gives the ``(N, C, h, w)`` weighted activations."""
Forward = Callable[[torch.Tensor], torch.Tensor]
"""captum's ``forward_func``: input rows -> the scores a target column indexes."""


@dataclass
class Job:
    """Everything a method's compute function needs.

    Attributes:
        model: the model, already in eval mode with frozen parameters.
        x: ``(N, C, H, W)`` input.
        target: the parsed target.
        layers: the layers of methods that take them (capture selectors, possibly ``"name#k"``).
        batch_size: rows per chunk for expanded batches (IG steps, noise samples).
        options: the method's options, checked, defaults filled in.
        layer_search: where ``layers=None`` searches are remembered.
        explicit_layers: the caller named ``layers`` (a layer without gradient is then reported).
        indices: ``(N, K)`` class indices once known.
        candidates: a ``layers=None`` probe: the layer pass keeps the last one the target reaches.
        probe_for: where to remember the probe's pick (it holds for any logit target).
    """

    model: nn.Module
    x: torch.Tensor
    target: Target
    layers: list[str]
    batch_size: int
    options: dict[str, Any]
    layer_search: LayerSearchCache
    explicit_layers: bool = False
    indices: torch.Tensor | None = None
    candidates: list[str] | None = None
    probe_for: LayerSearch | None = None

    def forward_scores(
        self, x: torch.Tensor, extra_layers: Sequence[str] = (), rows: torch.Tensor | None = None
    ) -> tuple[Any, Any, list[torch.Tensor]]:
        """Run the model on ``x``, keeping ``extra_layers`` on the graph; return (output, maps, scores).

        ``rows`` maps each row of an expanded batch to its image in ``self.x`` (for class targets).
        """
        layers = list(extra_layers) + ([self.target.unit.layer] if self.target.unit else [])
        maps: dict[str, torch.Tensor] = {}
        if not layers:
            output = self.output(self.model(x))
        else:
            output = None
            with capture(self.model, layers, keep_grad=True, stop_early=not self.target.needs_output) as maps:
                output = self.model(x)
            output = self.output(output) if output is not None else None
        if rows is not None:
            indices = self.class_indices()
            indices = indices[rows] if indices is not None else None
        else:
            if output is not None and self.indices is None and not self.target.raw:
                self.indices = self.target.indices(output)
            indices = self.indices
        return output, maps, self.target.scores(output, maps, indices, x.shape[0])

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

    def score_function(self) -> Forward:
        """A captum ``forward_func``: logits for class targets, else one score (or a callable's K) per row."""
        unit = self.target.unit
        if unit is not None:

            def unit_forward(inputs: torch.Tensor) -> torch.Tensor:
                with capture(self.model, unit.layer, keep_grad=True, stop_early=True) as maps:
                    self.model(inputs)
                return unit_score(maps, unit)

            return unit_forward
        if self.target.score is not None:
            score = self.target.score
            return lambda inputs: check_scores(score(self.output(self.model(inputs))), inputs.shape[0])
        return lambda inputs: output_tensor(self.model(inputs))

    def score_columns(self) -> int:
        """How many scores per image a callable target gives (one gradient-free forward), else 1."""
        if self.target.score is None:
            return 1
        with torch.no_grad():
            scores = check_scores(self.target.score(self.output(self.model(self.x))), self.x.shape[0])
        return 1 if scores.dim() == 1 else scores.shape[1]

    def baseline(self) -> torch.Tensor:
        """The reference input the ``baseline``, ``mean``, ``std`` (and ``seed``) options name, shaped like ``x``."""
        options = self.options
        return make_baseline(self.x, options["baseline"], options["mean"], options["std"], options.get("seed", 0))

    def per_target(self, attribute: Callable[[Any], Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Call ``attribute(column)`` per target column; stack (N, K, ...) results (and deltas).

        ``column`` is captum's ``target``: a ``(N,)`` class column, a column index of a callable
        target's ``(N, K)`` scores, or None (one score per image).
        """
        indices = self.class_indices()
        if indices is not None:
            columns: list[Any] = [indices[:, k] for k in range(indices.shape[1])]
        else:
            count = self.score_columns()
            columns = [None] if count == 1 else list(range(count))
        results = [attribute(column) for column in columns]
        if isinstance(results[0], tuple):
            attributions = torch.stack([r[0] for r in results], 1)
            return attributions, torch.stack([r[1].reshape(-1) for r in results], 1)
        return torch.stack(results, 1), None


def attribution_per_target(job: Job, attribute: Callable[[Any], Any]) -> Attribution:
    """The input-space :class:`~.result.Attribution` of ``attribute(column)`` called per target column
    (see :meth:`Job.per_target`), with the deltas when it returns ``(attributions, delta)`` (IG)."""
    attributions, delta = job.per_target(attribute)
    return Attribution.of_input(attributions, delta=delta)


def input_gradients(job: Job, inputs: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``(M, K, C, H, W)`` gradients of each target score with respect to ``inputs`` (default ``job.x``).

    One forward; ``rows`` maps expanded rows to their images (see :meth:`Job.forward_scores`).
    """
    inputs = (job.x if inputs is None else inputs).detach().clone().requires_grad_(True)
    _, _, scores = job.forward_scores(inputs, rows=rows)
    last = len(scores) - 1
    return torch.stack(
        [torch.autograd.grad(s.sum(), inputs, retain_graph=k < last)[0] for k, s in enumerate(scores)], 1
    )


def averaged_gradients(
    job: Job, count: int, make_inputs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``(N, K, C, H, W)``: the mean over ``count`` variants of each image of its input gradient.

    ``make_inputs(images, variants)`` builds the rows of one chunk (``job.batch_size`` rows):
    ``images`` are indices into ``job.x``, ``variants`` in ``range(count)``. SmoothGrad's noisy
    copies use it; any method averaged over perturbed inputs can.
    """
    total = job.x.shape[0] * count
    sums: torch.Tensor | None = None
    for start in range(0, total, job.batch_size):
        flat = torch.arange(start, min(start + job.batch_size, total), device=job.x.device)
        images, variants = flat // count, flat % count
        grads = input_gradients(job, make_inputs(images, variants), rows=images)
        sums = (
            torch.zeros(job.x.shape[0], *grads.shape[1:], device=grads.device, dtype=grads.dtype)
            if sums is None
            else sums
        )
        sums.index_add_(0, images, grads)
    return sums / count


def layer_pass(job: Job, weigh: Weigh) -> dict[str, torch.Tensor]:
    """One forward, one backward per target down to ``job.layers`` only; ``(N, K, H, W)`` maps per layer.

    ``weigh(activation, gradient) -> (N, h, w)`` makes a layer's low-resolution map. The ``clamp``
    option orders the ReLU and the bilinear upsampling: ``"map"`` clamps at the layer's resolution,
    then upsamples (the papers, captum, pytorch-grad-cam, torchcam); ``"upsampled"`` upsamples first
    (fmapviz 0.1); ``"none"`` keeps negative evidence.

    A layer returning a dict of maps (an FPN backbone) gives one map per level (``"backbone:0"``, ...)
    and, under its own name, the sum of its level maps. ``job.layers`` ends as the capture keys used
    (``"layer4.1.relu#2"`` for a reused ``"layer4.1.relu"``: its last call). A layer the (first)
    target sends no gradient to (a ViT's last block, read only through the class token) is swapped,
    with a warning, for the nearest earlier layer that gets one.

    Raises:
        ValueError: a layer runs after the target, gets no gradient at all, or has no 4-D output.
    """
    # x does not require grad: capture starts the graph at the first captured layer, so the
    # backward walks from the scores down to the layers only, never to the input.
    _, maps, scores = job.forward_scores(job.x.detach(), job.candidates or job.layers)
    if job.candidates:
        maps = {key: value for key, value in maps.items() if value.requires_grad}
        job.layers = list(dict.fromkeys(module_name(key) for key in maps))
    levels = {name: layer_keys(maps, name) for name in job.layers}
    missing = [name for name, keys in levels.items() if not keys]
    if missing:
        raise ValueError(f"Layer {missing[0]} did not run before the target was computed; pick an earlier layer.")
    keys = [key for name in job.layers for key in levels[name]]
    activations = [maps[key] for key in keys]
    for key, activation in zip(keys, activations):
        if activation.dim() != 4:
            raise ValueError(f"Layer {key} has a {activation.dim()}-D output; CAM methods need a 4-D (N,C,H,W) layer.")
    per_key: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    dead: list[str] = []
    for k, score in enumerate(scores):
        if score.requires_grad:
            grads = torch.autograd.grad(score.sum(), activations, retain_graph=k < len(scores) - 1, allow_unused=True)
        else:  # no captured map is on the path to the target (the model went on with another output of the layer)
            grads = (None,) * len(activations)
        if job.candidates:  # layers=None with a probe: keep the last layer that gets a gradient
            keys, activations, grads = _last_reached(job, keys, activations, grads)
            per_key = {key: [] for key in keys}
        if k == 0:  # pyramid levels the target never reads (an FPN's "pool" feeds only the RPN) are left out
            keys, activations, grads = _drop_unread_levels(keys, activations, grads)
            per_key = {key: per_key.get(key, []) for key in keys}
            dead = [
                key for key, grad in zip(keys, grads) if job.explicit_layers and grad is not None and not grad.any()
            ]
        unused = [key for key, grad in zip(keys, grads) if grad is None]
        if unused:
            raise ValueError(
                f"The target does not depend on layer {unused[0]} (it runs after the target, or the model goes on "
                "with another of its outputs); pick a layer that runs before the target, or one inside this layer."
            )
        for key, activation, grad in zip(keys, activations, grads):
            per_key[key].append(weigh(activation.detach(), grad))
    clamp = job.options.get("clamp", "map")
    result = {key: upsampled_maps(torch.stack(cams, 1), job.x.shape[-2:], clamp) for key, cams in per_key.items()}
    calls = {name: levels[name][0].split(":")[0] if levels[name] != [name] else name for name in job.layers}
    for name in job.layers:
        if levels[name] != [calls[name]]:
            result[calls[name]] = torch.stack([result[key] for key in levels[name] if key in result]).sum(0)
    job.layers = [calls[name] for name in job.layers]
    for key in [key for key in dead if key in job.layers]:
        result = _swap_dead_layer(job, key, result, weigh)
    return result


def upsampled_maps(cams: torch.Tensor, size: Sequence[int], clamp: str) -> torch.Tensor:
    """``(N, K, h, w)`` -> ``(N, K, H, W)``, clamped at 0 before or after the bilinear upsampling, or not."""
    if clamp == "map":
        cams = cams.clamp(min=0)
    cams = F.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)
    return cams.clamp(min=0) if clamp == "upsampled" else cams


def _swap_dead_layer(job: Job, layer: str, result: dict[str, torch.Tensor], weigh: Weigh) -> dict[str, torch.Tensor]:
    """Replace ``layer``'s blank map by the nearest earlier layer the target reaches, with a warning."""
    probe = replace(
        job,
        layers=[],
        candidates=job.layer_search.candidates_before(job.model, job.x, layer),
        explicit_layers=False,
        probe_for=None,
    )
    try:
        found = layer_pass(probe, weigh)
    except ValueError:
        warnings.warn(
            f"Layer {layer} gets no gradient from the target and no earlier layer does; its map is blank.", stacklevel=4
        )
        return result
    nearest = probe.layers[-1]
    warnings.warn(
        f"Layer {layer} gets no gradient from the target (its map would be blank; on a ViT only the class token "
        f"reaches the head); using {nearest}, the nearest earlier layer that does. "
        f"Pass layers='{nearest}' to skip this check.",
        stacklevel=4,
    )
    job.layers = [nearest if name == layer else name for name in job.layers]
    return {
        (nearest if key == layer else key): (found[nearest] if key == layer else value) for key, value in result.items()
    }


def _drop_unread_levels(
    keys: list[str], activations: list[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor | None]]:
    """Leave out the levels of a dict layer that get no gradient when another level of it does."""
    read = {module_name(key) for key, grad in zip(keys, grads) if grad is not None and ":" in key}
    kept = [i for i, key in enumerate(keys) if grads[i] is not None or ":" not in key or module_name(key) not in read]
    return [keys[i] for i in kept], [activations[i] for i in kept], [grads[i] for i in kept]


def _last_reached(
    job: Job, keys: list[str], activations: list[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor | None]]:
    """Narrow the probed candidates to the last module whose map gets a non-zero gradient."""
    reached = [module_name(key) for key, grad in zip(keys, grads) if grad is not None and bool(grad.any())]
    if not reached:
        raise ValueError("No spatial layer near the output gets a gradient from the target; pass layers= explicitly.")
    job.layers, job.candidates = [reached[-1]], None
    if job.probe_for is not None:
        job.probe_for.probed = reached[-1]
    chosen = [keys.index(key) for key in layer_keys(keys, reached[-1])]
    return [keys[i] for i in chosen], [activations[i] for i in chosen], [grads[i] for i in chosen]
