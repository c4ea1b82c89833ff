"""fmapviz: see what a convolutional network sees.

The names here are the ones a notebook calls; everything else lives in its submodule
(``fmapviz.hooks.Capture``, ``fmapviz.engines.actmax.ActMaxResult``, ``fmapviz.models.LoadedModel``).
Layers of the package: capture → engines → views → report / CLI.

``import fmapviz`` is cheap: torch and the engines load on the first use of a name (PEP 562),
so ``fmapviz --help`` and usage errors answer without importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it. A new public name is one line here.
_API: dict[str, str | None] = {  # what a notebook calls: this is __all__
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
    "maximize": "engines.actmax",
    "objectives": "engines.actmax",
    "report": "pages.report",
    "ReportSpec": "pages.report",
    "scan": "engines.scan",
    "load_scan": "engines.scan",
    "channel_page": "pages.channel",
    "show_maps": "views",
    "show_hierarchy": "views",
    "show_channel_stats": "views",
    "show_saliency": "views",
    "show_gallery": "views",
    "show_channel_explanation": "views",
    "show_concepts": "views",
    "show_channel_page": "views",
    "show_dead_channels": "views",
    "Unit": "vocabulary",
    "evaluate": "engines.evaluate",  # the module of deletion, insertion, road, randomization_check …
    "BoxScoreTarget": "engines.saliency.region_targets",
    "MaskTarget": "engines.saliency.region_targets",
    "FmapvizError": "errors",
    "ImageLoadError": "errors",
    "LayerNotFoundError": "errors",
    "ModelLoadError": "errors",
    "compare": "engines.compare",
    "compare_checkpoints": "engines.compare",
    "init_report": "engines.training",
    "show_cka": "views",
    "show_side_by_side": "views",
    "show_compare_health": "views",
    "show_disagreements": "views",
    "show_checkpoints": "views",
    "show_init_report": "views",
    "show_init_histograms": "views",
}
_TYPES: dict[str, str] = {  # results people check with isinstance; reachable, not in __all__
    "LoadedModel": "models",
    "LoadedImage": "inputs",
    "ScanResult": "engines.scan",
}
_MODULES: dict[str, str] = {"evaluate": "engines.evaluate"}  # public names that are modules
_EXPORTS = {**_API, **_TYPES}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # fmapviz.inputs without importing it first
    else:
        raise AttributeError(f"module 'fmapviz' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
