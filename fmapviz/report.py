"""report: compose the engines and the plots into one PNG per image, a manifest.json and an index.html.

A report is a :class:`ReportSpec` (what to show) applied to a model and images. Each
image gives one page: a header (model, weights, image, top-5 predictions), the
feature-map hierarchy, saliency with deletion/insertion scores, channel health and,
with ``actmax=True``, the activation-maximization images of the channels that fired
most on that image. A failed report removes what it had written; existing files are
never overwritten unless ``force=True``.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import metrics
from .capture import feature_maps
from .engines.actmax import maximize
from .engines.direct import channel_stats
from .engines.saliency import saliency
from .errors import FmapvizError
from .images import LoadedImage, load_image
from .layers import LayerInfo, summary
from .models import LoadedModel, load_model
from .outputs import output_tensor
from .plot.page import compose_page, header_figure
from .views import show_channel_stats, show_gallery, show_hierarchy, show_saliency


@dataclass(frozen=True)
class ReportSpec:
    """What a report shows. Every field has a default that suits a torchvision classifier.

    Attributes:
        layers: layers of the hierarchy; None picks the deepest block at each resolution.
        top: how many channels the hierarchy draws per layer (the most active ones).
        gradcam_layers: how many of the deepest hierarchy layers get a Grad-CAM map.
        methods: input-space saliency methods drawn after Grad-CAM.
        metric_steps: pixel steps of the deletion/insertion curves (0 turns the scores off).
        actmax: add activation-maximization images of the channels that fired most.
        actmax_top, actmax_steps, actmax_size: how many channels, optimization steps and image size.
        seed: seed for SmoothGrad noise and activation maximization.
    """

    layers: tuple[str, ...] | None = None
    top: int = 6
    gradcam_layers: int = 3
    methods: tuple[str, ...] = ("smoothgrad", "integrated_gradients")
    metric_steps: int = 20
    actmax: bool = False
    actmax_top: int = 6
    actmax_steps: int = 128
    actmax_size: int = 128
    seed: int = 0


@dataclass
class ReportResult:
    """What :func:`report` wrote: one PNG per image, the manifest and the HTML index."""

    pages: list[Path]
    manifest: Path
    index: Path
    timings: dict[str, float] = field(default_factory=dict)


def hierarchy_layers(rows: Sequence[LayerInfo], depth: int = 2) -> list[str]:
    """The deepest block at each resolution: one layer per stride, shallow to deep.

    Only modules at most ``depth`` names deep are considered (``features.7``, ``layer3``), so
    the picks are whole blocks rather than single convolutions.
    """
    candidates = [
        row for row in rows if row.geometry is not None and "#" not in row.name and row.name.count(".") < depth
    ]
    names = [row.name for row in candidates]
    deepest: dict[tuple[float, float], str] = {}
    for row in candidates:
        if not any(other.startswith(row.name + ".") for other in names):  # a container repeats its last child
            deepest[row.geometry.stride] = row.name
    return list(deepest.values())


class _Clock:
    """Adds up wall time per stage; ``model`` stages are the computations a report cannot avoid."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def report(
    model: LoadedModel | nn.Module | str,
    images: Any,
    out: str | Path,
    *,
    spec: ReportSpec = ReportSpec(),
    force: bool = False,
    progress: bool = False,
) -> ReportResult:
    """Write a PNG report per image, plus ``manifest.json`` and ``index.html``, into ``out``.

    Args:
        model: a :class:`LoadedModel` (best: it brings its transform and class names), a
            torchvision model name or an ``nn.Module``.
        images: anything :func:`fmapviz.load_image` reads, or a :class:`LoadedImage`.
        out: the output folder (created).
        spec: what to show (see :class:`ReportSpec`).
        force: overwrite files that already exist.
        progress: show progress bars.

    Returns:
        A :class:`ReportResult` with the paths written and the time per stage.

    Raises:
        FmapvizError: the output folder cannot be written, or a file exists and ``force`` is False.
        Errors of the engines for a bad model or image. A failed report removes its partial output.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> fmapviz.report(loaded, "assets/chelsea.png", "report/").pages
        [PosixPath('report/chelsea.png')]
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    image = images if isinstance(images, LoadedImage) else load_image(images, loaded.transform)
    out = Path(out)
    stems = _page_names(image.names)
    targets = [out / f"{stem}.png" for stem in stems] + [out / "manifest.json", out / "index.html"]
    _check_writable(out, targets, force)
    written: list[Path] = []
    clock = _Clock()
    try:
        with clock.stage("model: summary"):
            rows = summary(loaded.model, (1, *image.tensor.shape[1:]))
        layers = list(spec.layers) if spec.layers else hierarchy_layers(rows)
        pages = []
        entries = []
        for index, stem in enumerate(stems):
            x = image.tensor[index : index + 1].to(loaded.device)
            page, entry = _page(
                loaded, x, image.display[index], image.names[index], layers, rows, spec, clock, progress
            )
            path = page.save(out / f"{stem}.png")
            written.append(path)
            pages.append(path)
            entries.append({"image": image.names[index], "page": path.name, **entry})
        total_model = sum(seconds for name, seconds in clock.seconds.items() if name.startswith("model"))
        timings = {**{k: round(v, 3) for k, v in clock.seconds.items()}, "model total": round(total_model, 3)}
        manifest = _write_json(out / "manifest.json", _manifest(loaded, spec, layers, entries, timings))
        written.append(manifest)
        index_path = out / "index.html"
        index_path.write_text(_index_html(loaded, entries))
        written.append(index_path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return ReportResult(pages, manifest, index_path, timings)


def _page(
    loaded: LoadedModel,
    x: torch.Tensor,
    display: torch.Tensor,
    name: str,
    layers: list[str],
    rows: Sequence[LayerInfo],
    spec: ReportSpec,
    clock: _Clock,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    model = loaded.model
    categories = loaded.categories
    with clock.stage("model: forward"):
        maps = feature_maps(model, x, layers, stop_early=False)
        with torch.no_grad():
            probabilities = output_tensor(model(x)).softmax(1)[0]
    top = probabilities.topk(min(5, probabilities.numel()))
    predictions = [(_label(categories, int(i)), float(p)) for p, i in zip(top.values, top.indices)]
    target = int(top.indices[0])
    sections: list[tuple[str | None, Any]] = []
    with clock.stage("drawing"):
        facts = [
            f"{loaded.name}" + (f" · {loaded.weights}" if loaded.weights else " · random weights"),
            f"image: {Path(name).name}",
            f"input {tuple(x.shape[1:])}, explained class: {predictions[0][0]}",
        ]
        sections.append((None, header_figure(display, facts, predictions)))
        hierarchy = show_hierarchy(maps, display, rows, top=spec.top, title="")  # the page's section header says it
        sections.append(("Feature maps, shallow to deep (top channels by mean activation)", hierarchy))
    results, scores = _saliency_results(model, x, target, layers, spec, categories, clock)
    with clock.stage("drawing"):
        captioned = {_saliency_title(result, scores.get(key)): result for key, result in results}
        figure = show_saliency(captioned, display)
        sections.append(("Saliency: what drives the top class (deletion ↓ and insertion ↑ AUC)", figure))
        stats = channel_stats(maps)
        sections.append(("Channel health: dead (never positive) and weak channels", show_channel_stats(stats)))
    entry: dict[str, Any] = {
        "predictions": [{"class": label, "probability": round(p, 5)} for label, p in predictions],
        "saliency_scores": scores,
        "dead_channels": {layer: stat.dead_channels for layer, stat in stats.items()},
        "weak_channels": {layer: stat.weak_channels for layer, stat in stats.items()},
    }
    if spec.actmax:
        layer = layers[-2] if len(layers) > 1 else layers[-1]
        strongest = maps[layer][0].mean((1, 2)).topk(min(spec.actmax_top, maps[layer].shape[1])).indices
        with clock.stage("model: actmax"):
            result = maximize(
                model,
                layer,
                channels=strongest.tolist(),
                size=spec.actmax_size,
                steps=spec.actmax_steps,
                seed=spec.seed,
                progress=progress,
                mean=loaded.mean,
                std=loaded.std,
            )
        with clock.stage("drawing"):
            gallery = show_gallery(result, title=f"{layer}: channels that fired most on this image")
            sections.append(("Activation maximization", gallery))
        entry["actmax_channels"] = {layer: strongest.tolist()}
    with clock.stage("drawing"):
        page = compose_page(sections)
    return page, entry


def _saliency_results(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    layers: list[str],
    spec: ReportSpec,
    categories: list[str] | None,
    clock: _Clock,
) -> tuple[list[tuple[str, Any]], dict[str, dict[str, float]]]:
    results = []
    with clock.stage("model: saliency"):
        cam_layers = layers[-spec.gradcam_layers :] if spec.gradcam_layers else []
        if cam_layers:
            cam = saliency(model, x, "gradcam", target=target, layer=cam_layers, categories=categories)
            for layer in cam_layers:
                results.append((f"gradcam {layer}", cam.for_layer(layer)))
        for method in spec.methods:
            options = {"seed": spec.seed} if method in ("smoothgrad", "integrated_gradients") else {}
            results.append((method, saliency(model, x, method, target=target, categories=categories, **options)))
    scores: dict[str, dict[str, float]] = {}
    if spec.metric_steps:
        with clock.stage("model: deletion/insertion"):
            for key, result in results:
                deleted = metrics.deletion(model, x, result, steps=spec.metric_steps)
                inserted = metrics.insertion(model, x, result, steps=spec.metric_steps)
                scores[key] = {"deletion": float(deleted.auc[0]), "insertion": float(inserted.auc[0])}
    return results, scores


def _saliency_title(result: Any, score: dict[str, float] | None) -> str:
    name = result.method.replace("_", " ")
    if result.layer and isinstance(result.layer, str):
        name += f" · {result.layer}"
    if score:
        name += f"\ndel {score['deletion']:.2f} · ins {score['insertion']:.2f}"
    return name


def _label(categories: list[str] | None, index: int) -> str:
    return categories[index] if categories else f"class {index}"


def _page_names(names: Sequence[str]) -> list[str]:
    stems: list[str] = []
    for position, name in enumerate(names):
        stem = Path(name).stem if name not in ("image", "array", "tensor") else f"image{position}"
        while stem in stems:
            stem += f"_{position}"
        stems.append(stem)
    return stems


def _check_writable(out: Path, targets: Sequence[Path], force: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FmapvizError(f"Cannot create output folder '{out}': {error.strerror}. Choose another -o/--out.") from None
    probe = out / ".fmapviz-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FmapvizError(f"Cannot write into '{out}': {error.strerror}. Choose another -o/--out.") from None
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise FmapvizError(f"{existing[0]} already exists; pass --force (force=True) to overwrite it.")


def _manifest(
    loaded: LoadedModel, spec: ReportSpec, layers: list[str], entries: list[dict], timings: dict
) -> dict[str, Any]:
    import captum
    import torchvision

    from . import __version__

    return {
        "model": loaded.name,
        "weights": loaded.weights,
        "device": str(loaded.device),
        "versions": {
            "fmapviz": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "captum": captum.__version__,
        },
        "settings": asdict(spec),
        "layers": layers,
        "timings_seconds": timings,
        "images": entries,
    }


def _write_json(path: Path, value: dict[str, Any]) -> Path:
    path.write_text(json.dumps(value, indent=2))
    return path


def _index_html(loaded: LoadedModel, entries: list[dict[str, Any]]) -> str:
    title = html.escape(f"fmapviz report: {loaded.name}")
    cards = "\n".join(
        f"<section><h2>{html.escape(Path(entry['image']).name)}</h2>"
        f"<p>{html.escape(entry['predictions'][0]['class'])} ({entry['predictions'][0]['probability']:.1%})</p>"
        f'<a href="{html.escape(entry["page"])}"><img src="{html.escape(entry["page"])}" alt="report page"></a>'
        "</section>"
        for entry in entries
    )
    style = (
        "body{font-family:'DejaVu Sans',sans-serif;margin:2em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}section{margin-bottom:3em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body><h1>{title}</h1>\n{cards}\n<p>See manifest.json for settings, versions and timings.</p></body></html>\n"
    )
