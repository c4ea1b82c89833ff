"""Errors raised by fmapviz. Every message names the problem and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FmapvizError(Exception):
    """Base class of every error fmapviz raises on purpose.

    ``exit_code`` is what the command line exits with: 1 for a runtime failure, 2 for a problem the
    command line itself must fix (a device this machine lacks, weights that are not on disk).

    Example:
        >>> try:
        ...     fmapviz.load_image("no/such/photo.png")
        ... except fmapviz.FmapvizError as error:
        ...     print(type(error).__name__)
        ImageLoadError
    """

    exit_code: int = 1


class LayerNotFoundError(FmapvizError, KeyError):
    """A layer selector matched no module of the model; the message lists the closest names.

    Example:
        >>> try:
        ...     fmapviz.feature_maps(model, x, "features.99")
        ... except fmapviz.LayerNotFoundError as error:
        ...     print(error)
        Unknown layer 'features.99'. Closest: features.9, ...
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImageLoadError(FmapvizError, OSError):
    """An image could not be read, decoded or converted.

    Example:
        >>> try:
        ...     fmapviz.load_image("no/such/photo.png")
        ... except fmapviz.ImageLoadError as error:
        ...     print("no/such/photo.png" in str(error))
        True
    """


class ModelLoadError(FmapvizError, RuntimeError):
    """A model, its weights or a checkpoint could not be loaded.

    Example:
        >>> try:
        ...     fmapviz.load_model("mobilenet_v9")
        ... except fmapviz.ModelLoadError as error:
        ...     print(error)
        Unknown model 'mobilenet_v9'...
    """


class WeightsNotFoundError(ModelLoadError):
    """Pretrained weights that are neither on disk nor downloadable (offline); the message names the file,
    the cache folder and the variable that moves it. The command line exits with 2.

    Example:
        >>> issubclass(fmapviz.errors.WeightsNotFoundError, fmapviz.ModelLoadError)
        True
    """

    exit_code = 2


class InputSizeError(FmapvizError, ValueError):
    """An input too small for the model (its maps would collapse to 1x1 early, or it is smaller than the first
    kernel); the message names the size and the option to change. The command line exits with 2.

    Example:
        >>> issubclass(fmapviz.errors.InputSizeError, ValueError), fmapviz.errors.InputSizeError.exit_code
        (True, 2)
    """

    exit_code = 2


def closest_names(query: str, names: Iterable[str], limit: int = 5) -> list[str]:
    """The names most similar to ``query``, best first (for "did you mean" hints)."""
    names = list(names)
    close = difflib.get_close_matches(query, names, n=limit, cutoff=0.4)
    if len(close) < limit:
        prefix = query.rsplit(".", 1)[0]
        close += [n for n in names if n.startswith(prefix) and n not in close][: limit - len(close)]
    return close
