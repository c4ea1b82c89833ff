"""report: compose the engines and the plots into one PNG per image, a manifest.json and an index.html.

A report is a :class:`ReportSpec` (what to show) applied to a model and images. Each
image gives one page: a header (model, weights, image, top-5 predictions), the
feature-map hierarchy, saliency with deletion/insertion scores, channel health and,
with ``actmax=True``, the activation-maximization images of the channels that fired
most on that image.

Every file is written atomically, and after each page the manifest and index are rewritten
to list the pages done so far (``"complete": false`` until the last one). An interrupted
or failed report keeps its finished pages; running it again with the same model and
settings resumes with the pages still missing. A finished report is never overwritten
unless ``force=True``; the input images never are, even then. One run writes a folder at a time.
"""

from __future__ import annotations

import html
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import describe
from ..engines.actmax import maximize
from ..engines.channels import channel_stats
from ..engines.evaluate import deletion, insertion
from ..engines.saliency import METHODS, saliency
from ..errors import FmapvizError
from ..files import FolderLock, refuse_inputs, save_figure, writable_folder, write_json, write_text
from ..hooks import feature_maps, model_guard
from ..inputs import LoadedImage, load_image
from ..layers import LayerInfo, summary
from ..models import LoadedModel, load_model
from ..outputs import output_tensor
from ..plot.page import compose_page, header_figure
from ..progress import Progress
from ..views import show_channel_stats, show_gallery, show_hierarchy, show_saliency


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

    Example:
        >>> spec = fmapviz.ReportSpec(layers=("features.7", "features.14"), top=4, methods=("smoothgrad",))
        >>> spec.top, spec.gradcam_layers
        (4, 3)
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
    """What :func:`report` wrote: one PNG per image (``kept``: by an earlier run), the manifest, the HTML index."""

    pages: list[Path]
    manifest: Path
    index: Path
    timings: dict[str, float] = field(default_factory=dict)
    kept: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


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


PANEL_PIXELS = 1400
# what deleted pixels become and what insertion starts from (named on the page: AUCs depend on them)
DELETION_SUBSTRATE, INSERTION_SUBSTRATE = "black", "blur"
"""Every panel of a page is drawn this wide, so none leaves the page half empty."""


class _Clock:
    """Adds up wall time per stage; ``model`` stages are the computations a report cannot avoid."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.progress: Progress | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress.stage(name)
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
        Errors of the engines for a bad model or image. A failed report keeps its finished pages and
        writes no partial one; running it again resumes.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> quick = fmapviz.ReportSpec(methods=("gradient",), metric_steps=4)  # the default adds SmoothGrad and IG
        >>> fmapviz.report(loaded, "assets/chelsea.png", "report/", spec=quick, progress=False).pages
        [PosixPath('report/chelsea.png')]
    """
    if isinstance(model, nn.Module):  # the user's module: its train/eval modes come back, even on errors
        with model_guard(model, freeze=False):
            return report(load_model(model), images, out, spec=spec, force=force, progress=progress)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    image = images if isinstance(images, LoadedImage) else load_image(images, loaded.transform, skip_unreadable=True)
    for _, reason in image.skipped:
        warnings.warn(f"report skips it: {reason}", stacklevel=2)
    out = Path(out)
    stems = _page_names(image.names)
    manifest_path, index_path = out / "manifest.json", out / "index.html"
    refuse_inputs([out / f"{stem}.png" for stem in stems] + [manifest_path, index_path], image.names)
    writable_folder(out)
    clock = _Clock()
    with FolderLock(out):
        with clock.stage("model: summary"):
            rows = summary(loaded.model, (1, *image.tensor.shape[1:]))
        layers = list(spec.layers) if spec.layers else hierarchy_layers(rows)
        done = _resumable(manifest_path, _identity(loaded, spec, layers), force)
        existing = [out / f"{stem}.png" for stem in stems if (out / f"{stem}.png").exists()]
        existing += [path for path in (manifest_path, index_path) if path.exists()]
        if existing and done is None and not force:
            raise FmapvizError(f"{existing[0]} already exists; pass --force (force=True) to overwrite it.")
        pages: list[Path] = []
        kept: list[Path] = []
        entries: list[dict[str, Any]] = []
        clock.progress = bar = Progress("report", len(stems), enabled=progress)
        for index, stem in enumerate(stems):
            path = out / f"{stem}.png"
            previous = (done or {}).get(image.names[index])
            if previous is not None and previous["page"] == path.name and path.is_file():
                pages.append(path)
                kept.append(path)
                entries.append(previous)  # finished by an earlier, interrupted run
                bar.done(f"{path.name} (kept from an earlier run)")
                continue
            x = image.tensor[index : index + 1].to(loaded.device)
            page, entry = _page(
                loaded, x, image.display[index], image.names[index], layers, rows, spec, clock, progress
            )
            pages.append(save_figure(page, path))
            entries.append({"image": image.names[index], "page": path.name, **entry})
            _write_index(loaded, spec, layers, entries, clock, complete=False, out=out, skipped=image.skipped)
            bar.done(str(path))
        bar.close()
        timings = _write_index(loaded, spec, layers, entries, clock, complete=True, out=out, skipped=image.skipped)
    return ReportResult(pages, manifest_path, index_path, timings, kept, image.skipped)


