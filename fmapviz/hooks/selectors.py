"""Layer selectors: which modules a ``layers`` argument names, and the capture keys of their calls.

The selector styles, call keys (``"relu#2"``) and the reused-module rule are described in
:mod:`fmapviz.hooks`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from torch import nn

from ..errors import LayerNotFoundError, closest_names

LayerSelector = str | type | nn.Module
LayerSelectors = LayerSelector | Sequence[LayerSelector]


def resolve_layers(model: nn.Module, layers: LayerSelectors) -> list[str]:
    """Module names selected by ``layers``, in the model's definition order.

    Args:
        model: the model to search.
        layers: one selector or a list of them (see the module docstring).

    Returns:
        Unique module names, ordered as in ``model.named_modules()``.

    Raises:
        LayerNotFoundError: a selector matches nothing; the message lists the closest names.

    Example:
        >>> resolve_layers(torchvision.models.resnet18(), "layer4.*.conv2")
        ['layer4.0.conv2', 'layer4.1.conv2']
    """
    return select_names(dict(model.named_modules()), layers)


def select_names(named: dict[str, nn.Module], layers: LayerSelectors) -> list[str]:
    """:func:`resolve_layers` on ``named``, the model's ``dict(named_modules())`` when the caller has it already."""
    names = [name for name in named if name]
    selectors = [layers] if isinstance(layers, (str, type, nn.Module)) else list(layers)
    if not selectors:
        raise LayerNotFoundError("No layers selected. Pass a module name, a glob, a type or 'all'.")
    chosen: set[str] = set()
    for selector in selectors:
        call = _call_selector(selector, named, names)
        matched = [call] if call else _match(selector, named, names)
        if not matched:
            raise LayerNotFoundError(_not_found_message(selector, named, names))
        chosen.update(matched)
    order = {name: index for index, name in enumerate(names)}
    return sorted(chosen, key=lambda key: (order[module_name(key)], call_number(key)))


def _call_selector(selector: LayerSelector, named: dict[str, nn.Module], names: list[str]) -> str | None:
    """``"relu#2"`` as given when it names a call of a module of the model; None for other selectors."""
    if not isinstance(selector, str) or "#" not in selector:
        return None
    name, _, number = selector.partition("#")
    if name not in named or not name:
        raise LayerNotFoundError(_not_found_message(name, named, names))
    if not number.isdigit() or int(number) < 1:
        raise LayerNotFoundError(
            f"Bad call key '{selector}': write '{name}#2' for the second call (calls count from 1)."
        )
    return selector


def call_number(key: str) -> int:
    """Which call of its module a capture key is: ``"relu"`` -> 1, ``"relu#3"`` -> 3, ``"backbone#2:0"`` -> 2."""
    number = key.split(":")[0].partition("#")[2]
    return int(number) if number else 1


def layer_keys(keys: Iterable[str], layer: str) -> list[str]:
    """The capture keys that hold ``layer``'s map, by the reused-module rule (see :mod:`fmapviz.hooks`).

    ``layer`` may name a call (``"relu#2"``, or ``"relu#1"`` for the first) or a level
    (``"backbone:0"``); a module named without ``#k`` gives its last call. A layer that returns
    a dict of maps gives one key per level of that call.

    Args:
        keys: the keys of captured maps (a :class:`FeatureMaps` or any iterable of keys).
        layer: a layer name or capture key.

    Returns:
        The matching keys in capture order; empty when the layer did not run.

    Example:
        >>> layer_keys(["layer1.0.relu", "layer1.0.relu#2"], "layer1.0.relu")
        ['layer1.0.relu#2']
    """
    keys = list(keys)
    call, colon, level = layer.partition(":")
    name = call.partition("#")[0]
    if "#" not in call:
        calls = [call_number(key) for key in keys if module_name(key) == name]
        if not calls:
            return []
        call = name if max(calls) == 1 else f"{name}#{max(calls)}"
    elif call_number(call) == 1:
        call = name
    if colon:
        wanted = f"{call}:{level}"
        return [wanted] if wanted in keys else []
    return [key for key in keys if key == call or key.startswith(f"{call}:")]


def _match(selector: LayerSelector, named: dict[str, nn.Module], names: list[str]) -> list[str]:
    if isinstance(selector, nn.Module):
        return [name for name in names if named[name] is selector]
    if isinstance(selector, type):
        return [name for name in names if isinstance(named[name], selector)]
    if not isinstance(selector, str):
        raise TypeError(f"A layer selector must be a str, a module type or a module, not {type(selector).__name__}.")
    if selector == "all":
        return names
    if selector in named and selector:
        return [selector]
    pattern = glob_pattern(selector)
    if pattern is not None:
        return [name for name in names if pattern.fullmatch(name)]
    return [name for name in names if type(named[name]).__name__ == selector]


def glob_pattern(selector: str) -> re.Pattern | None:
    """The pattern of a glob over module names, or None when ``selector`` has no wildcard.

    ``*`` matches within one dotted part, ``**`` across parts, ``?`` one character.
    """
    if not any(char in selector for char in "*?["):
        return None
    regex = fnmatch.translate(selector.replace("**", "\0")).replace(".*", "[^.]*").replace("\0", ".*")
    return re.compile(regex)


def _not_found_message(selector: LayerSelector, named: dict[str, nn.Module], names: list[str]) -> str:
    if isinstance(selector, nn.Module):
        return f"Module {type(selector).__name__} is not part of this model. Pass one of its submodules or a name."
    if isinstance(selector, type):
        types = sorted({type(module).__name__ for module in named.values()})
        return f"No module of type {selector.__name__} in this model. Types present: {', '.join(types)}."
    hint = closest_names(selector, names) or names[:5]
    return f"Unknown layer '{selector}'. Closest: {', '.join(hint)}. See fmapviz.summary(model)."


def module_name(key: str) -> str:
    """The module a capture key comes from: ``"relu#2"`` -> ``"relu"``, ``"backbone:pool"`` -> ``"backbone"``."""
    return key.split("#")[0].split(":")[0]
