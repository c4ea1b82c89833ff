"""Every private PyTorch and captum API that fmapviz uses, each beside its public-API fallback, behind one switch.

A few internals make fmapviz faster or let it reuse captum's own pieces; no other module of the package
touches a private torch or captum name (``tests/test_torch_internals.py`` scans them all). Should a release
break one of them, or to check that no result depends on them, turn them all off at once: set
``FMAPVIZ_PUBLIC_TORCH_ONLY=1`` before importing fmapviz, or run code inside ``with use_private_apis(False):``.
Results stay the same; only speed and memory change. The private APIs, and what replaces each when off:

* Python dispatch (``torch.utils._python_dispatch.TorchDispatchMode``, an op's ``_schema``,
  ``torch._C._storage_Use_Count``): capture's copy-before-write guard, which holds maps by reference and copies
  one only when an in-place op is about to overwrite it. Off: every captured map is copied as it is captured.
  The same mode lets :func:`fmapviz.summary` follow geometry op by op. Off: forward hooks read each module's
  settings (functional pooling in a ``forward``, which no module runs, is then not seen).
* oneDNN's ``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise`` and their weight reorders:
  :func:`fmapviz.engines.inference.fast_forward`'s fused layers. Off: the plain layers.
* ``Module._forward_hooks`` (and the other hook dicts): whether a model may be traced into a faster copy.
  Off: every model counts as hooked, so fast forwards run the model itself.
* ``Tensor._version``: the key under which that copy is cached. Off: a key that never matches (rebuilt).
* ``Module._parameters`` / ``_modules``: :func:`fmapviz.model_guard`'s walk of a model. Off:
  ``model.modules()`` and ``model.parameters()``, slower on large models.
* ``nn.modules.batchnorm._BatchNorm`` / ``_NormBase``: telling norm layers apart (FullGrad's biases, the
  randomization sanity check). Off: torch's own batch and instance norm classes (not subclasses of the bases).
* captum's ``_utils.models.linear_model.LinearModel`` and its ``_construct_model_params``: the interpretable
  model KernelSHAP fits with torch least squares. Off: a small model of ours with the same two methods.
* captum's ``attr._core.lrp`` rule tables: which layers LRP supports. Off: the layer types captum 0.9 lists.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

try:
    from torch.utils._python_dispatch import TorchDispatchMode

    _HAS_DISPATCH_MODES = True
except ImportError:  # a PyTorch without Python dispatch modes: subclasses are defined but never entered
    TorchDispatchMode = object  # type: ignore[assignment,misc]
    _HAS_DISPATCH_MODES = False

PUBLIC_ONLY_VARIABLE = "FMAPVIZ_PUBLIC_TORCH_ONLY"
"""The environment variable that, set to ``1`` before import, turns every private API off."""

_private_apis = os.environ.get(PUBLIC_ONLY_VARIABLE, "").strip().lower() in ("", "0", "false", "no")


def private_apis_enabled() -> bool:
    """Whether fmapviz may use private torch and captum APIs (True unless switched off)."""
    return _private_apis


@contextmanager
def use_private_apis(enabled: bool) -> Iterator[None]:
    """Turn private torch and captum APIs on or off inside the ``with`` block; the previous setting returns on exit.

    A :func:`fmapviz.capture` keeps the setting it started with until it exits.

    Example:
        >>> with use_private_apis(False):
        ...     maps = fmapviz.feature_maps(model, x, "layer1")  # every map copied as captured
    """
    global _private_apis
    previous, _private_apis = _private_apis, enabled
    try:
        yield
    finally:
        _private_apis = previous


# Python dispatch: the copy-before-write guard (fmapviz.hooks.copy_guard) and summary's geometry (fmapviz.layers)


def dispatch_modes_enabled() -> bool:
    """Whether subclasses of :class:`TorchDispatchMode` may be entered; callers take their public path if not."""
    return _private_apis and _HAS_DISPATCH_MODES


@functools.cache
def written_arguments(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of each argument the aten op ``func`` writes in place, from its schema."""
    return tuple(
        (index, argument.name)
        for index, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


@functools.cache
def out_of_place(func: Any) -> Any:
    """The out-of-place twin of a pointwise in-place op writing only ``self`` (``relu_`` -> ``relu``), or None."""
    name = func._overloadpacket.__name__
    if torch.Tag.pointwise not in func.tags or not name.endswith("_") or written_arguments(func) != ((0, "self"),):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, func._overloadname, None) if packet is not None else None


_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def storage_use_count(storage: torch.UntypedStorage) -> int | None:
    """How many references hold ``storage`` (its tensors and storage objects); None where PyTorch cannot tell."""
    return None if _STORAGE_USE_COUNT is None else _STORAGE_USE_COUNT(storage._cdata)


# oneDNN's fused layers and the cached traced copy (fmapviz.engines.inference)


def onednn_enabled() -> bool:
    """Whether oneDNN's private fused ops may be called (where PyTorch has oneDNN at all)."""
    return _private_apis


