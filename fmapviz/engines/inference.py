"""Faster gradient-free forwards for methods that run a model many times on perturbed inputs.

Score-CAM scores one masked input per channel: hundreds of forwards that need no gradient and
no hook. Two exact rewrites make them several times faster on a CPU:

* :func:`inference_copy` folds every ``BatchNorm2d`` (eval mode, running statistics) into the
  ``Conv2d`` that feeds it, with :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`, on a copy found by
  ``torch.fx`` (any architecture it can trace: ResNet, MobileNet, EfficientNet, VGG-BN), else on the
  ``nn.Sequential`` pairs of a deep copy. The user's model is never changed.
* :func:`channels_last` lays a batch out channels-last, which oneDNN's convolutions prefer.

The outputs equal the model's to float rounding (about 1e-5 on ImageNet logits).
"""

from __future__ import annotations

import copy
import itertools
import weakref
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def inference_copy(model: nn.Module) -> nn.Module:
    """``model`` with each BatchNorm2d folded into the convolution before it, for gradient-free forwards.

    Returns ``model`` itself when folding could change what it computes: in training mode, or when
    any of its modules has hooks (a traced copy would not call them). Parameters are shared with
    ``model`` where nothing is folded, and never modified.

    Example:
        >>> fast = inference_copy(torchvision.models.resnet18().eval())
        >>> with torch.no_grad():
        ...     logits = fast(channels_last(x))
    """
    if model.training or any(_has_hooks(module) for module in model.modules()):
        return model
    fingerprint = _fingerprint(model)
    cached = _COPIES.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    try:
        folded = _fold_traced(fx.symbolic_trace(model))
    except Exception:  # fx cannot trace data-dependent control flow (TraceError, TypeError, ...): fold by structure
        folded = _fold_sequential(copy.deepcopy(model)) if _sequential_pairs(model) else model
    _COPIES[model] = (fingerprint, folded)
    return folded


_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()
"""The last copy made of each live model, reused while its fingerprint holds (the trace costs ~0.2 s)."""


def _fingerprint(model: nn.Module) -> tuple:
    """What the copy depends on: the modules (identity, mode, plain attributes such as flags a ``forward`` reads,
    which a trace bakes in) and every parameter and buffer (storage, version), so replacing a module, setting
    a flag, loading a state dict or an optimizer step makes a new copy."""
    modules = tuple((id(module), module.training, _plain_attributes(module)) for module in model.modules())
    tensors = tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
    return modules + tensors


def _plain_attributes(module: nn.Module) -> tuple:
    plain = (bool, int, float, str, type(None))
    return tuple(sorted((k, v) for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, plain)))


class FastForward(nn.Module):
    """Gradient-free forwards of a model: its :func:`inference_copy` fed channels-last batches, or contiguous
    ones once a batch fails that way (a model that calls ``view`` on a convolution's output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.copy = inference_copy(model)
        self.layout = channels_last

    def forward(self, x: torch.Tensor) -> Any:
        if self.layout is channels_last:
            try:
                return self.copy(channels_last(x))
            except RuntimeError:
                self.layout = _as_is
        return self.copy(x)


def fast_forward(model: nn.Module) -> FastForward:
    """``model`` for many gradient-free forwards (masked inputs, perturbation curves): the same outputs to float
    rounding, several times faster on a CPU. Call it with the model in eval mode (else it runs ``model`` as is).

    Example:
        >>> with torch.no_grad():
        ...     scores = fast_forward(model.eval())(batch)
    """
    return FastForward(model)


def _as_is(x: torch.Tensor) -> torch.Tensor:
    return x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in channels-last memory layout (other tensors as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _has_hooks(module: nn.Module) -> bool:
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(module, name, None) for name in hooks)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and norm.track_running_stats
        and norm.running_mean is not None
        and conv.out_channels == norm.num_features
    )


def _fold_traced(traced: fx.GraphModule) -> fx.GraphModule:
    """Fold conv → batch-norm node pairs of a traced graph; the conv must feed only the norm and run once."""
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        if source.op != "call_module" or len(source.users) != 1 or calls[source.target] != 1:
            continue
        conv, norm = modules[source.target], modules[node.target]
        if not _foldable(conv, norm):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(traced.get_submodule(parent) if parent else traced, name, fuse_conv_bn_eval(conv, norm))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    return traced


def _sequential_pairs(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """The (sequential, conv name, norm name) neighbours that can be folded."""
    pairs = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
                if _foldable(conv, norm):
                    pairs.append((module, conv_name, norm_name))
    return pairs


def _fold_sequential(model: nn.Module) -> nn.Module:
    """Fold the Conv2d → BatchNorm2d neighbours of every ``nn.Sequential`` of ``model`` (a copy) in place."""
    for module, conv_name, norm_name in _sequential_pairs(model):
        module._modules[conv_name] = fuse_conv_bn_eval(module._modules[conv_name], module._modules[norm_name])
        module._modules[norm_name] = nn.Identity()
    return model
