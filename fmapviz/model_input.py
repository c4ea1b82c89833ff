"""One way to pass a model: every function that takes one takes an ``nn.Module`` or what :func:`load_model` returns.

:func:`accepts_loaded_model` wraps a public function so that a :class:`~fmapviz.models.LoadedModel` in its model
argument becomes ``loaded.model``, and what the loaded model knows (class names, normalization, input size,
transform) fills the arguments the caller left out; an argument passed explicitly always wins. It also casts the
input tensor to the model's floating dtype (a float32 photo to a float16 model).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from .inputs import model_dtype
from .models import LoadedModel

__all__ = ["accepts_loaded_model", "as_model_input", "at_least_float32", "model_dtype", "unwrap"]

F = TypeVar("F", bound=Callable[..., Any])
Default = str | Callable[[LoadedModel], Any]
MODEL_FORMS = "an ``nn.Module`` or a :class:`~fmapviz.models.LoadedModel`"


def unwrap(model: nn.Module | LoadedModel) -> tuple[nn.Module, LoadedModel | None]:
    """(the module, the LoadedModel it came in, or None for a bare module).

    Raises:
        TypeError: ``model`` is neither; the message names both forms.

    Example:
        >>> module, loaded = fmapviz.model_input.unwrap(torch.nn.Conv2d(3, 8, 3))
        >>> type(module).__name__, loaded
        ('Conv2d', None)
    """
    if isinstance(model, LoadedModel):
        return model.model, model
    if isinstance(model, nn.Module):
        return model, None
    raise TypeError(
        f"model must be an nn.Module or what fmapviz.load_model returns (a LoadedModel), not {type(model).__name__}."
    )


def as_model_input(model: nn.Module, x: Any) -> Any:
    """``x`` cast to the model's floating dtype when both are floating and differ; anything else as it is.

    Example:
        >>> fmapviz.model_input.as_model_input(torch.nn.Linear(2, 2).bfloat16(), torch.zeros(1, 2)).dtype
        torch.bfloat16
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        dtype = model_dtype(model)
        return x if x.dtype == dtype else x.to(dtype)
    return x


def accepts_loaded_model(*, model: str = "model", inputs: Sequence[str] = ("x",), **defaults: Default) -> Callable:
    """Decorate a function whose ``model`` argument may be a LoadedModel; ``defaults`` maps a parameter to the
    LoadedModel attribute (or function of it) that fills it when the caller leaves it out and the value is not None.

    The floating tensors passed as ``inputs`` are cast to the model's dtype (the devices are checked by the
    function itself, :func:`fmapviz.devices.check_model_input`).

    Example:
        >>> @fmapviz.model_input.accepts_loaded_model(categories="categories")
        ... def names(model, x=None, categories=None):
        ...     return categories[:2]
        >>> names(loaded)
        ['tench', 'goldfish']
    """

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:
                return function(*args, **kwargs)  # Python's own message for a wrong call
            value = bound.arguments.get(model)
            if value is not None:
                module, loaded = unwrap(value)
                bound.arguments[model] = module
                if loaded is not None:
                    for parameter, source in defaults.items():
                        if parameter not in bound.arguments:
                            filled = source(loaded) if callable(source) else getattr(loaded, source)
                            if filled is not None:
                                bound.arguments[parameter] = filled
                for name in inputs:
                    if name in bound.arguments:
                        bound.arguments[name] = as_model_input(module, bound.arguments[name])
            return function(*bound.args, **bound.kwargs)

        wrapper.model_forms = MODEL_FORMS  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def loaded_input_shape(loaded: LoadedModel) -> tuple[int, int, int, int]:
    """(1, C, H, W) of one image as ``loaded``'s transform makes it (for ``summary``'s ``input_size``)."""
    return (1, loaded.channels, *loaded.input_size)


def fixed_model_size(loaded: LoadedModel) -> tuple[int, int] | None:
    """The size a fixed-size model must see (activation maximization resizes to it), else None."""
    return loaded.size if loaded.fixed_size else None


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 when it is float16 or bfloat16 (map arithmetic, normalization); else as it is.

    Example:
        >>> fmapviz.model_input.at_least_float32(torch.zeros(2, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor
