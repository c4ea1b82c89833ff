"""Capturing feature maps: the one place in fmapviz that registers hooks.

Layer selectors, used everywhere a ``layers`` argument appears:

* an exact module name as in ``model.named_modules()``: ``"features.3.conv.0"``;
* a glob over those names: ``"layer3.*.conv2"`` (``*`` stays within one dotted part,
  ``**`` crosses parts: ``"layer3.**"`` is everything inside layer3);
* a module type, as a class or its name: ``nn.Conv2d`` or ``"Conv2d"``;
* a module instance of the model;
* ``"all"``: every submodule (containers included), in execution order.

Values are exactly what each layer returned, even when the model later rewrites
that tensor in place (``ReLU(inplace=True)``, ``out += identity``). The first few
megabytes of maps in a pass are copied as they are captured (cheaper than watching);
after that, maps are held by reference and a dispatch-level guard protects them: a map is
copied only at the moment an in-place op is about to overwrite it, or not at all when the
op can run out of place instead.
A module that runs more than once per forward gives one entry per call:
``"relu"``, ``"relu#2"``, ``"relu#3"`` (torchvision's ResNet blocks call one ``relu`` twice; the
second call is the block output). A call key is a layer selector too: ``"layer4.1.relu#2"`` captures
only that call.

.. _reused-modules:

Reused modules, one rule for every engine: where one map per layer is needed (saliency layers and
unit targets, actmax objectives), a module named without ``#k`` means its **last call** in the forward
pass, as captum's ``LayerGradCam`` reads it; name ``"layer4.1.relu#1"`` for the first. :func:`layer_keys`
applies the rule. :func:`capture` and :func:`feature_maps` return every call.

Transformer outputs are stored as (N, C, H, W) maps: ViT tokens ``(N, 1+H*W, C)`` and Swin's
channels-last ``(N, H, W, C)`` are read with :func:`fmapviz.tokens.to_spatial` (``layout=`` overrides
the guess). NCHW and (N, C) outputs are stored with exactly the values returned.

Other outputs go through :mod:`fmapviz.outputs` (the first tensor of a tuple, dict or dataclass,
or ``.logits``), with two exceptions. A dict of maps (every value a tensor of 3 or more dims,
as the OrderedDict of an FPN backbone or a segmentation model's ``{"out", "aux"}``) gives one
entry per level, ``"<layer>:<key>"``: ``"backbone:0"``, ``"backbone:1"``, ``"backbone:pool"``.
A layer whose output holds no tensor at all (a detector's ``transform`` returns an ``ImageList``)
gets no entry.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import LayerNotFoundError, closest_names
from ..outputs import OutputPicker, first_tensor, output_tensor
from ..tokens import LAYOUTS, as_spatial, from_spatial, resolve_layout

LayerSelector = str | type | nn.Module
LayerSelectors = LayerSelector | Sequence[LayerSelector]
Layout = str | dict[str, str]


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
    return _resolve(dict(model.named_modules()), layers)


def _resolve(named: dict[str, nn.Module], layers: LayerSelectors) -> list[str]:
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
    if _is_glob(selector):
        pattern = _glob_pattern(selector)
        return [name for name in names if pattern.fullmatch(name)]
    return [name for name in names if type(named[name]).__name__ == selector]


def _is_glob(selector: str) -> bool:
    return any(char in selector for char in "*?[")


def _glob_pattern(selector: str) -> re.Pattern:
    """``*`` matches within one dotted part, ``**`` across parts, ``?`` one character."""
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


COPY_AT_ONCE_BYTES = 16 * 2**20
"""Per forward pass, maps up to this many bytes in total are copied when captured; later ones are watched.

Copying a small map costs less than the guard that watches held maps (tens of microseconds on
every later op of the forward), so one-image captures of a few layers never pay for the guard.
"""


class _StopForward(Exception):
    """Raised by a hook to end the forward pass once every requested layer has run."""


@functools.cache
def _written_arguments(func: Any) -> tuple[tuple[int, str], ...]:
    return tuple(
        (index, argument.name)
        for index, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


@functools.cache
def _out_of_place(func: Any) -> Any:
    """The out-of-place twin of a pointwise in-place op writing only ``self`` (``relu_`` -> ``relu``), or None."""
    name = func._overloadpacket.__name__
    if torch.Tag.pointwise not in func.tags or not name.endswith("_") or _written_arguments(func) != ((0, "self"),):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, func._overloadname, None) if packet is not None else None


def _run_out_of_place(twin: Any, target: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Run ``twin`` and move ``target`` onto its result; None when the result's layout differs from target's."""
    result = twin(*args, **kwargs)
    if result.shape != target.shape or result.dtype != target.dtype or result.stride() != target.stride():
        return None  # the in-place op would keep target's layout: copy the maps and run it instead
    return target.set_(result)


