"""model_guard: a model in eval (or train) mode with frozen parameters, restored exactly on exit."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .._torch_internals import modules_and_parameters
from ..model_input import accepts_loaded_model
from ..models import LoadedModel


@accepts_loaded_model(inputs=())
@contextmanager
def model_guard(model: nn.Module | LoadedModel, *, train: bool = False, freeze: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval (or train) mode with frozen parameters, and restore both on exit.

    Engines wrap their work in this so that no parameter gradient is ever computed
    and the user's model comes back exactly as it was, even after an exception. With
    ``train=True`` the buffers (BatchNorm running statistics) are restored too.

    Example:
        >>> net = torchvision.models.resnet18().train()
        >>> with fmapviz.model_guard(net):
        ...     print(net.training, net.fc.weight.requires_grad)
        False False
        >>> net.training, net.fc.weight.requires_grad
        (True, True)
    """
    outer_froze = _GUARDED.get(model)
    if outer_froze is not None and not train and not model.training and (outer_froze or not freeze):
        yield model  # already in eval mode (and frozen if asked) under an outer guard, which restores it all
        return
    modules, parameters = modules_and_parameters(model)
    modes = [module.training for module in modules]
    flags = [(parameter, parameter.requires_grad) for parameter in parameters]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()] if train else []
    _GUARDED[model] = freeze
    try:  # only what differs is set and restored: a model already in eval mode costs no writes
        if any(mode != train for mode in modes):
            model.train(train)
        if freeze:
            for parameter, requires_grad in flags:
                if requires_grad:
                    parameter.requires_grad_(False)
        yield model
    finally:
        if outer_froze is None:
            _GUARDED.pop(model, None)
        else:
            _GUARDED[model] = outer_froze
        for module, training in zip(modules, modes):
            if module.training != training:
                module.training = training
        for parameter, requires_grad in flags:
            if parameter.requires_grad != requires_grad:
                parameter.requires_grad_(requires_grad)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


_GUARDED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
"""Models inside a :func:`model_guard`, and whether it froze their parameters: an inner eval-mode guard of the
same model (engines call one another) then only checks the mode instead of walking every module and parameter."""
