"""summary: each layer's output shape, parameter count, cumulative stride and receptive field.

Geometry follows every op the model runs (convolutions, pooling, upsampling and
element-wise ops such as residual additions), so branches and functional code are
handled. For a convolution or pooling with kernel k, stride s, padding p and
dilation d, the output size is ``out = ⌊(in + 2p − d(k−1) − 1)/s⌋ + 1``; the
receptive field grows by ``d(k−1)·jump`` and the jump (cumulative stride) is
multiplied by ``s``. ``start`` is the input coordinate of the centre of output
pixel (0, 0); output pixel (i, j) sees the input window centred at
``start + (i, j)·stride`` with side ``receptive_field``.

Ops are followed with a PyTorch dispatch mode. With private PyTorch APIs switched off
(:mod:`fmapviz._torch_internals`), forward hooks read each module's own settings instead: the same
numbers, except that pooling done by functional code in a ``forward`` (no module) is not seen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._torch_internals import TorchDispatchMode, dispatch_modes_enabled
from .errors import InputSizeError
from .hooks import LayerSelectors, capture, model_guard, module_name
from .inputs import model_device, model_dtype
from .memory import meta_forward
from .model_input import accepts_loaded_model, loaded_input_shape
from .models import LoadedModel

Pair = tuple[float, float]


@dataclass(frozen=True)
class Geometry:
    """How an output pixel maps back onto the input (per axis: height, width)."""

    receptive_field: Pair = (1, 1)
    stride: Pair = (1, 1)
    start: Pair = (0.0, 0.0)

    def window(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Input window (top, left, bottom, right), unclipped, seen by output pixel (row, col)."""
        centre_y = self.start[0] + row * self.stride[0]
        centre_x = self.start[1] + col * self.stride[1]
        half_h, half_w = (self.receptive_field[0] - 1) / 2, (self.receptive_field[1] - 1) / 2
        return centre_y - half_h, centre_x - half_w, centre_y + half_h, centre_x + half_w

    def through(self, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)) -> Geometry:
        """The geometry after a sliding window with these settings."""
        span = [dilation[a] * (kernel[a] - 1) for a in range(2)]
        return Geometry(
            receptive_field=tuple(self.receptive_field[a] + span[a] * self.stride[a] for a in range(2)),
            stride=tuple(self.stride[a] * stride[a] for a in range(2)),
            start=tuple(self.start[a] + (span[a] / 2 - padding[a]) * self.stride[a] for a in range(2)),
        )


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`summary`."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    parameters: int
    geometry: Geometry | None

    @property
    def stride(self) -> Pair | None:
        return self.geometry.stride if self.geometry else None

    @property
    def receptive_field(self) -> Pair | None:
        return self.geometry.receptive_field if self.geometry else None