def _write_index(
    loaded: LoadedModel,
    spec: ReportSpec,
    layers: list[str],
    entries: list[dict],
    clock: _Clock,
    *,
    complete: bool,
    out: Path,
    skipped: Sequence[tuple[str, str]] = (),
) -> dict[str, float]:
    """Write manifest.json and index.html for the pages done so far; returns the timings."""
    total_model = sum(seconds for name, seconds in clock.seconds.items() if name.startswith("model"))
    timings = {**{k: round(v, 3) for k, v in clock.seconds.items()}, "model total": round(total_model, 3)}
    manifest = {**_manifest(loaded, spec, layers, entries, timings), "complete": complete, "skipped": skipped}
    write_json(out / "manifest.json", manifest)
    write_text(out / "index.html", _index_html(loaded, entries))
    return timings


def _identity(loaded: LoadedModel, spec: ReportSpec, layers: list[str]) -> dict[str, Any]:
    """What must match for an earlier run's pages to be reused."""
    return {
        "model": loaded.name,
        "weights": loaded.weights,
        "checkpoint": loaded.checkpoint_sha256,
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "settings": json.loads(json.dumps(asdict(spec))),
        "layers": layers,
    }


def _resumable(manifest_path: Path, identity: dict[str, Any], force: bool) -> dict[str, dict] | None:
    """Entries by image of an unfinished earlier run with the same identity, else None."""
    if force or not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("complete", True):
        return None
    earlier = {key: manifest.get("identity", {}).get(key) for key in identity}
    if earlier != identity:
        raise FmapvizError(
            f"{manifest_path.parent} holds an unfinished report of another model or settings; "
            "pass --force (force=True) to start it over, or choose another -o/--out."
        )
    return {entry["image"]: entry for entry in manifest.get("images", [])}


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
    if not torch.isfinite(probabilities).all():
        warnings.warn(
            f"{loaded.name} gives non-finite outputs (NaN or inf) on {Path(name).name}: its predictions, saliency "
            "and scores are meaningless; check the weights and the input normalization.",
            RuntimeWarning,
            stacklevel=2,
        )
    top = probabilities.topk(min(5, probabilities.numel()))
    predictions = [(_label(categories, int(i)), float(p)) for p, i in zip(top.values, top.indices)]
    target = int(top.indices[0])
    sections: list[tuple[str | None, Any]] = []
    with clock.stage("drawing"):
        facts = [
            f"{loaded.name} · {loaded.describe_weights()}",
            f"image: {Path(name).name}",
            f"input {tuple(x.shape[1:])}, explained class: {predictions[0][0]}",
        ]
        sections.append((None, header_figure(display, facts, predictions, width_pixels=PANEL_PIXELS)))
        # the page's section title names the hierarchy, so the figure has none
        hierarchy = show_hierarchy(maps, display, rows, top=spec.top, title="", width_pixels=PANEL_PIXELS)
        sections.append(("Feature maps, shallow to deep (top channels by mean activation)", hierarchy))
    results, scores = _saliency_results(model, x, target, layers, spec, categories, clock)
    with clock.stage("drawing"):
        captioned = {_saliency_title(result, scores.get(key)): result for key, result in results}
        figure = show_saliency(captioned, display, width_pixels=PANEL_PIXELS)
        sections.append(
            (
                "Saliency: what drives the top class "
                f"(AUC of deletion to {DELETION_SUBSTRATE} ↓, insertion from {INSERTION_SUBSTRATE} ↑)",
                figure,
            )
        )
        stats = channel_stats(maps)
        health = show_channel_stats(stats, width_pixels=PANEL_PIXELS)
        sections.append(("Channel health: dead (never positive) and weak channels", health))
    entry: dict[str, Any] = {
        "predictions": [{"class": label, "probability": round(p, 5)} for label, p in predictions],
        "saliency_scores": scores,
        "saliency_substrates": {"deletion": DELETION_SUBSTRATE, "insertion": INSERTION_SUBSTRATE},
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
            gallery = show_gallery(
                result,
                ncols=len(result.images),
                title=f"{layer}: channels that fired most on this image",
                width_pixels=PANEL_PIXELS,
            )
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
            cam = saliency(model, x, "gradcam", target=target, layers=cam_layers, categories=categories)
            for layer in cam_layers:
                results.append((f"gradcam {layer}", cam.for_layer(layer)))
        for method in spec.methods:
            options = {"seed": spec.seed} if METHODS[method].seeded else {}
            results.append((method, saliency(model, x, method, target=target, categories=categories, **options)))
    scores: dict[str, dict[str, float]] = {}
    if spec.metric_steps:
        with clock.stage("model: deletion/insertion"):
            for key, result in results:
                deleted = deletion(model, x, result, steps=spec.metric_steps, baseline=DELETION_SUBSTRATE)
                inserted = insertion(model, x, result, steps=spec.metric_steps, baseline=INSERTION_SUBSTRATE)
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


def _manifest(
    loaded: LoadedModel, spec: ReportSpec, layers: list[str], entries: list[dict], timings: dict
) -> dict[str, Any]:
    import captum
    import torchvision

    from .. import __version__

    return {
        "model": loaded.name,
        "weights": loaded.weights,
        "checkpoint": {"path": loaded.checkpoint, "sha256": loaded.checkpoint_sha256} if loaded.checkpoint else None,
        "device": describe(loaded.device),  # "cuda:0 (NVIDIA H100 80GB HBM3)", "cpu"
        "versions": {
            "fmapviz": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "captum": captum.__version__,
        },
        "settings": asdict(spec),
        "layers": layers,
        "timings_seconds": timings,
        "identity": _identity(loaded, spec, layers),
        "images": entries,
    }


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