def reorder_linear_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` of a Linear layer in oneDNN's layout for ``rows``-row batches."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def linear_pointwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pointwise: str, scalars: list[float]
) -> torch.Tensor:
    """``pointwise(x @ weight.T + bias)`` as one oneDNN call, ``weight`` from :func:`reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, pointwise, scalars, "")


def reorder_convolution_weight(weight: torch.Tensor, geometry: tuple, input_shape: list[int]) -> torch.Tensor:
    """``weight`` of a Conv2d in oneDNN's layout; ``geometry`` is (padding, stride, dilation, groups)."""
    return torch.ops.mkldnn._reorder_convolution_weight(weight, *geometry, input_shape)


def convolution_pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    pointwise: str,
    scalars: list[float],
) -> torch.Tensor:
    """A convolution and the clamp after it as one oneDNN call, ``weight`` from :func:`reorder_convolution_weight`."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, pointwise, scalars, "")


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(module: nn.Module) -> bool:
    """Whether hooks are registered on ``module`` itself; switched off, True (public API cannot tell)."""
    return not _private_apis or any(getattr(module, name, None) for name in _HOOK_DICTS)


def tensor_version(tensor: torch.Tensor) -> Any:
    """A value that changes whenever ``tensor`` is written in place (its version counter).

    Switched off, a new object on every call: whatever is cached under it is rebuilt each time.
    """
    return tensor._version if _private_apis else object()


# Module internals: model_guard's walk (fmapviz.hooks.state), norm layer families (saliency, evaluate)


def modules_and_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """``model.modules()`` and ``model.parameters()`` (each once, in the same order) as lists.

    One walk of the module tree without the name strings ``named_modules`` builds: 5x faster on
    mobilenet_v2, and :func:`fmapviz.model_guard` runs it on every call. Switched off, the public iterators.
    """
    if not _private_apis:
        return list(model.modules()), list(model.parameters())
    modules: list[nn.Module] = []
    parameters: list[nn.Parameter] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        modules.append(module)
        for parameter in module._parameters.values():
            if parameter is not None and id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
        stack.extend(reversed([child for child in module._modules.values() if child is not None]))
    return modules, parameters


_BATCH_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
)
_INSTANCE_NORMS = (
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d,
    nn.LazyInstanceNorm2d,
    nn.LazyInstanceNorm3d,
)


def is_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a batch norm of any rank (torch's ``_BatchNorm``; switched off, torch's own classes)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm if _private_apis else _BATCH_NORMS)


def is_batch_or_instance_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a batch or instance norm (torch's ``_NormBase``; switched off, torch's own classes)."""
    return isinstance(module, nn.modules.batchnorm._NormBase if _private_apis else _BATCH_NORMS + _INSTANCE_NORMS)


# captum (fmapviz.engines.saliency)


def linear_model(train_fn: Callable[..., Any]) -> Any:
    """An interpretable model for captum's Lime / KernelShap (``interpretable_model=``) that ``train_fn`` fits.

    ``train_fn(model, dataloader=..., construct_kwargs=...)`` is called by ``fit`` and sets the weights with
    :func:`set_linear_parameters`. captum's ``LinearModel``, or switched off a model of ours with its interface.
    """
    if _private_apis:
        from captum._utils.models.linear_model import LinearModel

        return LinearModel(train_fn=train_fn)
    return _LinearModel(train_fn)


def set_linear_parameters(model: Any, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Give a :func:`linear_model` its fitted ``weight`` (outputs, features) and ``bias``."""
    if isinstance(model, _LinearModel):
        model.set_parameters(weight, bias)
    else:
        model._construct_model_params(norm_type=None, weight_values=weight, bias_value=bias)


class _LinearModel:
    """The two methods captum's Lime calls on an interpretable model: ``fit`` and ``representation``."""

    def __init__(self, train_fn: Callable[..., Any]) -> None:
        self.train_fn = train_fn
        self.linear: nn.Linear | None = None

    def fit(self, train_data: Any, **kwargs: Any) -> Any:
        return self.train_fn(self, dataloader=train_data, construct_kwargs={}, **kwargs)

    def set_parameters(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        # built as captum builds its own, random initialisation included: the samples drawn next are the same
        self.linear = nn.Linear(weight.shape[-1], 1 if weight.dim() == 1 else weight.shape[0])
        self.linear.weight.data = weight
        self.linear.bias.data = bias

    def representation(self) -> torch.Tensor:
        return self.linear.weight.detach()


def lrp_supported_layers() -> tuple[type[nn.Module], ...]:
    """The module types captum's LRP has a rule for (layers with rules, then the non-linear ones it passes)."""
    if _private_apis:
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

        return tuple(SUPPORTED_LAYERS_WITH_RULES) + tuple(SUPPORTED_NON_LINEAR_LAYERS)
    return _LRP_LAYERS


_LRP_LAYERS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.Conv2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Dropout,
    nn.Tanh,
)
"""captum 0.9's LRP layers without its own ``Addition_Module`` (which only captum's private path names)."""
