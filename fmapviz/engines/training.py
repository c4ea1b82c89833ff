"""Initialization diagnostics: how the signal travels forward and the gradient backward, layer by layer.

One forward and one backward pass over ``x`` (the classic plots of Glorot and Bengio, 2010):
per layer, the activations' mean, standard deviation, fraction of exact zeros and a histogram,
and the root-mean-square of the gradient reaching those activations. The backward pass starts
from a random unit-normal cotangent on the model's output (drawn from ``seed``), so no labels
or loss are needed and the gradient scale reflects the network, not a loss.

A layer is flagged when its activation std falls below ``vanish`` × the input's std or rises
above ``explode`` × it; gradients are judged against the gradient RMS at the last captured layer
the same way. The passes run in training mode, as training would (BatchNorm normalizes with the
batch's statistics; in eval mode its running statistics of a fresh model normalize nothing), with
dropout off; parameters are frozen (no ``.grad`` is written) and the model's modes, flags and
buffers (running statistics) come back as they were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import check_model_input
from ..files import write_json
from ..hooks import LayerSelectors, capture, model_guard
from ..model_input import accepts_loaded_model
from ..models import LoadedModel

ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Tanh,
    nn.Sigmoid,
)
"""Module types measured by default: the output of each nonlinearity."""

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
"""Module types kept in eval mode during the passes: their random zeros would read as dead units."""


@dataclass
class LayerSignal:
    """Forward and backward statistics of one layer's output."""

    layer: str
    mean: float
    std: float
    zero_fraction: float
    grad_rms: float
    histogram: torch.Tensor  # (bins,) counts
    edges: torch.Tensor  # (bins + 1,)
    flags: list[str] = field(default_factory=list)


@dataclass
class InitReport:
    """Per-layer signal statistics in execution order, with vanish/explode flags.

    Example:
        >>> report = fmapviz.init_report(torchvision.models.vgg11(), torch.randn(2, 3, 64, 64))
        >>> report.flagged  # torchvision's initialization keeps the signal alive
        []
    """

    layers: list[LayerSignal]
    input_std: float
    vanish: float
    explode: float

    @property
    def flagged(self) -> list[str]:
        """Names of the layers with at least one flag."""
        return [layer.layer for layer in self.layers if layer.flags]

    def flagged_as(self, flag: str) -> list[str]:
        """Names of the layers carrying ``flag`` (``"vanishing activations"``, ``"exploding gradients"``, ...)."""
        return [layer.layer for layer in self.layers if flag in layer.flags]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the input std and each layer's statistics and flags (no histograms).

        Example:
            >>> fmapviz.init_report(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(2, 3, 8, 8)).to_dict()
            {'input_std': ..., 'layers': [{'layer': '1', 'mean': ..., 'flags': []}]}
        """
        rows = [
            {key: value for key, value in vars(row).items() if key not in ("histogram", "edges")} for row in self.layers
        ]
        return {"input_std": self.input_std, "layers": rows}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically; what ``fmapviz init`` writes as ``init.json``).

        Returns:
            The path.
        """
        return write_json(path, self.to_dict())

    def __str__(self) -> str:
        lines = [f"{'layer':<28} {'mean':>10} {'std':>10} {'zeros':>6} {'grad rms':>10}  flags"]
        for row in self.layers:
            lines.append(
                f"{row.layer:<28} {row.mean:>10.3g} {row.std:>10.3g} {row.zero_fraction:>6.1%} "
                f"{row.grad_rms:>10.3g}  {', '.join(row.flags)}"
            )
        return "\n".join(lines)


def default_layers(model: nn.Module) -> list[nn.Module]:
    """The model's activation modules, or its Conv/Linear layers when it has none (functional activations)."""
    modules = [module for module in model.modules() if isinstance(module, ACTIVATIONS)]
    if not modules:
        modules = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    if not modules:
        raise ValueError("The model has no activation, Conv2d or Linear module; pass layers= explicitly.")
    return list(dict.fromkeys(modules))


