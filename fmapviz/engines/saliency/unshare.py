"""A copy of a model in which every leaf module runs once per forward, for captum's DeepLift and LRP.

captum's DeepLift and LRP keep one module's input and output per forward, so a module called twice (the one
``relu`` of a torchvision ResNet block, called after ``bn1`` and again after the residual sum) breaks them.
:func:`unshared_copy` traces a deep copy of the model with ``torch.fx`` and gives every call of a reused leaf
module its own copy of that module: the last call keeps the module's name (as ``"layer1.0.relu"`` means the
last call everywhere in fmapviz), the ``k``-th earlier one is ``"<name>_call<k>"`` (``"layer1.0.relu#1"`` of the
original). It can also drop parameter-free shape layers (``nn.Identity``, ``nn.Flatten``) that captum's LRP has
no rule for, replacing them by what they compute. The copy computes what the model computes; the model itself
is never touched.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..._torch_internals import has_hooks

PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten)
"""Parameter-free leaf modules :func:`unshared_copy` can replace by the function they compute."""


class UnshareError(ValueError):
    """No one-module-per-call copy of the model can be made (its ``forward`` cannot be traced, or it has hooks)."""


def reused_modules(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the leaf modules that run more than once in one forward of ``x[:1]`` (no gradient).

    Example:
        >>> reused_modules(torchvision.models.resnet18().eval(), torch.randn(1, 3, 32, 32))[:2]
        ['layer1.0.relu', 'layer1.1.relu']
    """
    counts: dict[str, int] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, _a, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, count in counts.items() if count > 1]


def unshared_copy(model: nn.Module, drop: tuple[type[nn.Module], ...] = ()) -> fx.GraphModule:
    """A traced copy of ``model`` with one module per call, and the ``drop`` types replaced by what they compute.

    Args:
        model: the model; deep-copied, never changed (parameters, buffers, modes and hooks stay as they are).
        drop: leaf module types among :data:`PASS_THROUGH` to leave out of the copy (``nn.Identity`` calls
            become their input, ``nn.Flatten`` calls ``torch.flatten``).

    Raises:
        UnshareError: ``torch.fx`` cannot trace the model (data-dependent control flow), or a module has hooks
            (the copy would not run them the same way).

    Example:
        >>> copy = unshared_copy(torchvision.models.resnet18().eval())
        >>> [name for name, _ in copy.named_modules() if name.startswith("layer1.0.relu")]
        ['layer1.0.relu', 'layer1.0.relu_call1']
    """
    hooked = next((name or "the model" for name, module in model.named_modules() if has_hooks(module)), None)
    if hooked is not None:
        raise UnshareError(f"module '{hooked}' has hooks, which a traced copy would not run: remove them first")
    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as error:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise UnshareError(f"torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: {error})") from None
    calls: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            module = traced.get_submodule(node.target)
            if isinstance(module, drop):
                _replace_pass_through(traced.graph, node, module)
            else:
                calls.setdefault(node.target, []).append(node)
    for name, nodes in calls.items():
        for k, node in enumerate(nodes[:-1], 1):
            node.target = f"{name}_call{k}"
            traced.add_submodule(node.target, copy.deepcopy(traced.get_submodule(name)))
    traced.graph.eliminate_dead_code()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def _replace_pass_through(graph: fx.Graph, node: fx.Node, module: nn.Module) -> None:
    """Replace the ``call_module`` ``node`` of an Identity or Flatten by its input or a ``torch.flatten`` call."""
    if isinstance(module, nn.Flatten):
        with graph.inserting_before(node):
            new = graph.call_function(torch.flatten, (node.args[0], module.start_dim, module.end_dim))
        node.replace_all_uses_with(new)
    elif isinstance(module, nn.Identity):
        node.replace_all_uses_with(node.args[0])
    else:
        raise ValueError(f"{type(module).__name__} is not one of {', '.join(t.__name__ for t in PASS_THROUGH)}")
    graph.erase_node(node)