class _CopyBeforeWrite(TorchDispatchMode):
    """Keeps captured tensors intact when an in-place op is about to overwrite their storage.

    Usually the captured map is copied first. For a pointwise in-place op (``relu_``, ``add_``,
    ``hardtanh_``) on a tensor that nothing but the model's own tensor and our maps refer to,
    the op runs out of place instead and the model's tensor moves onto the new storage: the map
    keeps the old values without a copy, and the model cannot tell the difference.
    """

    def __init__(self, capture: Capture) -> None:
        super().__init__()
        self.capture = capture

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        watched = self.capture._watched
        if watched:
            for index, name in _written_arguments(func):
                target = args[index] if index < len(args) else kwargs.get(name)
                if not isinstance(target, torch.Tensor):
                    continue
                keys = watched.pop(_storage_key(target), ())
                twin = _out_of_place(func) if keys else None
                if twin is not None and self._only_maps_share(target, keys):
                    redirected = _run_out_of_place(twin, target, args, kwargs)
                    if redirected is not None:
                        return redirected
                for key in keys:
                    self.capture.maps[key] = self.capture.maps[key].clone()
        return func(*args, **kwargs)

    def _only_maps_share(self, target: torch.Tensor, keys: list[str]) -> bool:
        """True when the storage's only users are ``target`` and the maps stored under ``keys``."""
        use_count = getattr(torch._C, "_storage_Use_Count", None)
        if use_count is None or target.requires_grad or target.storage_offset() != 0:
            return False
        try:
            storage = target.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, tensor subclasses): copy instead
            return False
        holders = 2 + len({id(self.capture.maps[key]) for key in keys})  # target, `storage`, the maps
        return use_count(storage._cdata) == holders


