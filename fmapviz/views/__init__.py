"""Every public ``show_*``: engine results in, :class:`~fmapviz.plot.Figure` out.

Views sit between the engines and the report/CLI: they pick what to draw from an engine's
result (channels, layers, captions, scales) and hand plain tensors and arrays to the drawing
primitives of :mod:`fmapviz.plot`. They never run a model.

One module per topic (maps, saliency, actmax, scan, explain, compare, concepts). A view registers in one
place, its own module's ``__all__``: this package exports every name in the ``__all__`` of each of its
modules, a new module included, and ``fmapviz`` re-exports them all (it reads the same lists from the
source, so ``import fmapviz`` imports no view).
"""

from __future__ import annotations

import importlib
import pkgutil


def _export_every_view() -> list[str]:
    """Bind the ``__all__`` names of every module of this package here; returns them in module order."""
    names: list[str] = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            globals().update({name: getattr(module, name) for name in module.__all__})
            names += module.__all__
    return names


__all__ = _export_every_view()
