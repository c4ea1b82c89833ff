"""What activation maximization maximizes: objectives as values that add, subtract and scale.

An :class:`Objective` maps the captured tensors of one forward pass to one score per
image, shape ``(B,)``; higher is better. The tensors it may read:

* layer outputs by layer name or capture key (``"features.10"``, ``"layer4.1.relu#2"``,
  ``"backbone:0"``), captured by :func:`fmapviz.capture`;
* ``INPUT`` (``"@input"``): the image in [0, 1] before transforms (for penalties);
* ``OUTPUT`` (``"@output"``): the model output: class logits (N,K), or per-pixel class maps
  (N,K,H,W) of a segmentation model, whose class objectives use the mean over pixels.

Objectives combine like numbers: ``channel("layer3", 5) - 0.5 * channel("layer3", 9)``,
``deepdream("layer4") + 1e-3 * diversity("layer3")``. :data:`OBJECTIVES` is the registry of
constructors, and :func:`parse_objective` reads the string forms, which use the unit notation
of :mod:`fmapviz.vocabulary`:

==============================  ===============================================
``"features.10[17]"``           mean of channel 17 (:func:`channel`)
``"features.10[17,7,7]"``       channel 17 at row 7, column 7 (:func:`neuron`)
``"features.10[17,center]"``    channel 17 at the centre of the map
``fmapviz.Unit(...)``           any of the three above
``"features.10"``               L2 of the whole layer (:func:`deepdream`)
``"deepdream:features.10"``     the same, explicitly
``"class:954"``                 class 954 (:func:`class_logit`)
``"class:banana"``              by class name, case-insensitive (needs ``categories=``)
==============================  ===============================================
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...hooks import layer_keys
from ...vocabulary import UNIT_FORMS, Unit, bare_int_error, class_index, is_unit, parse_unit

INPUT = "@input"
OUTPUT = "@output"

Scores = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A score per image computed from captured tensors; compose with ``+``, ``-`` and ``*``.

    Attributes:
        score: ``score(tensors) -> (B,)`` tensor, higher is better.
        name: a readable description, e.g. ``"features.10[17]"``.
        layers: module names whose outputs ``score`` reads.
        needs_output: ``score`` reads the model output, so the forward pass must run to the end.

    Example:
        >>> from fmapviz import objectives
        >>> goal = objectives.channel("features.10", 3) - 0.5 * objectives.channel("features.10", 9)
        >>> goal.name, sorted(goal.layers)
        ('features.10[3] - 0.5*(features.10[9])', ['features.10'])
        >>> goal({"features.10": torch.ones(2, 16, 7, 7)})  # one score per image
        tensor([0.5000, 0.5000])
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
        return Objective(lambda tensors: _first(tensors).new_full((_batch(tensors),), constant), f"{constant:g}")
    raise TypeError(f"Cannot combine an objective with {type(value).__name__}; use an Objective or a number.")


def _first(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return next(iter(tensors.values()))


def _batch(tensors: Mapping[str, torch.Tensor]) -> int:
    return _first(tensors).shape[0]


def _layer(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """The map of ``name``: a reused module named without ``#k`` is read at its last call (see fmapviz.capture)."""
    keys = layer_keys(tensors, name)
    if len(keys) != 1 and name not in tensors:
        raise KeyError(f"Layer '{name}' did not run in this forward pass; check the layer name.")
    return tensors[keys[0] if len(keys) == 1 else name]


def _check_channel(activation: torch.Tensor, layer: str, channel: int) -> None:
    if activation.dim() < 2 or not -activation.shape[1] <= channel < activation.shape[1]:
        count = activation.shape[1] if activation.dim() >= 2 else 0
        raise ValueError(f"Channel {channel} is out of range for layer '{layer}' with {count} channels.")


