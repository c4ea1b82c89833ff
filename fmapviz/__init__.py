"""fmapviz: see what a convolutional network sees.

The names here are the ones a notebook calls; everything else lives in its submodule
(``fmapviz.capture.Capture``, ``fmapviz.engines.actmax.ActMaxResult``, ``fmapviz.models.LoadedModel``).
Layers of the package: capture → engines → views → report / CLI.
"""

from . import faithfulness, metrics, targets
from .capture import capture, feature_maps, model_guard
from .compare import compare, compare_checkpoints
from .engines.actmax import maximize, objectives
from .engines.dff import deep_feature_factorization
from .engines.direct import channel_stats
from .engines.explain import explain_channels
from .engines.saliency import saliency
from .engines.training import init_report
from .errors import FmapvizError, ImageLoadError, LayerNotFoundError, ModelLoadError
from .explore import explore
from .images import denormalize, load_image
from .layers import summary
from .models import load_model
from .report import ReportSpec, report
from .scan import channel_page, load_scan, scan
from .views import (
    show_channel_explanation,
    show_channel_page,
    show_channel_stats,
    show_checkpoints,
    show_cka,
    show_compare_health,
    show_concepts,
    show_dead_channels,
    show_disagreements,
    show_gallery,
    show_hierarchy,
    show_init_histograms,
    show_init_report,
    show_maps,
    show_saliency,
    show_side_by_side,
)
from .vocabulary import Unit

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "load_image",
    "denormalize",
    "summary",
    "capture",
    "feature_maps",
    "model_guard",
    "channel_stats",
    "saliency",
    "explain_channels",
    "deep_feature_factorization",
    "explore",
    "maximize",
    "objectives",
    "report",
    "ReportSpec",
    "scan",
    "load_scan",
    "channel_page",
    "show_maps",
    "show_hierarchy",
    "show_channel_stats",
    "show_saliency",
    "show_gallery",
    "show_channel_explanation",
    "show_concepts",
    "show_channel_page",
    "show_dead_channels",
    "Unit",
    "metrics",
    "faithfulness",
    "targets",
    "FmapvizError",
    "ImageLoadError",
    "LayerNotFoundError",
    "ModelLoadError",
    "compare",
    "compare_checkpoints",
    "init_report",
    "show_cka",
    "show_side_by_side",
    "show_compare_health",
    "show_disagreements",
    "show_checkpoints",
    "show_init_report",
    "show_init_histograms",
]
