"""What the faithfulness metrics share: the maps and classes they score, and class scores run in batches.

Maps are ``(N, H, W)`` or ``(N, 1, H, W)`` tensors at the input's resolution, or a
:class:`~fmapviz.engines.saliency.SaliencyResult` (its first target, in its default view); targets
are class indices, one for every image or one per image, taken from a SaliencyResult when None.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ...devices import check_model_input, float32_precision
from ...model_input import at_least_float32
from ...outputs import output_tensor
from ..saliency import SaliencyResult

Metric = TypeVar("Metric", bound=Callable[..., Any])


def full_precision(metric: Metric) -> Metric:
    """Give ``metric`` a keyword ``allow_tf32=False`` and run it inside :func:`fmapviz.devices.float32_precision`:
    full float32 convolutions and matmuls by default (the same scores on every card), TF32 allowed on request;
    the user's settings are restored after, even on an error."""
    signature = inspect.signature(metric)
    flag = inspect.Parameter("allow_tf32", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    parameters = list(signature.parameters.values())
    keywords = [i for i, parameter in enumerate(parameters) if parameter.kind is inspect.Parameter.VAR_KEYWORD]
    parameters.insert(keywords[0] if keywords else len(parameters), flag)

    @functools.wraps(metric)
    def wrapper(*args: Any, allow_tf32: bool = False, **kwargs: Any) -> Any:
        with float32_precision(allow_tf32):
            return metric(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def class_indices(target: int | Sequence[int] | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """``(batch,)`` class indices from one index for every image or one per image."""
    return torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1).expand(batch)


def maps_and_classes(
    maps: torch.Tensor | SaliencyResult,
    target: int | Sequence[int] | torch.Tensor | None,
    x: torch.Tensor,
    model: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` maps (detached, their dtype kept) and ``(N,)`` classes to score them on input ``x``.

    Every metric that runs ``model`` calls this first, so each checks ``model`` and ``x`` in this one place.

    Raises:
        ValueError: no target is known, or the maps do not match ``x``'s batch or height and width.
        DeviceError: ``model`` is on the meta device, or ``x`` on another device than ``model``.
    """
    if model is not None:
        check_model_input(model, x)
    batch = x.shape[0]
    if isinstance(maps, SaliencyResult):
        if target is None and maps.target is None:
            raise ValueError("This SaliencyResult has no class target; pass target= (class indices).")
        target = maps.target[:, 0] if target is None else target
        maps = maps.view_maps()[:, 0]
    if target is None:
        raise ValueError("Pass target= (one class index, or one per image).")
    maps = maps[:, 0] if maps.dim() == 4 else maps
    if maps.dim() != 3 or maps.shape[0] != batch:
        raise ValueError(f"maps must be (N, H, W) or (N, 1, H, W) with N = {batch}; got {tuple(maps.shape)}.")
    classes = class_indices(target, batch, maps.device)
    if maps.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"maps are {tuple(maps.shape[-2:])} but x is {tuple(x.shape[-2:])}; upsample them first.")
    return maps.detach(), classes


def class_scores(
    forward: Callable[[torch.Tensor], Any], x: torch.Tensor, classes: torch.Tensor, score: str, batch_size: int
) -> torch.Tensor:
    """Each row's class score (logit or probability), the model run through ``forward`` in batches; float32 for a
    float16 or bfloat16 model too (the softmax in float32)."""
    rows = []
    for first in range(0, x.shape[0], batch_size):
        output = at_least_float32(output_tensor(forward(x[first : first + batch_size])))
        output = output.softmax(1) if score == "probability" else output
        rows.append(output.gather(1, classes[first : first + batch_size, None])[:, 0])
    return torch.cat(rows)
