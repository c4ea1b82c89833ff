"""One adapter from whatever a module returns to the tensor fmapviz works on.

Rule for a model's output, used by every engine (:func:`output_tensor`): a tensor is taken
as is; an object with a ``logits`` attribute gives ``logits``; a dict gives its ``logits``
key, else its ``out`` key (torchvision segmentation), else its only tensor, and a dict with
several tensors and neither key is an error that asks for ``output=`` (CLI ``--output-key KEY``,
see :func:`fmapviz.load_model`); a tuple, list, namedtuple or dataclass gives its first
tensor, depth-first. Pass ``pick=`` where this guess is wrong.

Layer outputs inside a model are read more leniently (:func:`first_tensor`: the first
tensor found, dicts in insertion order).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

OutputPicker = Callable[[Any], torch.Tensor]
OUTPUT_KEYS = ("logits", "out")  # dict keys preferred as a model's output, in this order


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a (layer) output, depth-first, or None if it holds none."""
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
    """The tensor to explain from a model's output (rule in the module docstring).

    Args:
        output: what the model returned.
        pick: a function output -> tensor that overrides the rule.

    Returns:
        The chosen tensor.

    Raises:
        TypeError: the output holds no tensor.
        ValueError: a dict holds several tensors and no ``logits``/``out`` key.

    Example:
        >>> output_tensor({"embedding": torch.zeros(1, 64), "logits": torch.zeros(1, 10)}).shape
        torch.Size([1, 10])
    """
    if pick is not None:
        tensor = pick(output)
    elif isinstance(output, Mapping) and getattr(output, "logits", None) is None:
        tensor = _dict_output(output)
    else:
        tensor = first_tensor(output)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"Cannot find a tensor in a model output of type {type(output).__name__}. "
            "Pass pick=lambda out: ... to say which tensor to use."
        )
    return tensor


def _dict_output(output: Mapping) -> torch.Tensor | None:
    for key in OUTPUT_KEYS:
        if isinstance(output.get(key), torch.Tensor):
            return output[key]
    holding = [key for key, value in output.items() if first_tensor(value) is not None]
    if len(holding) > 1:
        keys = ", ".join(map(str, holding))
        raise ValueError(
            f"The model returns a dict with several tensors ({keys}) and no 'logits' key: "
            f"say which to explain with output='{holding[-1]}' (CLI: --output-key {holding[-1]})."
        )
    return first_tensor(output[holding[0]]) if holding else None


def pick_output(output: Any, key: str) -> torch.Tensor:
    """``output[key]`` of a dict, or ``output.key`` of an object; ValueError naming what exists."""
    if isinstance(output, Mapping):
        if key in output:
            return output[key]
        raise ValueError(f"The model output has no key '{key}'; it has {', '.join(map(str, output))}.")
    if hasattr(output, key):
        return getattr(output, key)
    raise ValueError(f"The model output ({type(output).__name__}) has no key or attribute '{key}'.")


def select_output(model: nn.Module, key: str) -> nn.Module:
    """A view of ``model`` whose forward returns ``output[key]``; parameters and submodules are shared.

    The view is a shallow copy whose class overrides ``forward``, so layer names stay those of
    ``model`` and ``model`` itself is not changed.

    Example:
        >>> logits_only = select_output(model, "logits")
    """
    cls = type(model)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        return pick_output(cls.forward(self, *args, **kwargs), key)

    view = copy.copy(model)
    view.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})
    return view