@accepts_loaded_model()
def init_report(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    layers: LayerSelectors | None = None,
    *,
    vanish: float = 1e-3,
    explode: float = 1e3,
    dead: float = 0.99,
    bins: int = 40,
    seed: int = 0,
) -> InitReport:
    """Per-layer activation mean/std/zero fraction and gradient RMS from one forward and backward pass.

    Args:
        model: the network; left as it was (training mode during the pass, dropout off, no parameter
            gradients; running statistics restored).
        x: the model input, e.g. ``torch.randn(16, 3, 64, 64)`` or a batch of real images.
        layers: layer selectors (default: every activation module, see :data:`ACTIVATIONS`).
        vanish: flag activations (gradients) whose std (RMS) is below this × the input std
            (× the last layer's gradient RMS).
        explode: flag them above this ratio.
        dead: flag a layer whose fraction of exact zeros is at least this.
        bins: histogram bins per layer.
        seed: seed of the random cotangent the backward pass starts from.

    Returns:
        An :class:`InitReport`.

    Raises:
        ValueError: ``x`` is not a floating-point batch, or the model gives no tensor output.

    Example:
        >>> tiny = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(8)])
        >>> for conv in tiny.modules():
        ...     if isinstance(conv, nn.Conv2d):
        ...         _ = nn.init.normal_(conv.weight, std=0.01)  # far too small: the signal fades
        >>> report = fmapviz.init_report(tiny, torch.randn(8, 8, 32, 32))
        >>> report.flagged_as("vanishing gradients")[:2]
        ['0.1', '1.1']
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"x must be a floating-point batch (N, ...), got {getattr(x, 'shape', type(x).__name__)}.")
    check_model_input(model, x)
    selectors = layers if layers is not None else default_layers(model)
    generator = torch.Generator().manual_seed(seed)
    with model_guard(model, train=True), capture(model, selectors, keep_grad=True, train=None) as maps:
        for module in model.modules():  # batch statistics, as in training, but no random zeros
            if isinstance(module, DROPOUTS):
                module.eval()
        output = model(x)
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"The model returned {type(output).__name__}; init_report needs a tensor output.")
        if output.requires_grad:
            output.backward(torch.randn(output.shape, generator=generator).to(output))
        activations = {name: value.detach() for name, value in maps.items()}
        grads = {name: value.detach() for name, value in maps.grads.items()}
    input_std = float(x.detach().double().std())
    rows = [_signal(name, value, grads.get(name), bins) for name, value in activations.items()]
    _flag(rows, input_std, vanish, explode, dead)
    return InitReport(rows, input_std, vanish, explode)


def _signal(name: str, value: torch.Tensor, grad: torch.Tensor | None, bins: int) -> LayerSignal:
    values = value.double().flatten()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1e-12
    histogram = torch.histc(values, bins=bins, min=low, max=high)
    return LayerSignal(
        layer=name,
        mean=float(values.mean()),
        std=float(values.std()) if values.numel() > 1 else 0.0,
        zero_fraction=float((values == 0).double().mean()),
        grad_rms=float(grad.double().square().mean().sqrt()) if grad is not None else float("nan"),
        histogram=histogram,
        edges=torch.linspace(low, high, bins + 1, dtype=torch.float64),  # cpu: a report record, as histogram
    )


def _flag(rows: list[LayerSignal], input_std: float, vanish: float, explode: float, dead: float) -> None:
    reference_grad = next((row.grad_rms for row in reversed(rows) if row.grad_rms == row.grad_rms), float("nan"))
    for row in rows:
        if row.std < vanish * input_std:
            row.flags.append("vanishing activations")
        elif row.std > explode * input_std:
            row.flags.append("exploding activations")
        if row.zero_fraction >= dead:
            row.flags.append("dead (zeros)")
        if reference_grad > 0 and row.grad_rms == row.grad_rms:
            if row.grad_rms < vanish * reference_grad:
                row.flags.append("vanishing gradients")
            elif row.grad_rms > explode * reference_grad:
                row.flags.append("exploding gradients")
