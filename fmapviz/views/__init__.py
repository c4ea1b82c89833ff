"""Every public ``show_*``: engine results in, :class:`~fmapviz.plot.Figure` out.

Views sit between the engines and the report/CLI: they pick what to draw from an engine's
result (channels, layers, captions, scales) and hand plain tensors and arrays to the drawing
primitives of :mod:`fmapviz.plot`. They never run a model.

* :mod:`.maps`: :func:`show_maps`, :func:`show_hierarchy`, :func:`show_channel_stats`;
* :mod:`.saliency`: :func:`show_saliency`;
* :mod:`.actmax`: :func:`show_gallery`;
* :mod:`.scan`: :func:`show_channel_page`, :func:`show_dead_channels`;
* :mod:`.explain`: :func:`show_channel_explanation`;
* :mod:`.compare`: :func:`show_cka`, :func:`show_side_by_side`, :func:`show_compare_health`,
  :func:`show_disagreements`, :func:`show_checkpoints`, :func:`show_init_report`, :func:`show_init_histograms`;
* :mod:`.concepts`: :func:`show_concepts` (Deep Feature Factorization).
"""

from .actmax import show_gallery
from .compare import (
    show_checkpoints,
    show_cka,
    show_compare_health,
    show_disagreements,
    show_init_histograms,
    show_init_report,
    show_side_by_side,
)
from .concepts import show_concepts
from .explain import show_channel_explanation
from .maps import show_channel_stats, show_hierarchy, show_maps
from .saliency import show_saliency
from .scan import show_channel_page, show_dead_channels

__all__ = [
    "show_channel_explanation",
    "show_channel_page",
    "show_channel_stats",
    "show_checkpoints",
    "show_cka",
    "show_compare_health",
    "show_disagreements",
    "show_init_histograms",
    "show_init_report",
    "show_concepts",
    "show_dead_channels",
    "show_gallery",
    "show_hierarchy",
    "show_maps",
    "show_saliency",
    "show_side_by_side",
]
