"""What activation maximization maximizes: objectives as values that add, subtract and scale.

An :class:`Objective` maps the captured tensors of one forward pass to one score per
image, shape ``(B,)``; higher is better. The tensors it may read:

* layer outputs by module name (``"features.10"``), captured by :func:`fmapviz.capture`;
* ``INPUT`` (``"@input"``): the image in [0, 1] before transforms (for penalties);
* ``OUTPUT`` (``"@output"``): the model output (class logits).

Objectives combine like numbers: ``channel("layer3", 5) - 0.5 * channel("layer3", 9)``,
``deepdream("layer4") + 1e-3 * diversity("layer3")``. :data:`OBJECTIVES` is the registry of
constructors, and :func:`parse_objective` reads the string forms:

=============================  ===============================================
``"features.10:17"``           mean of channel 17 (:func:`channel`)
``"features.10:17@7,7"``       channel 17 at row 7, column 7 (:func:`neuron`)
``"features.10:17@"``          channel 17 at the centre of the map
``"features.10"``              L2 of the whole layer (:func:`deepdream`)
``"deepdream:features.10"``    the same, explicitly
``"class:954"``                class logit 954 (:func:`class_logit`)
``"class:banana"``             by category name (needs ``categories=``)
=============================  ===============================================
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...errors import closest_names

INPUT = "@input"
OUTPUT = "@output"

Scores = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A score per image computed from captured tensors; compose with ``+``, ``-`` and ``*``.

    Attributes:
        score: ``score(tensors) -> (B,)`` tensor, higher is better.
        name: a readable description, e.g. ``"features.10:17"``.
        layers: module names whose outputs ``score`` reads.
        needs_output: ``score`` reads the model output, so the forward pass must run to the end.
    """

    score: Scores
    name: str
    layers: frozenset[str] = field(default_factory=frozenset)
    needs_output: bool = False

    def __call__(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.score(tensors)

    def _combine(self, other: Objective, sign: float, symbol: str) -> Objective:
        first, second = self.score, other.score
        return Objective(
            lambda tensors: first(tensors) + sign * second(tensors),
            f"{self.name} {symbol} {other.name}",
            self.layers | other.layers,
            self.needs_output or other.needs_output,
        )

    def __add__(self, other: Objective | float) -> Objective:
        return self._combine(_as_objective(other), 1.0, "+")

    def __radd__(self, other: Objective | float) -> Objective:
        return self if isinstance(other, numbers.Number) and other == 0 else _as_objective(other) + self

    def __sub__(self, other: Objective | float) -> Objective:
        return self._combine(_as_objective(other), -1.0, "-")

    def __rsub__(self, other: Objective | float) -> Objective:
        return _as_objective(other) - self

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, numbers.Real):
            raise TypeError(f"An objective can only be multiplied by a number, not {type(weight).__name__}.")
        score = self.score
        return Objective(lambda tensors: weight * score(tensors), f"{weight:g}*({self.name})", self.layers,
                         self.needs_output)  # fmt: skip

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        return self * (1.0 / divisor)

    def __neg__(self) -> Objective:
        return self * -1.0


def _as_objective(value: Objective | float) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, numbers.Real):
        constant = float(value)
        return Objective(lambda tensors: constant * torch.ones(_batch(tensors)), f"{constant:g}")
    raise TypeError(f"Cannot combine an objective with {type(value).__name__}; use an Objective or a number.")


def _batch(tensors: Mapping[str, torch.Tensor]) -> int:
    return next(iter(tensors.values())).shape[0]


def _layer(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in tensors:
        raise KeyError(f"Layer '{name}' did not run in this forward pass; check the layer name.")
    return tensors[name]


def _check_channel(activation: torch.Tensor, layer: str, channel: int) -> None:
    if activation.dim() < 2 or not -activation.shape[1] <= channel < activation.shape[1]:
        count = activation.shape[1] if activation.dim() >= 2 else 0
        raise ValueError(f"Channel {channel} is out of range for layer '{layer}' with {count} channels.")


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel of ``layer`` over all positions.

    Example:
        >>> maximize(model, channel("features.10", 17))
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        activation = _layer(tensors, layer)
        _check_channel(activation, layer, index)
        return activation[:, index].flatten(1).mean(1)

    return Objective(score, f"{layer}:{index}", frozenset({layer}))


def neuron(layer: str, index: int, row: int | None = None, col: int | None = None) -> Objective:
    """Activation of channel ``index`` of ``layer`` at one position (default: the centre of the map).

    Example:
        >>> maximize(model, neuron("features.10", 17, 7, 7))
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        activation = _layer(tensors, layer)
        _check_channel(activation, layer, index)
        if activation.dim() != 4:
            raise ValueError(f"neuron() needs a (B,C,H,W) layer; '{layer}' gives shape {tuple(activation.shape)}.")
        height, width = activation.shape[-2:]
        y = height // 2 if row is None else row
        x = width // 2 if col is None else col
        if not (0 <= y < height and 0 <= x < width):
            raise ValueError(f"Position ({y}, {x}) is outside the {height}x{width} map of layer '{layer}'.")
        return activation[:, index, y, x]

    where = "" if row is None and col is None else f"{row},{col}"
    return Objective(score, f"{layer}:{index}@{where}", frozenset({layer}))


def deepdream(layer: str) -> Objective:
    """Mean squared activation of the whole of ``layer`` (DeepDream): everything the layer sees grows.

    Example:
        >>> maximize(model, deepdream("features.10"), init=photo)
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return _layer(tensors, layer).pow(2).flatten(1).mean(1)

    return Objective(score, f"deepdream:{layer}", frozenset({layer}))


def class_logit(index: int) -> Objective:
    """The model's output ``index`` (a class logit); needs the full forward pass.

    Example:
        >>> maximize(model, class_logit(954))   # banana
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = tensors[OUTPUT].flatten(1)
        if not -logits.shape[1] <= index < logits.shape[1]:
            raise ValueError(f"Class {index} is out of range: the model has {logits.shape[1]} outputs.")
        return logits[:, index]

    return Objective(score, f"class:{index}", needs_output=True)


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Mean over positions of the projection of ``layer``'s channel vector onto ``vector`` (unit-normalized).

    Example:
        >>> maximize(model, direction("layer3", torch.randn(256)))
    """
    unit = torch.as_tensor(vector, dtype=torch.float32).flatten()
    unit = unit / unit.norm().clamp_min(1e-12)

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        activation = _layer(tensors, layer)
        if activation.shape[1] != unit.numel():
            raise ValueError(
                f"Direction has {unit.numel()} entries but layer '{layer}' has {activation.shape[1]} channels."
            )
        weights = unit.to(activation).view(1, -1, *([1] * (activation.dim() - 2)))
        return (activation * weights).sum(1).flatten(1).mean(1)

    return Objective(score, f"direction:{layer}", frozenset({layer}))


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix at ``layer`` to the others' (Lucid's diversity).

    Pushes the images of one batch apart in style; zero for a batch of one. Use it with
    ``copies=`` in :func:`fmapviz.maximize`, e.g. ``channel("layer3", 5) + 1e2 * diversity("layer2")``.
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        activation = _layer(tensors, layer)
        batch = activation.shape[0]
        if batch < 2:
            return activation.new_zeros(batch)
        flat = activation.flatten(2)
        gram = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = gram @ gram.T
        return -(similarity.sum(1) - similarity.diagonal()) / (batch - 1)

    return Objective(score, f"diversity:{layer}", frozenset({layer}))


