"""fmapviz: see what a convolutional network sees."""

from . import metrics, targets
from .capture import Capture, FeatureMaps, capture, feature_maps, model_guard, resolve_layers
from .display import channel_stats, show_channel_stats, show_hierarchy, show_maps
from .engines.actmax import (
    ActMaxResult,
    Objective,
    channel,
    class_logit,
    deepdream,
    direction,
    diversity,
    maximize,
    neuron,
    objectives,
    total_variation,
)
from .engines.saliency import SaliencyResult, saliency
from .errors import FmapvizError, ImageLoadError, LayerNotFoundError, ModelLoadError
from .images import LoadedImage, denormalize, load_image
from .layers import Geometry, LayerInfo, Summary, summary
from .models import LoadedModel, load_model
from .plot.gallery import show_gallery
from .plot.saliency import show_saliency
from .plot.scan import show_channel_page, show_dead_channels
from .report import ReportResult, ReportSpec, report
from .scan import ScanResult, channel_page, load_scan, scan
from .stats import RunningChannelStats

__version__ = "0.1.0"

__all__ = [
    "ActMaxResult",
    "Objective",
    "channel",
    "class_logit",
    "deepdream",
    "direction",
    "diversity",
    "maximize",
    "neuron",
    "objectives",
    "total_variation",
    "Capture",
    "FeatureMaps",
    "FmapvizError",
    "Geometry",
    "ImageLoadError",
    "LayerInfo",
    "LayerNotFoundError",
    "LoadedImage",
    "LoadedModel",
    "ModelLoadError",
    "SaliencyResult",
    "Summary",
    "capture",
    "channel_stats",
    "denormalize",
    "feature_maps",
    "load_image",
    "load_model",
    "metrics",
    "targets",
    "model_guard",
    "resolve_layers",
    "show_gallery",
    "saliency",
    "show_channel_stats",
    "show_hierarchy",
    "show_maps",
    "show_saliency",
    "summary",
    "RunningChannelStats",
    "ReportResult",
    "ReportSpec",
    "report",
    "ScanResult",
    "channel_page",
    "load_scan",
    "scan",
    "show_channel_page",
    "show_dead_channels",
]
