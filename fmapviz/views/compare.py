"""Figures for comparisons over training: CKA heatmaps, side-by-side maps and channel health,
checkpoint curves, and initialization curves and histograms. Results in, figures out; no model runs here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..engines.channels import normalize_maps, select_channels, upsample
from ..engines.compare import CheckpointSeries, ModelComparison
from ..engines.training import InitReport
from ..inputs import denormalize
from ..plot.charts import curve_panels, heatmap, histogram_grid, paired_bars
from ..plot.figures import Figure, annotated_grid
from ..plot.maps import channel_grid

__all__ = [
    "show_cka",
    "show_side_by_side",
    "show_compare_health",
    "show_disagreements",
    "show_checkpoints",
    "show_init_report",
    "show_init_histograms",
]


def show_cka(result: ModelComparison, *, title: str | None = None) -> Figure:
    """Linear CKA of every layer of model A (rows) with every layer of model B (columns).

    Example:
        >>> untrained = torchvision.models.mobilenet_v2()
        >>> fmapviz.show_cka(fmapviz.compare(model, untrained, "photos/")).save("cka.png")
        PosixPath('cka.png')
    """
    name_a, name_b = result.names
    return heatmap(
        result.cka,
        result.layers_a,
        result.layers_b,
        title=title or f"Linear CKA over {result.count:,} images\n(1 = same representation up to rotation and scale)",
        row_title=f"{name_a} layers",
        column_title=f"{name_b} layers",
        colorbar_label="linear CKA",
    )


def show_side_by_side(result: ModelComparison, *, top: int = 8, tile: int = 48) -> Figure:
    """Feature maps of the matched layers for one image, model A's row above model B's.

    Both rows show the same channel indices (A's ``top`` channels by mean) when the layers have
    as many channels; otherwise each row shows its own top channels.

    Raises:
        ValueError: the comparison holds no example maps (data was an iterable of batches).

    Example:
        >>> layers = ["features.3", "features.7"]
        >>> result = fmapviz.compare(model, torchvision.models.mobilenet_v2(), "photos/", layers, layers)
        >>> fmapviz.show_side_by_side(result).save("side.png")
        PosixPath('side.png')
    """
    if not result.maps_a or not result.maps_b:
        raise ValueError("This comparison has no example maps (data was a one-pass iterable); pass files or a tensor.")
    rows, labels, titles = [], [], []
    name_a, name_b = result.names
    for layer_a, layer_b in result.matched:
        if layer_a not in result.maps_a or layer_b not in result.maps_b:
            continue
        maps_a, maps_b = result.maps_a[layer_a], result.maps_b[layer_b]
        chosen_a = select_channels(maps_a, f"top:{top}")
        same = maps_a.shape[1] == maps_b.shape[1]
        chosen_b = chosen_a if same else select_channels(maps_b, f"top:{top}")
        for maps, chosen, name, layer in ((maps_a, chosen_a, name_a, layer_a), (maps_b, chosen_b, name_b, layer_b)):
            picked = upsample(maps[:, chosen], (tile, tile), mode="nearest")[0]
            if len(chosen) < top:
                picked = torch.cat([picked, torch.zeros(top - len(chosen), tile, tile)])
            rows.append(normalize_maps(picked.unsqueeze(0), "layer").values[0])
            labels.append(f"{name}\n{layer}")
            titles += [f"c{int(c)}" for c in chosen] + [""] * (top - len(chosen))
    if not rows:
        raise ValueError("No matched layer returned spatial maps; pass layers with (N,C,H,W) outputs.")
    return channel_grid(
        torch.cat(rows),
        titles,
        ncols=top,
        row_labels=labels,
        title=f"Image {result.example}: top {top} channels of {name_a}\n({name_b}: the same indices where it has them)",
        value_range=(0.0, 1.0),
        colorbar_label="activation (per row, scaled)",
    )


def show_compare_health(result: ModelComparison) -> Figure:
    """Dead and weak channel counts per layer pair, the two models side by side.

    Example:
        >>> result = fmapviz.compare(model, torchvision.models.mobilenet_v2(), "photos/")
        >>> fmapviz.show_compare_health(result).save("health.png")
        PosixPath('health.png')
    """
    name_a, name_b = result.names
    labels = [a if a == b else f"{a} ~ {b}" for a, b in result.pairs]

    def counts(kind: str) -> dict[str, list[int]]:
        return {
            name_a: [len(getattr(result.stats_a[a], kind)) for a, _ in result.pairs],
            name_b: [len(getattr(result.stats_b[b], kind)) for _, b in result.pairs],
        }

    return paired_bars(
        labels,
        {"dead channels (never > 0)": counts("dead_channels"), "weak channels": counts("weak_channels")},
        title=f"Channel health over {result.count:,} images",
        y_title="channels",
    )


def show_disagreements(result: ModelComparison) -> Figure:
    """The images (up to 8) whose top-1 predictions differ, captioned with both predictions.

    Raises:
        ValueError: the models agree on every image, or have no class outputs.

    Example:
        >>> untrained = torchvision.models.mobilenet_v2()  # random weights: it disagrees
        >>> result = fmapviz.compare(model, untrained, "photos/", ["features.7"], ["features.7"])
        >>> fmapviz.show_disagreements(result).save("disagreements.png")
        PosixPath('disagreements.png')
    """
    if not result.shown:
        agreement = result.agreement
        reason = "have no class outputs" if agreement is None else "agree on every image"
        raise ValueError(f"Nothing to show: the two models {reason}.")
    tiles, captions = [], []
    name_a, name_b = result.names
    for index, tensor in result.shown:
        image = denormalize(tensor, *result.mean_std) if result.mean_std else tensor
        low, high = float(image.min()), float(image.max())
        tiles.append(((image - low) / max(high - low, 1e-12)).clamp(0, 1))
        a, b = int(result.predictions_a[index]), int(result.predictions_b[index])
        source = result.sources[index].rsplit("/", 1)[-1] if result.sources else f"image {index}"
        captions.append(f"{source}\n{name_a}: {_label(result, a)}\n{name_b}: {_label(result, b)}")
    agreement = result.agreement or 0.0
    return annotated_grid(
        torch.stack(tiles),
        captions,
        ncols=min(4, len(tiles)),
        title=f"{len(result.differing)} of {result.count:,} images predicted differently ({agreement:.1%} agree)",
        tile_pixels=128,
    )


def _label(result: ModelComparison, index: int) -> str:
    return result.categories[index] if result.categories and index < len(result.categories) else str(index)


def show_checkpoints(series: CheckpointSeries) -> Figure:
    """Per-layer CKA to the final checkpoint, dead-channel fraction, activation mean and std against checkpoint order.

    Example:
        >>> net = torchvision.models.mobilenet_v2()
        >>> for step in range(3):  # a stand-in for a training run
        ...     _ = net.features[1].conv[0][0].weight.data.mul_(0.5)
        ...     torch.save(net.state_dict(), f"ckpt_{step}.pt")
        >>> series = fmapviz.compare_checkpoints("ckpt_*.pt", "torchvision.models:mobilenet_v2", "photos/")
        >>> fmapviz.show_checkpoints(series).save("checkpoints.png")
        PosixPath('checkpoints.png')
    """
    names = [path.rsplit("/", 1)[-1] for path in series.checkpoints]

    def per_layer(values: torch.Tensor) -> dict[str, torch.Tensor]:
        return {layer: values[:, index] for index, layer in enumerate(series.layers)}

    return curve_panels(
        names,
        {
            "CKA to the final checkpoint": per_layer(series.cka_to_final),
            "dead-channel fraction": per_layer(series.dead_fraction),
            "activation mean": per_layer(series.mean),
            "activation std": per_layer(series.std),
        },
        title=f"{len(names)} checkpoints over {series.count:,} images, one line per layer",
        x_title="checkpoint",
        ranges={"CKA to the final checkpoint": (0, 1.02), "dead-channel fraction": (0, 1.02)},
    )


def show_init_report(reports: InitReport | Mapping[str, InitReport]) -> Figure:
    """Activation std, gradient RMS, zero fraction and mean per layer: one line per report (e.g. per init).

    Flagged layers of a single report are shaded red.

    Example:
        >>> def plain_cnn(std):
        ...     net = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(6)])
        ...     for conv in net.modules():
        ...         if isinstance(conv, nn.Conv2d):
        ...             _ = nn.init.normal_(conv.weight, std=std)
        ...     return net
        >>> batch = torch.randn(4, 8, 16, 16)
        >>> he, small = fmapviz.init_report(plain_cnn(0.17), batch), fmapviz.init_report(plain_cnn(0.01), batch)
        >>> fmapviz.show_init_report({"He": he, "N(0, 0.01)": small}).save("init.png")
        PosixPath('init.png')
    """
    named = {"model": reports} if isinstance(reports, InitReport) else dict(reports)
    if not named:
        raise ValueError("reports is empty; pass an InitReport or a dict of them.")
    first = next(iter(named.values()))
    layers = [row.layer for row in first.layers]

    def column(attribute: str) -> dict[str, list[float]]:
        return {name: [getattr(row, attribute) for row in report.layers] for name, report in named.items()}

    marks = None
    if len(named) == 1:
        flagged = [index for index, row in enumerate(first.layers) if row.flags]
        marks = {"activation std": flagged, "gradient RMS (backward)": flagged}
    return curve_panels(
        layers,
        {
            "activation std": column("std"),
            "gradient RMS (backward)": column("grad_rms"),
            "fraction of zeros": column("zero_fraction"),
            "activation mean": column("mean"),
        },
        title="Signal through the layers: forward (activations) and backward (gradients)",
        x_title="layer (execution order)",
        log_panels=["activation std", "gradient RMS (backward)"],
        ranges={"fraction of zeros": (0, 1.02)},
        marks=marks,
    )


def show_init_histograms(report: InitReport, *, columns: int = 5) -> Figure:
    """The classic per-layer activation histograms of one report; flagged layers have red captions.

    Example:
        >>> net = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(6)])
        >>> report = fmapviz.init_report(net, torch.randn(4, 8, 16, 16))
        >>> fmapviz.show_init_histograms(report).save("histograms.png")
        PosixPath('histograms.png')
    """
    histograms = []
    for row in report.layers:
        caption = f"{row.layer}: std {row.std:.2g}" + (f"\n{', '.join(row.flags)}" if row.flags else "")
        histograms.append((caption, row.histogram, row.edges))
    flagged = [index for index, row in enumerate(report.layers) if row.flags]
    return histogram_grid(histograms, columns=columns, title="Activation histograms (log counts)", highlight=flagged)
