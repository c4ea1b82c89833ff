"""Guided ReLU: the backward pass of guided backpropagation (Springenberg et al., 2015)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


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
