"""Errors raised by fmapviz. Every message names the problem and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FmapvizError(Exception):
    """Base class of every error fmapviz raises on purpose."""


class LayerNotFoundError(FmapvizError, KeyError):
    """A layer selector matched no module of the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImageLoadError(FmapvizError, OSError):
    """An image could not be read, decoded or converted."""


class ModelLoadError(FmapvizError, RuntimeError):
    """A model, its weights or a checkpoint could not be loaded."""


def closest_names(query: str, names: Iterable[str], limit: int = 5) -> list[str]:
    """The names most similar to ``query``, best first (for "did you mean" hints)."""
    names = list(names)
    close = difflib.get_close_matches(query, names, n=limit, cutoff=0.4)
    if len(close) < limit:
        prefix = query.rsplit(".", 1)[0]
        close += [n for n in names if n.startswith(prefix) and n not in close][: limit - len(close)]
    return close