def channel(layer: str, index: int) -> Objective:
    """Mean activation of one channel of ``layer`` over all positions.

    Example:
        >>> objective = channel("features.10", 17)  # fmapviz.maximize(model, objective) draws it
        >>> objective.name, objective(fmapviz.feature_maps(model, x, "features.10")).shape
        ('features.10[17]', torch.Size([1]))
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        activation = _layer(tensors, layer)
        _check_channel(activation, layer, index)
        return activation[:, index].flatten(1).mean(1)

    return Objective(score, str(Unit(layer, index)), frozenset({layer}))


def neuron(layer: str, index: int, row: int | None = None, col: int | None = None) -> Objective:
    """Activation of channel ``index`` of ``layer`` at one position (default: the centre of the map).

    Example:
        >>> objective = neuron("features.10", 17, 7, 7)  # fmapviz.maximize(model, objective) draws it
        >>> objective.name, objective(fmapviz.feature_maps(model, x, "features.10")).shape
        ('features.10[17,7,7]', torch.Size([1]))
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

    if (row is None) != (col is None):
        raise ValueError(f"neuron('{layer}', {index}) needs both row and col, or neither (the centre).")
    position = "center" if row is None else (row, col)
    return Objective(score, str(Unit(layer, index, position)), frozenset({layer}))


def deepdream(layer: str) -> Objective:
    """Mean squared activation of the whole of ``layer`` (DeepDream): everything the layer sees grows.

    Example:
        >>> objective = deepdream("features.10")  # fmapviz.maximize(model, objective, init=photo)
        >>> objective.name, sorted(objective.layers)
        ('deepdream:features.10', ['features.10'])
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return _layer(tensors, layer).pow(2).flatten(1).mean(1)

    return Objective(score, f"deepdream:{layer}", frozenset({layer}))


def class_logit(index: int) -> Objective:
    """Class ``index`` of the model output; needs the full forward pass.

    The output's dimension 1 holds the classes: for (N,K) logits the score is logit ``index``;
    for a segmentation model's (N,K,H,W) maps (or any (N,K,...) output) it is the mean of
    class ``index``'s map over all pixels.

    Raises:
        ValueError: (when scored) ``index`` is not below K, or the output has no class dimension.

    Example:
        >>> objective = class_logit(954)  # banana; fmapviz.maximize(model, objective) draws it
        >>> objective.needs_output, objective({"@output": torch.eye(1000)[[954, 3]]})
        (True, tensor([1., 0.]))
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return class_scores(tensors[OUTPUT], index)

    return Objective(score, f"class:{index}", needs_output=True)


def class_scores(output: torch.Tensor, index: int) -> torch.Tensor:
    """(N,) score of class ``index`` in a (N,K) or (N,K,...) model output: the logit, or its map's mean.

    Example:
        >>> class_scores(torch.randn(2, 21, 8, 8), 5).shape   # a segmentation output
        torch.Size([2])
    """
    if output.dim() < 2:
        raise ValueError(
            f"A class objective needs an output with classes on dimension 1, (N,K) or (N,K,H,W); "
            f"got shape {tuple(output.shape)}."
        )
    classes = output.shape[1]
    if not -classes <= index < classes:
        raise ValueError(f"Class {index} is out of range: the model output has {classes} classes (dimension 1).")
    chosen = output[:, index]
    return chosen if chosen.dim() == 1 else chosen.flatten(1).mean(1)


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Mean over positions of the projection of ``layer``'s channel vector onto ``vector`` (unit-normalized).

    Example:
        >>> objective = direction("features.10", torch.randn(64))  # a direction in channel space
        >>> objective.name, objective(fmapviz.feature_maps(model, x, "features.10")).shape
        ('direction:features.10', torch.Size([1]))
    """
    unit = torch.as_tensor(vector, dtype=torch.float32).flatten()  # cpu: moved to each activation in score
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

    Example:
        >>> same = torch.ones(2, 8, 4, 4)  # two images with identical maps: as alike as can be
        >>> fmapviz.objectives.diversity("layer2")({"layer2": same})
        tensor([-1., -1.])
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
    """Total variation of the image in [0, 1] (mean absolute difference of neighbours); subtract it to smooth.

    Example:
        >>> stripes = torch.zeros(1, 3, 8, 8)
        >>> stripes[..., ::2] = 1.0  # every other column white
        >>> fmapviz.objectives.total_variation()({"@input": stripes})
        tensor([1.])
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = tensors[INPUT]
        rows = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
        cols = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
        return rows + cols

    return Objective(score, "total_variation")


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the image in [0, 1] from grey ``center``; subtract it to damp saturation.

    Example:
        >>> fmapviz.objectives.l2()({"@input": torch.ones(1, 3, 8, 8)})  # white is 0.5 from grey
        tensor([0.2500])
    """

    def score(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (tensors[INPUT] - center).pow(2).flatten(1).mean(1)

    return Objective(score, "l2")


def blur(kernel: int = 3) -> Objective:
    """Mean squared distance of the image from its own box blur (gradient stopped); subtract it to smooth.

    The gradient of ``-blur()`` nudges each pixel towards its neighbours' mean, like Lucid's
    ``blur_input_each_step``.

    Example:
        >>> flat = torch.full((1, 3, 8, 8), 0.3)  # nothing to smooth
        >>> float(fmapviz.objectives.blur()({"@input": flat})) < 1e-9
        True
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


