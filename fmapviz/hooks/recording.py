"""capture and feature_maps: forward hooks that record the selected layers' outputs as (N, C, H, W) maps.

What is stored for each kind of output, and how reused modules are keyed, is described in :mod:`fmapviz.hooks`.
Small maps are copied as they are captured; past :data:`COPY_AT_ONCE_BYTES` per pass they are held by
reference behind the copy-before-write guard (:mod:`fmapviz.hooks.copy_guard`), or copied too when
private PyTorch APIs are switched off (:mod:`fmapviz._torch_internals`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .._torch_internals import dispatch_modes_enabled
from ..devices import check_model_input
from ..errors import LayerNotFoundError
from ..model_input import accepts_loaded_model
from ..models import LoadedModel
from ..outputs import OutputPicker, first_tensor, output_tensor
from ..tokens import LAYOUTS, as_spatial, from_spatial, resolve_layout
from .copy_guard import CopyBeforeWrite, storage_key
from .selectors import LayerSelectors, call_number, glob_pattern, module_name, select_names
from .state import model_guard

Layout = str | dict[str, str]

COPY_AT_ONCE_BYTES = 16 * 2**20
"""Per forward pass, maps up to this many bytes in total are copied when captured; later ones are watched.

Copying a small map costs less than the guard that watches held maps (tens of microseconds on
every later op of the forward), so one-image captures of a few layers never pay for the guard.
"""


class _StopForward(Exception):
    """Raised by a hook to end the forward pass once every requested layer has run."""


class FeatureMaps(dict):
    """Captured feature maps by layer name, in execution order; ``.grads`` holds their gradients.

    ``.partial`` names the maps that are one of several tensors their layer returned (a Hugging Face
    ``ModelOutput``'s ``last_hidden_state`` beside its ``pooler_output``): the model may go on with another one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.grads: dict[str, torch.Tensor] = {}
        self.partial: set[str] = set()


class Capture:
    """Context manager that records layer outputs while the model runs.

    Build one with :func:`capture`; ``settings`` are its keyword arguments by name. Hooks and the
    copy-before-write guard live only inside the ``with`` block; they are removed on exit, on exceptions
    and on KeyboardInterrupt. Inside the block the model runs in eval mode (``train=True``: train
    mode, with its buffers such as BatchNorm statistics restored on exit; ``train=None``: as the
    caller left it, for training loops); its modes come back on exit, and ``requires_grad``
    flags and parameters are never touched.
    """

    def __init__(self, model: nn.Module, layers: LayerSelectors, settings: dict[str, Any]) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise TypeError("TorchScript modules run no hooks: capture the Python model (nn.Module) instead.")
        self.model = model
        self.train = settings["train"]
        self._mode: Any = None
        named = dict(model.named_modules())
        self.names = select_names(named, layers)
        self._wanted: dict[str, set[int] | None] = {}  # module -> the calls to keep (None: all)
        for key in self.names:
            module, calls = module_name(key), self._wanted.get(module_name(key), set())
            self._wanted[module] = None if "#" not in key or calls is None else calls | {call_number(key)}
        self._modules = [named[name] for name in self._wanted]
        self._finish_with = _finishing_parents(model, named, self._wanted) if settings["stop_early"] else {}
        self._finish_after = {child for children in self._finish_with.values() for child in children}
        device = settings["device"]
        self.device = torch.device(device) if device is not None else None
        self.dtype = settings["dtype"]
        self.keep_grad = settings["keep_grad"]
        self.stop_early = settings["stop_early"]
        self.pick = settings["pick"]
        self.reduce = settings["reduce"]
        self.layouts = _layouts(settings["layout"], list(self._wanted))
        self.maps = FeatureMaps()
        self._calls: dict[str, int] = {}
        self._pending: set[str] = set(self._wanted)  # stop_early: modules that may still run
        self._copied_bytes = 0
        self._watched: dict[int | None, list[str]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._guarded = dispatch_modes_enabled()  # else every map is copied, none watched
        self._guard: CopyBeforeWrite | None = None

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
        self.maps.partial.clear()
        self._calls.clear()
        self._pending = set(self._wanted)
        self._copied_bytes = 0
        self._watched.clear()

    def _watch(self, key: str, tensor: torch.Tensor) -> None:
        if not self._guarded:
            return  # only keep_grad's maps, which must stay in the graph, are then held by reference unwatched
        self._watched.setdefault(storage_key(tensor), []).append(key)
        if self._guard is None:
            # Only now, once a map is held by reference, does every later op go through the
            # (Python) copy-before-write check: the ops before it, and captures that hold
            # nothing by reference (Grad-CAM's), run at full speed.
            self._guard = CopyBeforeWrite(self._watched, self.maps)
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
            items = _top_level(output)
            if any(isinstance(item, torch.Tensor) and item is not tensor for item in items):
                self.maps.partial.add(key)
            replaceable = output is tensor or any(item is tensor for item in items)
            new = self._store(key, tensor, layout, whole_output=output is tensor, replaceable=replaceable)
            replacement = None if new is None else _substitute(output, tensor, new)
        else:
            # a dict of maps (a feature pyramid): one entry per level, "name:level"
            news = {level: self._store(f"{key}:{level}", value, layout, True, True) for level, value in levels.items()}
            changed = {level: new for level, new in news.items() if new is not None}
            replacement = type(output)({**output, **changed}) if changed else None
        if self.stop_early and (calls == max(wanted) if wanted is not None else name not in self._finish_after):
            self._finished([name])
        return replacement

    def _store(
        self, key: str, tensor: torch.Tensor, layout: str, whole_output: bool, replaceable: bool
    ) -> torch.Tensor | None:
        """Store ``tensor``'s map under ``key``; return the tensor the model should go on with, or None.

        ``replaceable``: the tensor is the output or one item of its tuple, list or dict (a ``ModelOutput``), so
        the model can go on with the returned one instead.
        """
        layout = resolve_layout(tensor, layout, key, strict=layout != "auto")
        if self.reduce is not None:
            self.maps[key] = self.reduce(key, as_spatial(tensor, layout))
        elif self.keep_grad and torch.is_grad_enabled() and (tensor.requires_grad or replaceable):
            live = tensor if tensor.requires_grad else tensor.detach().requires_grad_()  # the graph may start here
            if layout == "nchw":
                live.register_hook(functools.partial(self.maps.grads.__setitem__, key))
            else:
                live.register_hook(functools.partial(self._store_grad, key, layout))
            spatial = self.maps[key] = as_spatial(live, layout)
            if whole_output or layout != "nchw" or live is not tensor:
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
            elif not self._guarded or (self._guard is None and self._copied_bytes + nbytes <= COPY_AT_ONCE_BYTES):
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
            pattern = glob_pattern(selector)
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


def _top_level(output: Any) -> list[Any]:
    """The items of a tuple or list, or the values of a dict: what :func:`_substitute` can replace."""
    if isinstance(output, dict):
        return list(output.values())
    return list(output) if isinstance(output, (tuple, list)) else []


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


@accepts_loaded_model(inputs=())
def capture(
    model: nn.Module | LoadedModel,
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
    settings = dict(device=device, dtype=dtype, keep_grad=keep_grad, stop_early=stop_early, pick=pick, reduce=reduce)
    return Capture(model, layers, {**settings, "layout": layout, "train": train})


@accepts_loaded_model()
def feature_maps(
    model: nn.Module | LoadedModel,
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
    check_model_input(model, x)
    options = dict(device=device, dtype=dtype, stop_early=stop_early, pick=pick, layout=layout, train=train)
    try:
        with torch.no_grad(), capture(model, layers, **options) as maps:
            model(x)
    except (RuntimeError, ValueError) as error:
        if x.dim() == 3:  # most likely one image without its batch dimension
            raise ValueError(f"x has shape {tuple(x.shape)}: add the batch dimension, x[None] ({error})") from error
        raise
    return dict(maps)
