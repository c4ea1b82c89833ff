"""How good is a saliency map? Deletion/insertion curves and the model-randomization sanity check.

* :func:`deletion` / :func:`insertion` (Petsiuk et al., "RISE", 2018): remove (or add) pixels in the
  order the map ranks them and follow the target's softmax probability. A faithful map makes the
  probability fall fast under deletion (low AUC) and rise fast under insertion (high AUC).
* :func:`randomization_check` (Adebayo et al., "Sanity Checks for Saliency Maps", 2018): re-initialize
  the model's blocks from the top down, one more each step, on a deep copy, and measure the Spearman
  rank correlation of each map with the trained model's map. A map that explains the model must change
  (correlation falls towards 0); one that stays similar mostly reflects the input.

Substrates: what deleted pixels become, or what insertion starts from, is named by ``baseline`` and
recorded in each curve (``curve.baseline``), so every table can say which it used: ``"black"``,
``"blur"`` (fmapviz's default for insertion: sigma = max(H, W) / 20, 11 px at 224 px, 45 px kernel,
much stronger than RISE's), ``"rise_blur"`` (RISE's blur: sigma 5 px, 11 px kernel; insertion AUCs
move by up to 0.2 between the two), ``"noise"`` or a tensor (see
:data:`fmapviz.engines.saliency.BASELINES`).

Targets follow :mod:`fmapviz.engines.saliency.targets`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...hooks import LayerSelector, model_guard, resolve_layers
from ...outputs import output_tensor
from ..inference import fast_forward
from ..saliency import SaliencyResult, View, make_baseline, saliency
from ..saliency.baselines import seeded


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


def _maps_and_classes(
    maps: torch.Tensor | SaliencyResult, target: int | Sequence[int] | torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(maps, SaliencyResult):
        if target is None and maps.target is None:
            raise ValueError("This SaliencyResult has no class target; pass target= (class indices).")
        target = maps.target[:, 0] if target is None else target
        maps = maps.view_maps()[:, 0]
    if target is None:
        raise ValueError("Pass target= (one class index, or one per image) for the probability to follow.")
    maps = maps[:, 0] if maps.dim() == 4 else maps
    if maps.dim() != 3 or maps.shape[0] != batch:
        raise ValueError(f"maps must be (N, H, W) or (N, 1, H, W) with N = {batch}; got {tuple(maps.shape)}.")
    classes = torch.as_tensor(target, dtype=torch.long, device=maps.device).reshape(-1).expand(batch)
    return maps, classes


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
    maps, classes = _maps_and_classes(maps, target, x.shape[0])
    if maps.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"maps are {tuple(maps.shape[-2:])} but x is {tuple(x.shape[-2:])}; upsample them first.")
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
                probabilities = output_tensor(forward(start * (1 - mask) + end * mask)).softmax(1)
                scores[image, first : first + batch_size] = probabilities[:, classes[image]]
    fractions = counts.to(scores.dtype) / pixels
    name = baseline if isinstance(baseline, str) else "tensor"
    return PerturbationCurve(mode, fractions, scores, torch.trapezoid(scores, fractions, dim=1), name)


def deletion(
    model: nn.Module,
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


def insertion(
    model: nn.Module,
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


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows (ties get their average rank): ``(N, ...) -> (N,)``.

    Example:
        >>> first, second = torch.tensor([[1.0, 2, 3], [1, 2, 3]]), torch.tensor([[10.0, 20, 30], [3, 2, 1]])
        >>> ranks = fmapviz.evaluate.spearman(first, second)
        >>> ranks.round(decimals=6).tolist()
        [1.0, -1.0]
    """
    first_ranks, second_ranks = _ranks(first.flatten(1)), _ranks(second.flatten(1))
    first_ranks = first_ranks - first_ranks.mean(1, keepdim=True)
    second_ranks = second_ranks - second_ranks.mean(1, keepdim=True)
    denominator = (first_ranks.norm(dim=1) * second_ranks.norm(dim=1)).clamp(min=1e-12)
    return (first_ranks * second_ranks).sum(1) / denominator


def _ranks(rows: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(rows, dtype=torch.float64)
    for index, row in enumerate(rows):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).to(torch.float64)
        ranks[index] = (ends - (counts.to(torch.float64) - 1) / 2)[inverse]
    return ranks


