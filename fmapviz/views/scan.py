"""Scan views: one channel's page and the dead/weak channel overview of a dataset scan.

They read what :func:`fmapviz.scan` computed (and :meth:`ScanResult.examples` reads back from
the images) and hand arrays to :mod:`fmapviz.plot`; they never run a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..plot.colors import ArrayLike
from ..plot.figures import Figure
from ..plot.maps import channel_stats_figure
from ..plot.scan import channel_page_figure

if TYPE_CHECKING:
    from ..engines.scan import ScanResult, TopExample

__all__ = ["show_channel_page", "show_dead_channels"]


def show_channel_page(
    scan_result: ScanResult,
    layer: str,
    channel: int,
    *,
    examples: Sequence[TopExample] | None = None,
    actmax_image: ArrayLike | None = None,
    k: int | None = None,
    ncols: int = 8,
    data: Any = None,
    transform: Any = None,
) -> Figure:
    """One channel on one page: its top-k receptive-field crops, the best image in context, its histogram.

    Panels: the activation-maximization image (when given), the strongest image with the
    window its maximum can see (a box), the histogram of each image's maximum over the whole
    dataset (fixed signed-log bins, the top-k cut marked), and the top-k crops captioned with
    rank and activation value.

    Args:
        scan_result: a :class:`~fmapviz.engines.scan.ScanResult`.
        layer, channel: which unit.
        examples: from ``scan_result.examples(layer, channel)``; read now when omitted
            (``data``/``transform`` are passed on to it).
        actmax_image: (3,H,W) or (H,W,3) image in [0,1] or uint8, e.g. ``fmapviz.maximize(...).images[0]``.
        k: show at most this many crops.
        ncols: crops per row.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`.

    Raises:
        KeyError, IndexError: no such layer or channel. ValueError: no examples to show.

    Example:
        >>> result = fmapviz.scan(loaded, "photos/", "features.14", topk=3)
        >>> fmapviz.show_channel_page(result, "features.14", 37).save("channel37.png")
        PosixPath('channel37.png')
    """
    if examples is None:
        examples = scan_result.examples(layer, channel, data=data, transform=transform, k=k)
    examples = list(examples)[:k] if k else list(examples)
    if not examples:
        raise ValueError(f"No top examples for {layer} channel {channel}: was anything scanned?")
    stats = scan_result.stats(layer)
    counts, edges = scan_result.histogram(layer, channel)
    title = (
        f"{layer} channel {channel}: mean {float(stats.mean[channel]):.3g}, std {float(stats.std[channel]):.3g}, "
        f"max {float(stats.max[channel]):.3g}, {100 * float(stats.fraction_positive[channel]):.1f}% > 0 "
        f"over {scan_result.images} images"
    )
    return channel_page_figure(
        examples, counts, edges, title, topk=scan_result.topk, actmax_image=actmax_image, ncols=ncols
    )


def show_dead_channels(scan_result: ScanResult, weak_ratio: float = 0.1, *, width_inches: float = 9.0) -> Figure:
    """Per layer, each channel's maximum over the dataset with dead (red) and weak (orange) channels marked.

    Args:
        scan_result: a :class:`~fmapviz.engines.scan.ScanResult`.
        weak_ratio: a live channel is weak when its max is below this share of the layer's median max.
        width_inches: figure width.

    Returns:
        A :class:`~fmapviz.plot.figures.Figure`, one panel per scanned layer, counts in each title.

    Example:
        >>> result = fmapviz.scan(loaded, "photos/", ["features.1.conv.0.2", "features.17.conv.0.2"])
        >>> fmapviz.show_dead_channels(result).save("dead.png")
        PosixPath('dead.png')
    """
    return channel_stats_figure(list(scan_result.dead_channels(weak_ratio).values()), width_inches=width_inches)
