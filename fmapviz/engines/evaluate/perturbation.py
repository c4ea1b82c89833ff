"""Deletion and insertion curves (Petsiuk et al., "RISE", 2018): remove (or add) pixels in the order the
map ranks them and follow the target's softmax probability. A faithful map makes the probability fall
fast under deletion (low AUC) and rise fast under insertion (high AUC).

Substrates: what deleted pixels become, or what insertion starts from, is named by ``baseline`` and
recorded in each curve (``curve.baseline``), so every table can say which it used: ``"black"``,
``"blur"`` (fmapviz's default for insertion: sigma = max(H, W) / 20, 11 px at 224 px, 45 px kernel,
much stronger than RISE's), ``"rise_blur"`` (RISE's blur: sigma 5 px, 11 px kernel; insertion AUCs
move by up to 0.2 between the two), ``"noise"`` or a tensor (see
:data:`fmapviz.engines.saliency.BASELINES`).

Maps and targets: see :mod:`.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...hooks import model_guard
from ...model_input import accepts_loaded_model, at_least_float32
from ...models import LoadedModel
from ...outputs import output_tensor
from ..inference import fast_forward
from ..saliency import SaliencyResult, make_baseline
from .common import full_precision, maps_and_classes


@dataclass
class PerturbationCurve:
    """A deletion or insertion curve per image.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: ``(S,)`` fraction of pixels removed (deletion) or inserted (insertion), 0 to 1.
        scores: ``(N, S)`` softmax probability of each image's target class at each step.
        auc: ``(N,)`` area under each curve (trapezoid rule over ``fractions``).
        baseline: the substrate's name (``"blur"``, ``"rise_blur"``, ``"black"``, ...; ``"tensor"`` for a tensor).

    Example:
        >>> curve = fmapviz.evaluate.deletion(model, x, fmapviz.saliency(model, x, "gradcam"), steps=10)
        >>> curve.mode, tuple(curve.scores.shape), round(float(curve.fractions[1]), 2)
        ('deletion', (1, 11), 0.1)
    """

    mode: str
    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    baseline: str = "black"


def _perturbation_curve(
    mode: str,
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor | SaliencyResult,
    target: int | Sequence[int] | torch.Tensor | None,
    steps: int,
    baseline: str | torch.Tensor,
    batch_size: int,
) -> PerturbationCurve:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}.")
    maps, classes = maps_and_classes(maps, target, x, model)
    reference = make_baseline(x, baseline)
    pixels = maps[0].numel()
    counts = torch.linspace(0, pixels, steps + 1, device=x.device).round().long()  # pixels changed per step
    rank = torch.empty_like(maps.flatten(1), dtype=torch.long)
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand_as(order))
    scores = torch.empty(x.shape[0], steps + 1, device=x.device)
    with torch.no_grad(), model_guard(model):
        forward = fast_forward(model)
        for image in range(x.shape[0]):
            changed = (rank[image][None] < counts[:, None]).reshape(steps + 1, 1, *x.shape[-2:]).to(x.dtype)
            start, end = (x[image], reference[image]) if mode == "deletion" else (reference[image], x[image])
            for first in range(0, steps + 1, batch_size):
                mask = changed[first : first + batch_size]
                probabilities = at_least_float32(output_tensor(forward(start * (1 - mask) + end * mask))).softmax(1)
                scores[image, first : first + batch_size] = probabilities[:, classes[image]]
    fractions = counts.to(scores.dtype) / pixels
    name = baseline if isinstance(baseline, str) else "tensor"
    return PerturbationCurve(mode, fractions, scores, torch.trapezoid(scores, fractions, dim=1), name)


@accepts_loaded_model()
@full_precision
def deletion(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    maps: torch.Tensor | SaliencyResult,
    target: int | Sequence[int] | torch.Tensor | None = None,
    steps: int = 50,
    baseline: str | torch.Tensor = "black",
    batch_size: int = 16,
) -> PerturbationCurve:
    """Deletion curve: replace the most salient pixels first by ``baseline``; lower AUC is better.

    Args:
        model: a classifier; its output passes through :func:`fmapviz.outputs.output_tensor`.
        x: ``(N, C, H, W)`` model input.
        maps: ``(N, H, W)`` maps, or a :class:`SaliencyResult` (its first target and default view).
        target: class per image (or one for all); taken from a SaliencyResult when None.
        steps: number of equal pixel steps from 0 to all pixels (``steps + 1`` forward rows per image).
        baseline: what replaces removed pixels: ``"black"`` (zeros), ``"blur"``, ``"rise_blur"``,
            ``"noise"`` or a tensor (see the module docstring).
        batch_size: rows per forward pass.

    Returns:
        A :class:`PerturbationCurve` with one AUC per image.

    Raises:
        ValueError: maps and x do not match, or no target is known.

    Example:
        >>> result = fmapviz.saliency(model, x, "gradcam")
        >>> round(float(fmapviz.evaluate.deletion(model, x, result, steps=10).auc), 2)
        0.43
    """
    return _perturbation_curve("deletion", model, x, maps, target, steps, baseline, batch_size)


@accepts_loaded_model()
@full_precision
def insertion(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    maps: torch.Tensor | SaliencyResult,
    target: int | Sequence[int] | torch.Tensor | None = None,
    steps: int = 50,
    baseline: str | torch.Tensor = "blur",
    batch_size: int = 16,
) -> PerturbationCurve:
    """Insertion curve: start from ``baseline`` (a blurred image) and put back the most salient pixels first.

    Higher AUC is better. The default ``"blur"`` is fmapviz's strong blur; ``baseline="rise_blur"``
    is the one of the RISE paper (see the module docstring). Arguments, return value and errors are those
    of :func:`deletion`.

    Example:
        >>> result = fmapviz.saliency(model, x, "gradcam")
        >>> round(float(fmapviz.evaluate.insertion(model, x, result, steps=10).auc), 2)
        0.56
    """
    return _perturbation_curve("insertion", model, x, maps, target, steps, baseline, batch_size)