def cascade_blocks(model: nn.Module) -> list[str]:
    """Blocks in definition order: children owning parameters, with ``Sequential``/``ModuleList`` opened.

    Example:
        >>> blocks = fmapviz.evaluate.cascade_blocks(model)  # mobilenet_v2
        >>> blocks[:3], blocks[-1]
        (['features.0.0', 'features.0.1', 'features.1'], 'classifier.1')
    """
    blocks: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                visit(child, full + ".")
            elif any(True for _ in child.parameters()):
                blocks.append(full)

    visit(model, "")
    return blocks


@dataclass
class RandomizationResult:
    """Cascading randomization: how similar each map stays as more blocks are re-initialized.

    Attributes:
        method: the saliency method checked.
        blocks: the blocks re-initialized, top first; step ``i`` has ``blocks[: i + 1]`` random.
        correlations: ``(len(blocks), N)`` Spearman correlation with the trained model's map.
        original: the trained model's :class:`SaliencyResult`.
        view: the view (a key of :data:`fmapviz.engines.saliency.VIEWS`) the maps were compared in.
        reset_running_stats: whether BatchNorm running statistics were reset too.

    Example:
        >>> check = fmapviz.evaluate.randomization_check(model, x, "gradcam", blocks=["classifier.1", "features.18"])
        >>> check.blocks, tuple(check.correlations.shape)
        (['classifier.1', 'features.18'], (2, 1))
    """

    method: str
    blocks: list[str]
    correlations: torch.Tensor
    original: SaliencyResult
    view: View
    reset_running_stats: bool = False


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradient",
    target: Any = "top",
    blocks: Sequence[LayerSelector | Sequence[LayerSelector]] | None = None,
    seed: int = 0,
    view: View | None = None,
    reset_running_stats: bool = False,
    **saliency_options: Any,
) -> RandomizationResult:
    """Cascading model-parameter randomization (Adebayo et al., 2018) on a deep copy of ``model``.

    The target is fixed to the trained model's classes, so every map explains the same class.

    Args:
        model: the trained model; it is never modified (the check runs on a deep copy).
        x: ``(N, C, H, W)`` model input.
        method: a saliency method name (see :data:`fmapviz.engines.saliency.METHODS`).
        target: see :mod:`fmapviz.engines.saliency.targets`.
        blocks: what to re-initialize, top first; each entry is a layer selector or a list of them,
            randomized together in one step. Default: :func:`cascade_blocks`, reversed.
        seed: seeds the re-initialization (the caller's RNG state is left untouched).
        view: compare maps in this view; default: the method's own view.
        reset_running_stats: also reset BatchNorm running mean and variance to 0 and 1. By default
            they are kept (only the learnable weights are re-initialized), so the check measures
            the randomized weights, not a change of input statistics; fmapviz 0.1 reset them.
        **saliency_options: passed to :func:`fmapviz.saliency` (``layers``, ``steps``, ...).

    Returns:
        A :class:`RandomizationResult` with one correlation per block and image.

    Example:
        >>> check = fmapviz.evaluate.randomization_check(model, x, "gradcam", blocks=["classifier.1", "features.18"])
        >>> bool(check.correlations[-1, 0] < 0.5)  # Grad-CAM changes once the top blocks are random
        True
    """
    original = saliency(model, x, method, target=target, **saliency_options)
    fixed = original.target[:, 0] if original.target is not None else target
    view = view or original.view
    reference = original.view_maps(view)[:, 0]
    steps = list(blocks) if blocks is not None else list(reversed(cascade_blocks(model)))
    randomized = copy.deepcopy(model)
    names: list[str] = []
    correlations = []
    with seeded(seed, x.device):
        for step in steps:
            selected = resolve_layers(randomized, step)
            for name in selected:
                for module in randomized.get_submodule(name).modules():
                    _reinitialize(module, reset_running_stats)
            names.append(step if isinstance(step, str) else ",".join(selected))
            maps = saliency(randomized, x, method, target=fixed, **saliency_options).view_maps(view)[:, 0]
            correlations.append(spearman(reference, maps))
    return RandomizationResult(method, names, torch.stack(correlations), original, view, reset_running_stats)


def _reinitialize(module: nn.Module, reset_running_stats: bool) -> None:
    """``module.reset_parameters()``; for BatchNorm-like layers, keep the running statistics unless asked."""
    if isinstance(module, nn.modules.batchnorm._NormBase) and not reset_running_stats:
        kept = {name: buffer.clone() for name, buffer in module.named_buffers(recurse=False) if buffer is not None}
        module.reset_parameters()
        for name, buffer in kept.items():
            getattr(module, name).copy_(buffer)
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()