class FeatureMaps(dict):
    """Captured feature maps by layer name, in execution order; ``.grads`` holds their gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.grads: dict[str, torch.Tensor] = {}


class Capture:
    """Context manager that records layer outputs while the model runs.

    Use :func:`capture` to build one. Hooks and the copy-before-write guard live only
    inside the ``with`` block; they are removed on exit, on exceptions and on
    KeyboardInterrupt. Inside the block the model runs in eval mode (``train=True``: train
    mode, with its buffers such as BatchNorm statistics restored on exit; ``train=None``: as the
    caller left it, for training loops); its modes come back on exit, and ``requires_grad``
    flags and parameters are never touched.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSelectors,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        keep_grad: bool = False,
        stop_early: bool = False,
        pick: OutputPicker | None = None,
        reduce: Callable[[str, torch.Tensor], Any] | None = None,
        layout: Layout = "auto",
        train: bool | None = False,
    ) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise TypeError("TorchScript modules run no hooks: capture the Python model (nn.Module) instead.")
        self.model = model
        self.train = train
        self._mode: Any = None
        named = dict(model.named_modules())
        self.names = _resolve(named, layers)
        self._wanted: dict[str, set[int] | None] = {}  # module -> the calls to keep (None: all)
        for key in self.names:
            module, calls = module_name(key), self._wanted.get(module_name(key), set())
            self._wanted[module] = None if "#" not in key or calls is None else calls | {call_number(key)}
        self._modules = [named[name] for name in self._wanted]
        self._finish_with = _finishing_parents(model, named, self._wanted) if stop_early else {}
        self._finish_after = {child for children in self._finish_with.values() for child in children}
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.keep_grad = keep_grad
        self.stop_early = stop_early
        self.pick = pick
        self.reduce = reduce
        self.layouts = _layouts(layout, list(self._wanted))
        self.maps = FeatureMaps()
        self._calls: dict[str, int] = {}
        self._pending: set[str] = set(self._wanted)  # stop_early: modules that may still run
        self._copied_bytes = 0
        self._watched: dict[int | None, list[str]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._guard: _CopyBeforeWrite | None = None

    def __enter__(self) -> FeatureMaps:
        try:
            if self.train is not None:
                self._mode = model_guard(self.model, train=self.train, freeze=False)
                self._mode.__enter__()
            self._handles.append(self.model.register_forward_pre_hook(self._start_pass))
            for name, module in zip(self._wanted, self._modules):
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
            for parent, children in self._finish_with.items():
                if parent is self.model:
                    continue  # done when the forward ends
                hook = functools.partial(self._parent_finished, children)
                self._handles.append(parent.register_forward_hook(hook))
        except BaseException:
            self._release()
            raise
        return self.maps

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self._release()
        return exc_type is not None and issubclass(exc_type, _StopForward)

    def _release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.__exit__(None, None, None)
        self._watched.clear()
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)

    def _start_pass(self, module: nn.Module, args: Any) -> None:
        self.maps.clear()
        self.maps.grads.clear()
        self._calls.clear()
        self._pending = set(self._wanted)
        self._copied_bytes = 0
        self._watched.clear()

    def _watch(self, key: str, tensor: torch.Tensor) -> None:
        self._watched.setdefault(_storage_key(tensor), []).append(key)
        if self._guard is None:
            # Only now, once a map is held by reference, does every later op go through the
            # (Python) copy-before-write check: the ops before it, and captures that hold
            # nothing by reference (Grad-CAM's), run at full speed.
            self._guard = _CopyBeforeWrite(self)
            self._guard.__enter__()

    def _hook_for(self, name: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            return self._record(name, output)

        return hook

    def _parent_finished(self, children: list[str], module: nn.Module, args: Any, output: Any) -> None:
        self._finished([child for child in children if child in self._calls])

    def _finished(self, names: list[str]) -> None:
        """Stop the forward (stop_early) once no selected module is left to run."""
        self._pending.difference_update(names)
        if self.stop_early and not self._pending:
            raise _StopForward

    def _record(self, name: str, output: Any) -> Any:
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        key = name if calls == 1 else f"{name}#{calls}"
        wanted = self._wanted[name]
        if wanted is not None and calls not in wanted:
            if calls > max(wanted):
                self._finished([name])
            return None
        layout = self.layouts.get(name, "auto")
        levels = None if self.pick is not None else map_levels(output)
        replacement = None
        if self.pick is None and levels is None and first_tensor(output) is None:
            pass  # nothing to show (a detector's transform returns an ImageList): no entry
        elif levels is None:
            tensor = output_tensor(output, self.pick) if self.pick is not None else first_tensor(output)
            new = self._store(key, tensor, layout, whole_output=output is tensor)
            replacement = None if new is None else _substitute(output, tensor, new)
        else:
            # a dict of maps (a feature pyramid): one entry per level, "name:level"
            news = {level: self._store(f"{key}:{level}", value, layout, True) for level, value in levels.items()}
            changed = {level: new for level, new in news.items() if new is not None}
            replacement = type(output)({**output, **changed}) if changed else None
        if self.stop_early and (calls == max(wanted) if wanted is not None else name not in self._finish_after):
            self._finished([name])
        return replacement

    def _store(self, key: str, tensor: torch.Tensor, layout: str, whole_output: bool) -> torch.Tensor | None:
        """Store ``tensor``'s map under ``key``; return the tensor the model should go on with, or None."""
        layout = resolve_layout(tensor, layout, key, strict=layout != "auto")
        if self.reduce is not None:
            self.maps[key] = self.reduce(key, as_spatial(tensor, layout))
        elif self.keep_grad and torch.is_grad_enabled() and (tensor.requires_grad or whole_output):
            live = tensor if tensor.requires_grad else tensor.detach().requires_grad_()  # the graph may start here
            if layout == "nchw":
                live.register_hook(functools.partial(self.maps.grads.__setitem__, key))
            else:
                live.register_hook(functools.partial(self._store_grad, key, layout))
            spatial = self.maps[key] = as_spatial(live, layout)
            if whole_output or layout != "nchw":
                # the model goes on with a copy rebuilt from our map: in-place ops cannot touch it, and
                # gradients from the output reach the map (token and NHWC maps are views, off that path)
                return from_spatial(spatial, live, layout)
            self._watch(key, tensor)
        else:
            value = as_spatial(tensor.detach(), layout)
            converted = value.to(device=self.device, dtype=self.dtype) if self.device or self.dtype else value
            nbytes = value.numel() * value.element_size()
            if converted is not value:  # already a copy of its own
                self.maps[key] = converted
            elif self._guard is None and self._copied_bytes + nbytes <= COPY_AT_ONCE_BYTES:
                self._copied_bytes += nbytes
                self.maps[key] = value.clone()
            else:
                self.maps[key] = value
                self._watch(key, value)
        return None

    def _store_grad(self, key: str, layout: str, grad: torch.Tensor) -> None:
        self.maps.grads[key] = as_spatial(grad, layout)


def _finishing_parents(
    model: nn.Module, named: dict[str, nn.Module], wanted: dict[str, set[int] | None]
) -> dict[nn.Module, list[str]]:
    """For ``stop_early``: the parents whose end marks the last call of a selected module.

    A module with submodules (a block) or inside an ``nn.Sequential`` runs once per call of its
    parent, so it is done after its call. A leaf module elsewhere (a ``relu`` that a ResNet block
    calls twice) may run again until its parent's forward returns: it is done when the parent is.
    Modules whose parent is the model itself are then waited for to the end of the forward.
    """
    parents: dict[nn.Module, list[str]] = {}
    for name, calls in wanted.items():
        module = named[name]
        parent = named[name.rpartition(".")[0]]
        if calls is not None or isinstance(parent, nn.Sequential) or next(module.children(), None) is not None:
            continue
        parents.setdefault(parent, []).append(name)
    return parents


def _layouts(layout: Layout, names: list[str]) -> dict[str, str]:
    """Layer name -> layout; dict keys may be names or globs (as layer selectors)."""
    if isinstance(layout, str):
        chosen = dict.fromkeys(names, layout)
    elif isinstance(layout, dict):
        chosen = {}
        for selector, value in layout.items():
            pattern = _glob_pattern(selector) if _is_glob(selector) else None
            matched = [name for name in names if name == selector or (pattern and pattern.fullmatch(name))]
            if not matched:
                raise LayerNotFoundError(f"layout names '{selector}', not a captured layer: {', '.join(names)}.")
            chosen.update(dict.fromkeys(matched, value))
    else:
        raise TypeError(f"layout must be a str or a dict of layer name -> str, not {type(layout).__name__}.")
    for value in chosen.values():
        if value not in LAYOUTS:
            raise ValueError(f"Unknown layout '{value}'. Use one of {', '.join(LAYOUTS)}.")
    return chosen


def module_name(key: str) -> str:
    """The module a capture key comes from: ``"relu#2"`` -> ``"relu"``, ``"backbone:pool"`` -> ``"backbone"``."""
    return key.split("#")[0].split(":")[0]


def map_levels(output: Any) -> dict[Any, torch.Tensor] | None:
    """The levels of a dict of maps (every value a tensor with 3 or more dims, two or more of them), or None.

    Feature pyramids (torchvision's FPN backbones) and segmentation heads return such dicts;
    :func:`capture` stores each level under ``"layer:level"``, e.g. ``"backbone:0"``, ``"backbone:pool"``.
    """
    if not isinstance(output, Mapping) or len(output) < 2 or getattr(output, "logits", None) is not None:
        return None
    if all(isinstance(value, torch.Tensor) and value.dim() >= 3 for value in output.values()):
        return dict(output)
    return None


def _substitute(output: Any, old: torch.Tensor, new: torch.Tensor) -> Any:
    """``output`` with the tensor ``old`` replaced by ``new`` (a tensor or one level of tuple/list/dict), or None."""
    if output is old:
        return new
    if isinstance(output, dict):
        keys = [key for key, value in output.items() if value is old]
        return type(output)({**output, keys[0]: new}) if keys else None
    if isinstance(output, (tuple, list)) and any(item is old for item in output):
        items = [new if item is old else item for item in output]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    return None


def capture(
    model: nn.Module,
    layers: LayerSelectors,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    keep_grad: bool = False,
    stop_early: bool = False,
    pick: OutputPicker | None = None,
    reduce: Callable[[str, torch.Tensor], Any] | None = None,
    layout: Layout = "auto",
    train: bool | None = False,
) -> Capture:
    """Record the outputs of the selected layers during the forward passes in a ``with`` block.

    Args:
        model: any ``nn.Module``; it is not modified.
        layers: layer selectors (see :mod:`fmapviz.hooks`).
        device: move each captured map there (e.g. ``"cpu"`` to free GPU memory).
        dtype: cast each captured map (``torch.float16`` halves memory).
        keep_grad: keep maps attached to the autograd graph and record their
            gradients in ``maps.grads`` when ``backward`` runs (Grad-CAM needs this).
            When neither the input nor the parameters require gradients, the first
            captured layer becomes the start of the graph, so a backward pass stops
            there instead of running down to the input.
        stop_early: end the forward pass once every selected layer has made its last call:
            a module with submodules or inside an ``nn.Sequential`` after its call, a named call
            (``"relu#2"``) after that call, any other leaf module (which a block may call twice)
            when its parent returns. The ``with`` block then exits quietly, skipping the rest of its body.
        pick: which tensor to take from a layer that returns a tuple, dict or object
            (default: see :mod:`fmapviz.outputs`).
        reduce: store ``reduce(name, output)`` instead of the map, computed as the layer
            runs (for streaming statistics that never hold a whole layer); it gets the
            (N, C, H, W) map, as stored.
        layout: how to read outputs as (N, C, H, W) maps: ``"auto"`` (ViT tokens and Swin
            channels-last are detected), ``"nchw"`` (as is), ``"tokens"``, ``"nhwc"``, or a dict
            from layer name (or glob) to one of these; see :mod:`fmapviz.tokens`. With
            ``keep_grad``, ``maps.grads`` uses the same layout as the maps.
        train: False (default): the model runs in eval mode inside the block; True: in train mode
            (dropout, batch statistics). Either way its modes and buffers come back on exit. None:
            leave mode and buffers to the caller, as a training loop that logs its own steps needs.

    Returns:
        A context manager whose ``__enter__`` gives a :class:`FeatureMaps` dict,
        refilled on every forward pass of ``model``.

    Raises:
        LayerNotFoundError: a selector (or a ``layout`` key) matches no selected layer.
        ValueError: an explicit ``layout`` does not fit a layer's output (raised during the forward).

    Example:
        >>> with fmapviz.capture(model, ["features.1", "features.7"]) as captured:
        ...     logits = model(x)
        >>> captured["features.7"].shape
        torch.Size([1, 64, 14, 14])
    """
    options = dict(device=device, dtype=dtype, keep_grad=keep_grad, stop_early=stop_early, pick=pick, reduce=reduce)
    return Capture(model, layers, layout=layout, train=train, **options)


def feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    layers: LayerSelectors,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    stop_early: bool = True,
    pick: OutputPicker | None = None,
    layout: Layout = "auto",
    train: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` once without gradients and return the selected layers' outputs.

    Args:
        model: any ``nn.Module``; it is not modified.
        x: the model input tensor, batch first (``load_image(...).tensor``).
        layers: layer selectors (see :mod:`fmapviz.hooks`).
        device, dtype, pick, layout, train: as in :func:`capture` (eval mode unless ``train``).
        stop_early: skip the layers after the last selected one (default True); every call of a
            module that runs more than once is still returned (see :func:`capture`).

    Returns:
        A dict from layer name to tensor, in execution order.

    Raises:
        TypeError: ``x`` is not a tensor (a PIL image or array: load it with :func:`fmapviz.load_image`).
        ValueError: a 3-D ``x`` the model rejects (one image without its batch dimension).

    Example:
        >>> maps = fmapviz.feature_maps(model, x, "features.1?.conv.2")  # a glob over module names
        >>> list(maps)[:3]
        ['features.10.conv.2', 'features.11.conv.2', 'features.12.conv.2']
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"feature_maps needs the model input tensor x, not a {type(x).__name__}: "
            "pass fmapviz.load_image(picture, loaded.transform).tensor."
        )
    options = dict(device=device, dtype=dtype, stop_early=stop_early, pick=pick, layout=layout, train=train)
    try:
        with torch.no_grad(), capture(model, layers, **options) as maps:
            model(x)
    except (RuntimeError, ValueError) as error:
        if x.dim() == 3:  # most likely one image without its batch dimension
            raise ValueError(f"x has shape {tuple(x.shape)}: add the batch dimension, x[None] ({error})") from error
        raise
    return dict(maps)


@contextmanager
def model_guard(model: nn.Module, *, train: bool = False, freeze: bool = True) -> Iterator[nn.Module]:
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
    modules, parameters = _modules_and_parameters(model)
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


def _modules_and_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """``model.modules()`` and ``model.parameters()`` (each once, in the same order) from one walk of the module
    tree without the name strings ``named_modules`` builds: 5x faster on mobilenet_v2, and it runs every call."""
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


_GUARDED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
"""Models inside a :func:`model_guard`, and whether it froze their parameters: an inner eval-mode guard of the
same model (engines call one another) then only checks the mode instead of walking every module and parameter."""
