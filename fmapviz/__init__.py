"""fmapviz: see what a convolutional network sees.

The names here are the ones a notebook calls; everything else lives in its submodule
(``fmapviz.hooks.Capture``, ``fmapviz.engines.actmax.ActMaxResult``, ``fmapviz.models.LoadedModel``).
Layers of the package: base → plot → inputs, models → hooks → engines → views → pages, explorer → CLI
(CONTRIBUTING.md).

``import fmapviz`` is cheap: torch and the engines load on the first use of a name (PEP 562),
so ``fmapviz --help`` and usage errors answer without importing torch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it. A new public name is one line here; a new view is none:
# every name in the ``__all__`` of a fmapviz/views/*.py module is public too (_view_names).
_API: dict[str, str | None] = {  # what a notebook calls: with the views, this is __all__
    "load_model": "models",
    "load_image": "inputs",
    "denormalize": "inputs",
    "summary": "layers",
    "capture": "hooks",
    "feature_maps": "hooks",
    "model_guard": "hooks",
    "channel_stats": "engines.channels",
    "saliency": "engines.saliency",
    "explain_channels": "engines.explain",
    "deep_feature_factorization": "engines.dff",
    "explore": "explorer",
    "interact": "notebook",
    "maximize": "engines.actmax",
    "objectives": "engines.actmax",
    "report": "pages.report",
    "ReportSpec": "pages.report",
    "scan": "engines.scan",
    "load_scan": "engines.scan",
    "save_scan": "pages.scan",
    "channel_page": "pages.channel",
    "Unit": "vocabulary",
    "evaluate": "engines.evaluate",  # the module of deletion, insertion, road, randomization_check …
    "BoxScoreTarget": "engines.saliency.targets",
    "MaskTarget": "engines.saliency.targets",
    "FmapvizError": "errors",
    "ImageLoadError": "errors",
    "LayerNotFoundError": "errors",
    "ModelLoadError": "errors",
    "compare": "engines.compare",
    "compare_checkpoints": "engines.compare",
    "init_report": "engines.training",
}
_TYPES: dict[str, str] = {  # results people check with isinstance; reachable, not in __all__
    "LoadedModel": "models",
    "LoadedImage": "inputs",
    "ScanResult": "engines.scan",
}
_MODULES: dict[str, str] = {"evaluate": "engines.evaluate"}  # public names that are modules
_EXPORTS = {**_API, **_TYPES}


@functools.cache
def _view_names() -> tuple[str, ...]:
    """Every public ``show_*``: the ``__all__`` of each ``fmapviz/views/*.py``, read from its source so that
    listing them (``__all__``, ``dir``) imports neither torch nor matplotlib."""
    import ast
    import re
    from pathlib import Path

    names: list[str] = []
    for path in sorted((Path(__file__).parent / "views").glob("[!_]*.py")):
        found = re.search(r"^__all__ = (\[.*?\])", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
        names += ast.literal_eval(found.group(1)) if found else []
    return tuple(names)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value = [*_API, *_view_names()]
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _view_names():
        value = getattr(importlib.import_module(f"{__name__}.views"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # fmapviz.inputs without importing it first
    else:
        raise AttributeError(f"module 'fmapviz' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_view_names()})
