"""Channels of a layer: choose and rank them, normalize their maps for display, measure their health.

* :mod:`.rank`: one score per channel (:data:`RANKINGS`) and the channels to show (:func:`select_channels`);
* :mod:`.normalize`: maps scaled to [0, 1] (the normalization modes are explained there) and upsampled;
* :mod:`.statistics`: the one running per-channel accumulator (:class:`RunningChannelStats`) and channel
  health (:class:`ChannelStats`: dead and weak channels);
* :mod:`.streaming`: health over many images, the model run batch by batch (:func:`channel_stats`).

Tensors in, tensors out, nothing drawn; images given as files are read through :mod:`fmapviz.data`.
"""

from .normalize import (
    NORMALIZE_MODES,
    NormalizedMaps,
    as_batch,
    normalize_layers,
    normalize_maps,
    scale_to_unit,
    upsample,
)
from .rank import RANKINGS, RankFunction, channel_scores, select_channels
from .statistics import ChannelStats, RunningChannelStats, RunningLayerStats, compute_channel_stats, stats_from_running
from .streaming import channel_stats, stream_channel_stats

__all__ = [
    "NORMALIZE_MODES",
    "RANKINGS",
    "ChannelStats",
    "NormalizedMaps",
    "RankFunction",
    "RunningChannelStats",
    "RunningLayerStats",
    "as_batch",
    "channel_scores",
    "channel_stats",
    "compute_channel_stats",
    "normalize_layers",
    "normalize_maps",
    "scale_to_unit",
    "select_channels",
    "stats_from_running",
    "stream_channel_stats",
    "upsample",
]
