"""Sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps", 2018): :func:`randomization_check`
re-initializes the model's blocks from the top down, one more each step, on a deep copy, and measures
the Spearman rank correlation of each map with the trained model's map. A map that explains the model
must change (correlation falls towards 0); one that stays similar mostly reflects the input.

Targets follow :mod:`fmapviz.engines.saliency.targets`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..._torch_internals import is_batch_or_instance_norm
from ...hooks import LayerSelector, resolve_layers
from ...model_input import accepts_loaded_model
from ...models import LoadedModel
from ..saliency import SaliencyResult, View, saliency
from ..seeding import seeded


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


@accepts_loaded_model(inputs=())
def cascade_blocks(model: nn.Module | LoadedModel) -> list[str]:
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


@accepts_loaded_model()
def randomization_check(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    method: str = "gradient",
    target: Any = "top",
    blocks: Sequence[LayerSelector | Sequence[LayerSelector]] | None = None,
    seed: int = 0,
    view: View | None = None,
    reset_running_stats: bool = False,
    *,
    allow_tf32: bool = False,
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
        seed: seeds the re-initialization, drawn on the CPU whatever the model's device (the same random
            weights on every device; the caller's RNG state is left untouched).
        view: compare maps in this view; default: the method's own view.
        reset_running_stats: also reset BatchNorm running mean and variance to 0 and 1. By default
            they are kept (only the learnable weights are re-initialized), so the check measures
            the randomized weights, not a change of input statistics; fmapviz 0.1 reset them.
        allow_tf32: passed to each :func:`fmapviz.saliency` call (TF32 convolutions on NVIDIA GPUs).
        **saliency_options: passed to :func:`fmapviz.saliency` (``layers``, ``steps``, ...).

    Returns:
        A :class:`RandomizationResult` with one correlation per block and image.

    Example:
        >>> check = fmapviz.evaluate.randomization_check(model, x, "gradcam", blocks=["classifier.1", "features.18"])
        >>> bool(check.correlations[-1, 0] < 0.5)  # Grad-CAM changes once the top blocks are random
        True
    """
    saliency_options["allow_tf32"] = allow_tf32
    original = saliency(model, x, method, target=target, **saliency_options)
    fixed = original.target[:, 0] if original.target is not None else target
    view = view or original.view
    reference = original.view_maps(view)[:, 0]
    steps = list(blocks) if blocks is not None else list(reversed(cascade_blocks(model)))
    randomized = copy.deepcopy(model)
    names: list[str] = []
    correlations = []
    with seeded(seed, torch.device("cpu")):
        for step in steps:
            selected = resolve_layers(randomized, step)
            for name in selected:
                _reinitialize_on_cpu(randomized.get_submodule(name), reset_running_stats)
            names.append(step if isinstance(step, str) else ",".join(selected))
            maps = saliency(randomized, x, method, target=fixed, **saliency_options).view_maps(view)[:, 0]
            correlations.append(spearman(reference, maps))
    return RandomizationResult(method, names, torch.stack(correlations), original, view, reset_running_stats)


def _reinitialize_on_cpu(block: nn.Module, reset_running_stats: bool) -> None:
    """Re-initialize every module of ``block`` with the CPU's RNG: on another device, a CPU copy is re-initialized
    and its values copied in, so the same seed gives the same weights as on the CPU."""
    if all(tensor.device.type == "cpu" for tensor in itertools.chain(block.parameters(), block.buffers())):
        for module in block.modules():
            _reinitialize(module, reset_running_stats)
        return
    on_cpu = copy.deepcopy(block).cpu()
    for module in on_cpu.modules():
        _reinitialize(module, reset_running_stats)
    block.load_state_dict(on_cpu.state_dict())


def _reinitialize(module: nn.Module, reset_running_stats: bool) -> None:
    """``module.reset_parameters()``; for BatchNorm-like layers, keep the running statistics unless asked."""
    if is_batch_or_instance_norm(module) and not reset_running_stats:
        kept = {name: buffer.clone() for name, buffer in module.named_buffers(recurse=False) if buffer is not None}
        module.reset_parameters()
        for name, buffer in kept.items():
            getattr(module, name).copy_(buffer)
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()
