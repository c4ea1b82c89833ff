"""Charts of numbers: a labelled heatmap, curves over an axis, paired bars, a grid of histograms.

Plain arrays in, a :class:`~fmapviz.plot.figures.Figure` out; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .colors import ArrayLike, to_numpy
from .figures import Figure, new_figure


def _array(values: ArrayLike | Sequence[float]) -> np.ndarray:
    return to_numpy(values) if hasattr(values, "shape") else np.asarray(values, dtype=np.float64)


def heatmap(
    values: ArrayLike,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    title: str = "",
    row_title: str = "",
    column_title: str = "",
    value_range: tuple[float, float] = (0.0, 1.0),
    cmap: str = "magma",
    colorbar_label: str = "",
    annotate: bool | None = None,
) -> Figure:
    """A (R, C) matrix as a heatmap with labelled rows (top to bottom) and columns, and a colour bar.

    Args:
        values: the matrix.
        row_labels, column_labels: one label per row / column.
        title, row_title, column_title, colorbar_label: annotations.
        value_range: the values drawn at the two ends of the colormap.
        cmap: colormap name.
        annotate: print each value in its cell (default: when the matrix has at most 16 × 16 cells).

    Raises:
        ValueError: labels of the wrong length.

    Example:
        >>> heatmap(torch.eye(3), ["a", "b", "c"], ["a", "b", "c"]).save("cka.png")
    """
    matrix = _array(values).astype(np.float64)
    rows, columns = matrix.shape
    if len(row_labels) != rows or len(column_labels) != columns:
        raise ValueError(
            f"heatmap of {rows}×{columns} needs as many labels, got {len(row_labels)}×{len(column_labels)}."
        )
    width = min(16.0, 2.4 + 0.34 * columns)
    height = min(16.0, 1.8 + 0.3 * rows)
    figure = new_figure(max(width, 4.5), max(height, 3.5))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap=cmap, vmin=value_range[0], vmax=value_range[1], aspect="auto")
    axes.set_xticks(range(columns), column_labels, rotation=90, fontsize=7)
    axes.set_yticks(range(rows), row_labels, fontsize=7)
    axes.set_xlabel(column_title, fontsize=9)
    axes.set_ylabel(row_title, fontsize=9)
    axes.set_title(title, fontsize=10)
    if annotate if annotate is not None else rows <= 16 and columns <= 16:
        middle = (value_range[0] + value_range[1]) / 2
        for (row, column), value in np.ndenumerate(matrix):
            colour = "black" if value > middle else "white"
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour)
    bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    bar.set_label(colorbar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.tight_layout()
    return Figure(figure)


def curve_panels(
    x_labels: Sequence[str],
    panels: Mapping[str, Mapping[str, ArrayLike]],
    *,
    title: str = "",
    x_title: str = "",
    log_panels: Sequence[str] = (),
    ranges: Mapping[str, tuple[float, float]] | None = None,
    marks: Mapping[str, Sequence[int]] | None = None,
    columns: int = 2,
) -> Figure:
    """Panels of curves over the same x axis: ``panels[panel][series]`` is one value per x label.

    Args:
        x_labels: the x positions' labels (layers, checkpoints).
        panels: panel title → series name → values.
        title, x_title: annotations.
        log_panels: panels drawn with a logarithmic y axis.
        ranges: fixed y ranges per panel.
        marks: panel → x positions to mark with a red cross (flagged layers).
        columns: panels per row.

    Example:
        >>> curve_panels(["l1", "l2"], {"std": {"He": [1, 0.9], "small": [0.1, 0.001]}}, log_panels=["std"])
    """
    count = len(panels)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure = new_figure(4.6 * columns, 3.0 * rows + 0.4)
    grid = figure.subplots(rows, columns, squeeze=False)
    positions = np.arange(len(x_labels))
    step = max(1, len(x_labels) // 24)
    for axes, (name, series) in zip(grid.flat, panels.items()):
        for label, values in series.items():
            line = _array(values).astype(np.float64)
            if name in log_panels:
                line = np.where(line > 0, line, np.nan)
            axes.plot(positions, line, marker="o", markersize=2.5, linewidth=1.2, label=label)
        for position in (marks or {}).get(name, ()):
            axes.axvline(position, color="red", alpha=0.15, linewidth=4)
        if name in log_panels:
            axes.set_yscale("log")
        if ranges and name in ranges:
            axes.set_ylim(*ranges[name])
        axes.set_title(name, fontsize=9)
        axes.set_xticks(positions[::step], [x_labels[i] for i in range(0, len(x_labels), step)], rotation=90)
        axes.tick_params(labelsize=7)
        axes.set_xlabel(x_title, fontsize=8)
        axes.grid(alpha=0.3)
        if len(series) > 1:
            axes.legend(fontsize=6, ncol=1 + len(series) // 8)
    for axes in list(grid.flat)[count:]:
        axes.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return Figure(figure)


def paired_bars(
    labels: Sequence[str],
    series: Mapping[str, Mapping[str, ArrayLike]],
    *,
    title: str = "",
    y_title: str = "",
) -> Figure:
    """Grouped bars per label, one panel per key of ``series`` (e.g. dead / weak), one bar per model.

    Example:
        >>> paired_bars(["conv1", "conv2"], {"dead channels": {"A": [0, 2], "B": [1, 5]}})
    """
    figure = new_figure(min(16.0, 3.0 + 0.35 * len(labels)), 2.6 * len(series) + 0.5)
    grid = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    positions = np.arange(len(labels))
    for axes, (name, bars) in zip(grid, series.items()):
        width = 0.8 / max(1, len(bars))
        for index, (label, values) in enumerate(bars.items()):
            heights = _array(values).astype(np.float64)
            axes.bar(positions + (index - (len(bars) - 1) / 2) * width, heights, width, label=label)
        axes.set_title(name, fontsize=9)
        axes.set_ylabel(y_title, fontsize=8)
        axes.set_xticks(positions, labels, rotation=90, fontsize=7)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=7)
        axes.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return Figure(figure)


def histogram_grid(
    histograms: Sequence[tuple[str, ArrayLike, ArrayLike]],
    *,
    columns: int = 5,
    title: str = "",
    highlight: Sequence[int] = (),
) -> Figure:
    """One small histogram per (caption, counts, bin edges), in a grid; ``highlight`` indices get a red frame.

    Example:
        >>> counts, edges = np.histogram(np.random.randn(1000), 30)
        >>> histogram_grid([("layer 1", counts, edges)])
    """
    if not histograms:
        raise ValueError("histograms is empty; pass (caption, counts, edges) triples.")
    columns = max(1, min(columns, len(histograms)))
    rows = -(-len(histograms) // columns)
    figure = new_figure(2.3 * columns, 1.8 * rows + 0.4)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, (axes, (caption, counts, edges)) in enumerate(zip(grid.flat, histograms)):
        counts, edges = _array(counts).astype(np.float64), _array(edges).astype(np.float64)
        axes.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
        axes.set_yscale("log" if counts.max() > 0 else "linear")
        axes.set_title(caption, fontsize=7, color="red" if index in highlight else "black")
        axes.tick_params(labelsize=5)
        axes.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        axes.xaxis.get_offset_text().set_fontsize(5)
        if index in highlight:
            for spine in axes.spines.values():
                spine.set_edgecolor("red")
    for axes in list(grid.flat)[len(histograms) :]:
        axes.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return Figure(figure)