def unit_objective(unit: str | Unit) -> Objective:
    """The objective of a unit: :func:`channel` for ``"layer[c]"``, :func:`neuron` for a position.

    Example:
        >>> unit_objective("features.10[17,center]").name
        'features.10[17,center]'
    """
    unit = parse_unit(unit)
    if unit.position is None:
        return channel(unit.layer, unit.channel)
    if unit.position == "center":
        return neuron(unit.layer, unit.channel)
    return neuron(unit.layer, unit.channel, *unit.position)


def parse_objective(spec: str | Unit | Objective, categories: Sequence[str] | None = None) -> Objective:
    """Turn the string form of an objective (see the module docstring) into an :class:`Objective`.

    Args:
        spec: a unit (``"features.10[17]"``, ``"features.10[17,7,7]"``, ``"features.10[17,center]"``,
            :class:`fmapviz.Unit`), a layer (``"features.10"``, ``"deepdream:features.10"``) or a class
            (``"class:954"``, ``"class:banana"``); an Objective is returned as is.
        categories: class names, needed for ``"class:<name>"`` (``fmapviz.load_model(...).categories``).

    Returns:
        The objective. Layer names are checked against the model later, by :func:`fmapviz.maximize`.

    Raises:
        ValueError: the string cannot be read or names an unknown class; the message shows the accepted
            forms or the closest class names.

    Example:
        >>> parse_objective("class:Banana", categories=loaded.categories).name
        'class:954'
    """
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, Unit) or is_unit(spec):
        return unit_objective(spec)
    if isinstance(spec, int):
        raise bare_int_error(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Bad objective {spec!r}: {_FORMS}")
    text = spec.strip()
    if "[" in text or "]" in text:
        parse_unit(text)  # raises with the accepted unit forms
    if "@" in text:
        raise ValueError(f"Bad objective '{spec}': neurons are written as units now. {UNIT_FORMS}")
    head, colon, tail = text.partition(":")
    if colon and head == "deepdream" and tail.strip():
        return deepdream(tail.strip())
    if colon and head == "class" and tail.strip():
        return class_logit(class_index(tail, categories))
    if colon and head in OBJECTIVES:
        raise ValueError(f"Objective '{head}' has no string form; call fmapviz.objectives.{head}(...) instead.")
    return deepdream(text)  # a layer name or capture key, e.g. "features.10" or "backbone:0"


_FORMS = (
    "use a unit, 'features.10[17]', 'features.10[17,7,7]' or 'features.10[17,center]'; a layer, "
    "'features.10' or 'deepdream:features.10'; or a class, 'class:954' or 'class:banana'."
)