def total_variation() -> Objective:
    """Total variation of the image in [0, 1] (mean absolute difference of neighbours); subtract it to smooth."""

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = tensors[INPUT]
        rows = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
        cols = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
        return rows + cols

    return Objective(score, "total_variation")


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the image in [0, 1] from grey ``center``; subtract it to damp saturation."""

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (tensors[INPUT] - center).pow(2).flatten(1).mean(1)

    return Objective(score, "l2")


def blur(kernel: int = 3) -> Objective:
    """Mean squared distance of the image from its own box blur (gradient stopped); subtract it to smooth.

    The gradient of ``-blur()`` nudges each pixel towards its neighbours' mean, like Lucid's
    ``blur_input_each_step``.
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = tensors[INPUT]
        blurred = F.avg_pool2d(image.detach(), kernel, stride=1, padding=kernel // 2, count_include_pad=False)
        return (image - blurred).pow(2).flatten(1).mean(1)

    return Objective(score, "blur")


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "channel": channel,
    "neuron": neuron,
    "deepdream": deepdream,
    "class": class_logit,
    "direction": direction,
    "diversity": diversity,
    "total_variation": total_variation,
    "l2": l2,
    "blur": blur,
}


def parse_objective(spec: str | Objective, categories: Sequence[str] | None = None) -> Objective:
    """Turn the string form of an objective (see the module docstring) into an :class:`Objective`.

    Args:
        spec: e.g. ``"features.10:17"``, ``"features.10:17@7,7"``, ``"features.10"``,
            ``"deepdream:features.10"``, ``"class:954"``, ``"class:banana"``; an Objective is returned as is.
        categories: class names, needed for ``"class:<name>"`` (``fmapviz.load_model(...).categories``).

    Returns:
        The objective. Layer names are checked against the model later, by :func:`fmapviz.maximize`.

    Raises:
        ValueError: the string cannot be read; the message shows the accepted forms.

    Example:
        >>> parse_objective("class:banana", categories=loaded.categories).name
        'class:954'
    """
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Bad objective {spec!r}: {_FORMS}")
    text = spec.strip()
    head, colon, tail = text.partition(":")
    if not colon:
        return deepdream(text)
    if not head or not tail:
        raise ValueError(f"Bad objective '{spec}': {_FORMS}")
    if head == "deepdream":
        return deepdream(tail)
    if head == "class":
        return class_logit(_class_index(tail, categories, spec))
    if head in OBJECTIVES:
        raise ValueError(f"Objective '{head}' has no string form; call fmapviz.objectives.{head}(...) instead.")
    index_text, at, position = tail.partition("@")
    index = _integer(index_text, "channel", spec)
    if not at:
        return channel(head, index)
    if not position.strip():
        return neuron(head, index)
    parts = position.split(",")
    if len(parts) != 2:
        raise ValueError(f"Bad objective '{spec}': a neuron position is 'row,col', e.g. 'features.10:17@7,7'.")
    return neuron(head, index, _integer(parts[0], "row", spec), _integer(parts[1], "column", spec))


_FORMS = (
    "use 'layer:channel' (features.10:17), 'layer:channel@row,col', 'layer' or 'deepdream:layer', "
    "'class:index' or 'class:name'."
)


def _integer(text: str, what: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"Bad objective '{spec}': the {what} must be an integer, got '{text}'. {_FORMS}") from None


def _class_index(text: str, categories: Sequence[str] | None, spec: str) -> int:
    name = text.strip()
    if name.lstrip("-").isdigit():
        return int(name)
    if categories is None:
        raise ValueError(
            f"Objective '{spec}' names a class; pass categories= (e.g. fmapviz.load_model(...).categories) "
            "or use the class index, 'class:954'."
        )
    lowered = [category.lower() for category in categories]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    hint = closest_names(name.lower(), lowered, limit=3)
    raise ValueError(f"Unknown class '{name}' in objective '{spec}'. Closest: {', '.join(hint) or 'none'}.")
