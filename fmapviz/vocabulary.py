"""How fmapviz names things, in one place: a unit of a layer, a choice of channels, a class.

Every function, the command line and the docs use these words:

* ``layers``: one layer or many (a name, a glob, a module type, or a list of them). Capture keys
  are layer names too: ``"layer4.1.relu#2"`` is the second call of a module that runs twice,
  ``"backbone:0"`` the first level of a layer that returns a dict of maps.
* ``channels``: *which* channels, always: indices (``[3, 7]``, ``range(16)``, ``"0-15"``,
  ``"3,7"``), ``"top:K"`` / ``"bottom:K"`` (the best or worst K by a ranking), or ``"all"``.
  A *count* of channels is ``top=``.
* a **unit** is "channel 17 of features.10": ``"features.10[17]"`` (the channel's mean),
  ``"features.10[17,7,7]"`` (the neuron at row 7, column 7) or ``"features.10[17,center]"``.
  Brackets cannot collide with the ``#k`` and ``:level`` parts of capture keys, so
  ``"layer4.1.relu#2[5]"`` and ``"backbone:0[3]"`` are units too. :class:`Unit` is the Python form.
* a **class** is an index or a name; names match case-insensitively and a miss lists the closest.
* ``x`` is the model input tensor; ``data`` is a collection of images (folder, glob, files).

This module imports no torch, so the command line can check what the user typed before loading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import closest_names

_UNIT = re.compile(r"^(?P<layer>[^\[\]]+)\[(?P<index>[^\[\]]*)\]$")


@dataclass(frozen=True)
class Unit:
    """Channel ``channel`` of ``layer`` (its mean over positions), or one neuron of it.

    Attributes:
        layer: a layer name or capture key (``"features.10"``, ``"layer4.1.relu#2"``, ``"backbone:0"``).
        channel: the channel index.
        position: ``(row, column)`` of one neuron, ``"center"`` for the middle of the map, or None
            for the whole channel.

    Example:
        >>> Unit("features.10", 17), parse_unit("features.10[17,7,7]").position
        (Unit(layer='features.10', channel=17, position=None), (7, 7))
    """

    layer: str
    channel: int
    position: tuple[int, int] | Literal["center"] | None = None

    def __str__(self) -> str:
        if self.position is None:
            return f"{self.layer}[{self.channel}]"
        if self.position == "center":
            return f"{self.layer}[{self.channel},center]"
        return f"{self.layer}[{self.channel},{self.position[0]},{self.position[1]}]"


def is_unit(spec: object) -> bool:
    """Whether ``spec`` is a :class:`Unit` or a string in unit notation (``"layer[c]"``)."""
    return isinstance(spec, Unit) or (isinstance(spec, str) and _UNIT.match(spec.strip()) is not None)


def bare_int_error(value: int, layer: str = "features.10") -> ValueError:
    """The error for an int where a unit or a class is expected: it shows both spellings.

    Example:
        >>> print(bare_int_error(3, "conv2"))
        3 alone names neither a class nor a channel: write 'class:3' for class 3, or 'conv2[3]' for channel 3 of conv2.
    """
    return ValueError(
        f"{value!r} alone names neither a class nor a channel: write 'class:{value}' for class {value}, "
        f"or '{layer}[{value}]' for channel {value} of {layer}."
    )


def parse_unit(spec: str | Unit) -> Unit:
    """Read ``"layer[c]"``, ``"layer[c,row,col]"`` or ``"layer[c,center]"`` into a :class:`Unit`.

    Raises:
        ValueError: the text is not in unit notation; the message shows the accepted forms.
    """
    if isinstance(spec, Unit):
        return spec
    if isinstance(spec, int):
        raise bare_int_error(spec)
    match = _UNIT.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"Bad unit {spec!r}: {UNIT_FORMS}")
    layer, parts = match["layer"].strip(), [part.strip() for part in match["index"].split(",")]
    channel = _integer(parts[0], "channel", spec, "unit")
    if channel < 0:
        raise ValueError(f"Bad unit {spec!r}: the channel must be >= 0.")
    if len(parts) == 1:
        return Unit(layer, channel)
    if len(parts) == 2 and parts[1] == "center":
        return Unit(layer, channel, "center")
    if len(parts) == 3:
        return Unit(
            layer, channel, (_integer(parts[1], "row", spec, "unit"), _integer(parts[2], "column", spec, "unit"))
        )
    raise ValueError(f"Bad unit {spec!r}: {UNIT_FORMS}")


UNIT_FORMS = (
    "write 'layer[channel]' (features.10[17]), 'layer[channel,row,col]' (features.10[17,7,7]) "
    "or 'layer[channel,center]'."
)


@dataclass(frozen=True)
class ChannelChoice:
    """A parsed ``channels`` value: ``kind`` is ``"all"``, ``"top"``, ``"bottom"`` or ``"indices"``."""

    kind: Literal["all", "top", "bottom", "indices"]
    count: int = 0
    indices: tuple[int, ...] = ()


def parse_channels(channels: str | int | Iterable[int]) -> ChannelChoice:
    """Read a ``channels`` value: ``"all"``, ``"top:K"``, ``"bottom:K"``, ``"0-15"``, ``"3,7"``, ints.

    Indices may be negative (counted from the end); they are checked against a layer later.

    Raises:
        ValueError: a malformed value, ``top:0``, a descending range or an empty list.

    Example:
        >>> parse_channels("top:8"), parse_channels("0-2").indices
        (ChannelChoice(kind='top', count=8, indices=()), (0, 1, 2))
    """
    if isinstance(channels, bool):
        raise ValueError(f"channels={channels!r} is not understood. {CHANNEL_FORMS}")
    if isinstance(channels, int):
        return ChannelChoice("indices", indices=(channels,))
    if isinstance(channels, str):
        return _parse_channel_text(channels.strip())
    try:
        indices = tuple(int(index) for index in channels)
    except (TypeError, ValueError):
        raise ValueError(f"channels={shorten(repr(channels))} is not understood. {CHANNEL_FORMS}") from None
    if not indices:
        raise ValueError(f"channels is an empty list. {CHANNEL_FORMS}")
    return ChannelChoice("indices", indices=indices)


CHANNEL_FORMS = "Use 'all', 'top:16', 'bottom:8', a range '0-15', a list '3,7' or a list of ints."


def _parse_channel_text(text: str) -> ChannelChoice:
    if text == "all":
        return ChannelChoice("all")
    kind, colon, number = text.partition(":")
    if colon:
        if kind not in ("top", "bottom") or not number.strip().isdigit():
            raise ValueError(f"channels={text!r} is not understood. {CHANNEL_FORMS}")
        if int(number) < 1:
            raise ValueError(f"channels={text!r} asks for no channels; use {kind}:1 or more.")
        return ChannelChoice(kind, count=int(number))  # type: ignore[arg-type]
    indices: list[int] = []
    for part in filter(None, (part.strip() for part in text.split(","))):
        low, dash, high = part.partition("-") if not part.startswith("-") else (part, "", "")
        if dash:
            start, stop = _integer(low, "range start", text), _integer(high, "range end", text)
            if stop < start:
                raise ValueError(f"channels={text!r}: the range {part} runs backwards; write {stop}-{start}.")
            indices.extend(range(start, stop + 1))
        else:
            indices.append(_integer(part, "channel", text))
    if not indices:
        raise ValueError(f"channels={text!r} is not understood. {CHANNEL_FORMS}")
    return ChannelChoice("indices", indices=tuple(indices))


def class_index(name: str | int, categories: Sequence[str] | None, what: str = "class") -> int:
    """The index of class ``name``: an int (or digits) as is, a name looked up case-insensitively.

    Args:
        name: a class index or a class name (``"tabby"``, ``"Tabby"``, ``"tabby cat"`` if listed).
        categories: the model's class names (``LoadedModel.categories``); needed for names.
        what: how the value is called in error messages.

    Raises:
        ValueError: a negative index, a name without categories, or an unknown name (with the closest names).
    """
    if isinstance(name, bool):
        raise ValueError(f"{what} must be a class index or a class name, not {name!r}.")
    text = str(name).strip()
    if isinstance(name, int) or text.lstrip("-").isdigit():
        index = int(text)
        if index < 0:
            raise ValueError(f"{what} {index} is negative; class indices start at 0.")
        if categories is not None and index >= len(categories):
            raise ValueError(f"{what} {index} is out of range: the model has {len(categories)} classes.")
        return index
    if categories is None:
        raise ValueError(f"{what} '{text}' is a class name, but no class names are known; pass categories=.")
    lowered = [category.lower() for category in categories]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    hint = ", ".join(categories[lowered.index(close)] for close in closest_names(text.lower(), lowered, limit=3))
    raise ValueError(f"Unknown {what} '{text}'. Closest: {hint or 'none'}.")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for error messages that echo user input."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _integer(text: str, what: str, spec: object, kind: str = "value") -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Bad {kind} {shorten(repr(spec))}: the {what} must be an integer, got '{text}'.") from None
