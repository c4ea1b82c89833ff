"""One adapter from whatever a module returns to the tensor fmapviz works on.

Rule, used by every engine: a tensor is taken as is; an object with a ``logits``
attribute gives ``logits``; otherwise the first tensor found depth-first in a
tuple, list, namedtuple, dict (insertion order, which includes HuggingFace
``ModelOutput``) or dataclass. Pass ``pick=`` where this guess is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

OutputPicker = Callable[[Any], torch.Tensor]


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor fmapviz uses from a module output, or None if it holds none."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping):
        items = list(output.values())
    elif isinstance(output, (tuple, list)):
        items = list(output)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [getattr(output, f.name) for f in dataclasses.fields(output)]
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def output_tensor(output: Any, pick: OutputPicker | None = None) -> torch.Tensor:
    """Like :func:`first_tensor`, but raise a clear error when nothing is found."""
    tensor = pick(output) if pick is not None else first_tensor(output)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"Cannot find a tensor in a model output of type {type(output).__name__}. "
            "Pass pick=lambda out: ... to say which tensor to use."
        )
    return tensor