class Summary(list):
    """Rows of :class:`LayerInfo` in execution order; ``print`` it for a table, index it by name."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for row in self:
                if row.name == key:
                    return row
            raise KeyError(key)
        return super().__getitem__(key)

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "params", "stride", "receptive field")
        lines = [header] + [
            (
                row.name,
                row.type,
                "×".join(str(size) for size in row.output_shape),
                f"{row.parameters:,}",
                _pair_text(row.stride),
                _pair_text(row.receptive_field),
            )
            for row in self
        ]
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(text)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _pair_text(pair: Pair | None) -> str:
    if pair is None:
        return "-"
    values = [f"{value:g}" for value in pair]
    return values[0] if values[0] == values[1] else "×".join(values)


@accepts_loaded_model(inputs=(), input_size=loaded_input_shape)
def summary(model: nn.Module | LoadedModel, input_size: Sequence[int] = (1, 3, 224, 224)) -> Summary:
    """Run one forward pass on zeros and describe every layer.

    Args:
        model: any image model; its mode and parameters are restored afterwards.
        input_size: the input shape, (N, C, H, W).

    Returns:
        A :class:`Summary`: rows with name, type, output shape, parameter count and
        :class:`Geometry` (cumulative stride, receptive field, window centre).

    Example:
        >>> rows = fmapviz.summary(torchvision.models.resnet18())
        >>> rows["layer4"].receptive_field
        (435, 435)
        >>> print(rows)  # a table
        layer  type  output shape  params  stride  receptive field
        ---...
        conv1  Conv2d  1×64×112×112  9,408  2  7
        ...
    """
    modules = dict(model.named_modules())

    def describe(name: str, output: torch.Tensor, geometry: Geometry | None) -> LayerInfo:
        module = modules[module_name(name)]
        parameters = sum(p.numel() for p in module.parameters())
        return LayerInfo(name, type(module).__name__, tuple(output.shape), parameters, geometry)

    return Summary(_traced(model, input_size, "all", describe).values())


def layer_geometry(
    model: nn.Module, layers: LayerSelectors, input_size: Sequence[int] = (1, 3, 224, 224)
) -> dict[str, Geometry | None]:
    """The :class:`Geometry` of the selected layers only (None for non-spatial outputs), keyed as capture keys them.

    Cheaper than :func:`summary` when only a few layers matter: the forward pass stops after
    the last of them and the other modules are not described.
    """
    return _traced(model, input_size, layers, lambda name, output, geometry: geometry, stop_early=True)


def _traced(
    model: nn.Module,
    input_size: Sequence[int],
    layers: LayerSelectors,
    record: Callable[[str, torch.Tensor, Geometry | None], Any],
    stop_early: bool = False,
    meta: bool = False,
) -> dict[str, Any]:
    """Run one forward pass on zeros (``meta``: shapes only, on the meta device, in the model's dtype);
    ``record(name, output, geometry)`` for each selected layer."""
    if meta:
        x = torch.empty(tuple(input_size), device="meta", dtype=model_dtype(model))
    else:
        x = torch.zeros(tuple(input_size), device=model_device(model))
    tracker = _GeometryTracker() if dispatch_modes_enabled() else _ModuleGeometryTracker(model)
    tracker.geometry[id(x)] = Geometry()
    tracker.alive.append(x)

    def reduce(name: str, output: torch.Tensor) -> Any:
        return record(name, output, tracker.geometry.get(id(output)) if output.ndim == 4 else None)

    options = dict(reduce=reduce, stop_early=stop_early)
    with model_guard(model), torch.no_grad(), capture(model, layers, **options) as rows, tracker:
        meta_forward(model, x) if meta else model(x)
    return dict(rows)


SLIDING_WINDOWS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
"""The layers whose strides make a model's total stride (adaptive pooling, which scales with the input, is not one)."""


@accepts_loaded_model(inputs=(), input_size=loaded_input_shape)
def check_input_size(
    model: nn.Module | LoadedModel, input_size: Sequence[int] = (1, 3, 224, 224), option: str = "size="
) -> None:
    """Refuse an input too small for the model, and warn about one smaller than its total stride.

    The thresholds come from the model's own layers, traced on the ``meta`` device (nothing is allocated, at any
    size): its convolutions and poolings. An input smaller than the first one's kernel, or on which more than half
    of them give 1x1 maps, is an error: the maps collapse long before the last layer. An input smaller than the
    total stride (the product of the strides, 32 for mobilenet_v2) is a warning: the deepest maps are 1x1.
    A model that cannot run on the meta device is not checked.

    Args:
        model: an image model; it is not run or changed.
        input_size: (N, C, H, W) of the input.
        option: how the message names the size to change (``"--size"`` on the command line).

    Raises:
        InputSizeError: the input is smaller than the first kernel, or most maps are 1x1; the message names
            the size, the layer and the smallest size that keeps the maps.

    Warns:
        UserWarning: the input is smaller than the total stride.

    Example:
        >>> fmapviz.layers.check_input_size(torchvision.models.mobilenet_v2(), (1, 3, 3, 3), "--size")
        Traceback (most recent call last):
        ...
        fmapviz.errors.InputSizeError: An input of 3x3 is too small for MobileNetV2: its maps are 1x1 from ...
    """
    modules = dict(model.named_modules())

    def window(name: str, output: torch.Tensor, geometry: Geometry | None) -> tuple | None:
        module = modules[module_name(name)]
        if geometry is None or not isinstance(module, SLIDING_WINDOWS):
            return None
        kernel = _pair(getattr(module, "kernel_size", 1), 1)
        dilation = _pair(getattr(module, "dilation", 1), 1)
        reach = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
        return name, tuple(output.shape[-2:]), geometry.stride, reach

    try:
        rows = [row for row in _traced(model, input_size, "all", window, meta=True).values() if row is not None]
    except Exception:  # noqa: BLE001 - an op without a meta kernel (or a size it rejects): the run will say
        return
    if not rows:
        return
    height, width = input_size[-2:]
    stride = tuple(int(max(row[2][a] for row in rows)) for a in range(2))
    needed = f"pass {option} {max(stride)} or more"
    what = f"An input of {height}x{width}"
    first, reach = rows[0][0], rows[0][3]
    if height < reach[0] or width < reach[1]:
        raise InputSizeError(
            f"{what} is smaller than the {reach[0]}x{reach[1]} kernel of {first}, the first layer of "
            f"{type(model).__name__}; {needed}."
        )
    collapsed = [row[0] for row in rows if row[1] == (1, 1)]
    if len(collapsed) * 2 > len(rows):
        raise InputSizeError(
            f"{what} is too small for {type(model).__name__}: its maps are 1x1 from {collapsed[0]} on "
            f"({len(collapsed)} of its {len(rows)} convolutions and poolings); {needed}."
        )
    if height < stride[0] or width < stride[1]:
        deepest = next(row[0] for row in reversed(rows) if row[2] == max(row[2] for row in rows))
        warnings.warn(
            f"{what} is smaller than the total stride {_pair_text(stride)} of {type(model).__name__} "
            f"(at {deepest}): its deepest maps are 1x1; {needed}.",
            stacklevel=2,
        )


class _GeometryTracker(TorchDispatchMode):
    """Propagates :class:`Geometry` from op inputs to op outputs, keyed by tensor identity."""

    def __init__(self) -> None:
        super().__init__()
        self.geometry: dict[int, Geometry] = {}
        self.alive: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = _tensors((*args, *kwargs.values()))
        known = [self.geometry[id(t)] for t in inputs if id(t) in self.geometry]
        if not known or not inputs:
            return result
        geometry = _after(func, args, inputs[0], max(known, key=_area))
        for output in _tensors(result if isinstance(result, (tuple, list)) else (result,)):
            self.geometry[id(output)] = geometry
            self.alive.append(output)
        return result


class _ModuleGeometryTracker:
    """:class:`_GeometryTracker` from forward hooks: each leaf module's settings turn its input's geometry into
    its output's. A tensor made by functional code between modules (``x + block(x)``) takes the geometry
    given last, which is its widest input's (the branch's) as the op-level tracker would find."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.geometry: dict[int, Geometry] = {}
        self.alive: list[torch.Tensor] = []
        self.last: Geometry | None = None
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _ModuleGeometryTracker:
        # prepend: run before capture's hook on the same module, which reads the geometry
        self.handles = [module.register_forward_hook(self._after, prepend=True) for module in self.model.modules()]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _after(self, module: nn.Module, args: tuple, output: Any) -> None:
        values = list(output.values()) if isinstance(output, Mapping) else output  # a dict of maps (FPN levels)
        outputs = _tensors(values if isinstance(values, (tuple, list)) else (values,))
        if next(module.children(), None) is None:
            inputs = _tensors(args)
            known = [self.geometry[id(t)] for t in inputs if id(t) in self.geometry]
            incoming = max(known, key=_area) if known else self.last
            if incoming is None or not inputs:
                return
            geometry = _module_after(module, inputs[0], incoming)
        else:  # a container: only what its own code made is new
            geometry = self.last
            outputs = [t for t in outputs if id(t) not in self.geometry]
            if geometry is None:
                return
        for tensor in outputs:
            self.geometry[id(tensor)] = geometry
            self.alive.append(tensor)
        self.last = geometry


def _area(geometry: Geometry) -> float:
    return geometry.receptive_field[0] * geometry.receptive_field[1]


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    """The tensors among aten op arguments or results (tensors, or lists of tensors one level deep)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


def _pair(value: Any, default: int) -> Pair:
    if value is None or value == []:
        return (default, default)
    if isinstance(value, (int, float)):
        return (value, value)
    return (value[0], value[-1]) if len(value) else (default, default)


def _after(func: Any, args: tuple, source: torch.Tensor, incoming: Geometry) -> Geometry:
    name = func.overloadpacket.__name__
    if name == "convolution" and not args[6] and args[1].ndim == 4:
        kernel = tuple(args[1].shape[2:])
        return incoming.through(kernel, _pair(args[3], 1), _pair(args[4], 0), _pair(args[5], 1))
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = _pair(args[1], 1)
        stride = _pair(args[2] if len(args) > 2 else None, 0)
        stride = kernel if stride == (0, 0) else stride
        padding = _pair(args[3] if len(args) > 3 else None, 0)
        dilation = _pair(args[4] if len(args) > 4 and "max" in name else None, 1)
        return incoming.through(kernel, stride, padding, dilation)
    if name in ("_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax", "sum") and source.ndim == 4:
        out_size = _pair(args[1], 1) if name.startswith(("_adaptive", "adaptive")) else (1, 1)
        if name in ("mean", "amax", "sum") and not _reduces_space(args):
            return incoming
        return _adaptive(incoming, source.shape[2:], out_size)
    if name.startswith("upsample") and source.ndim == 4:
        return incoming  # finer sampling of the same receptive field; stride is not divided here
    return incoming


def _module_after(module: nn.Module, source: torch.Tensor, incoming: Geometry) -> Geometry:
    """What :func:`_after` finds for the ops of ``module``, from the module's own settings."""
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if module.padding_mode != "zeros" or padding == "valid":  # padded by a separate op before the convolution
            padding = (0, 0)
        elif padding == "same":
            padding = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
        return incoming.through(module.kernel_size, module.stride, padding, module.dilation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size, 1)
        stride = _pair(module.stride, 0)
        dilation = _pair(module.dilation, 1) if isinstance(module, nn.MaxPool2d) else (1, 1)
        return incoming.through(kernel, kernel if stride == (0, 0) else stride, _pair(module.padding, 0), dilation)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and source.ndim == 4:
        out_size = _pair(module.output_size, 1)
        out_size = tuple(source.shape[2 + a] if out_size[a] is None else out_size[a] for a in range(2))
        return _adaptive(incoming, source.shape[2:], out_size)
    return incoming


def _adaptive(incoming: Geometry, in_size: Sequence[int], out_size: Pair) -> Geometry:
    """The geometry after pooling ``in_size`` down to ``out_size`` (adaptive pooling; global when 1×1)."""
    kernel = tuple(-(-in_size[a] // max(out_size[a], 1)) for a in range(2))
    stride = tuple(max(in_size[a] // max(out_size[a], 1), 1) for a in range(2))
    return incoming.through(kernel, stride, (0, 0))


def _reduces_space(args: tuple) -> bool:
    dims = args[1] if len(args) > 1 else None
    if dims is None:
        return True
    dims = [dims] if isinstance(dims, int) else list(dims)
    return {d % 4 for d in dims} >= {2, 3}
