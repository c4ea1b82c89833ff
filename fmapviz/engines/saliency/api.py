""":func:`saliency`, the one entry point: check the arguments, run the method's compute function, wrap the result;
and :func:`auto_layer`, the layer a layer method uses when ``layers=None``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ...devices import check_model_input, float32_precision
from ...hooks import LayerSelectors, model_guard, module_name, resolve_layers
from ...memory import USABLE_FRACTION, forward_bytes, free_bytes, halving
from ...model_input import accepts_loaded_model, at_least_float32
from ...models import LoadedModel
from . import smoothing
from .layer_search import PROBED_MODULES, SHARED_SEARCHES, LayerSearchCache
from .pipeline import Job
from .registry import method_entry, method_settings
from .result import SaliencyResult
from .targets import TargetSpec, parse_target

AUTO_ROWS_LIMIT = 1024
"""The most rows per chunk an automatic batch size plans on a GPU (IG's 50 steps of 20 images fit in one)."""


def auto_batch_size(device: torch.device, model: nn.Module | None = None, shape: Sequence[int] | None = None) -> int:
    """Rows per chunk for expanded batches (IG steps, SmoothGrad samples, Score-CAM masks): fast on this device.

    On the CPU 8 (larger chunks are no faster there). On a GPU, with ``model`` and the input ``shape``, as many
    rows as the free memory holds (a forward's activations per row, times 3 for the backward; at most
    :data:`AUTO_ROWS_LIMIT`), else 64. :func:`saliency` halves it and retries on out-of-memory.

    Example:
        >>> auto_batch_size(torch.device("cpu"))
        8
    """
    if device.type == "cpu":
        return 8
    free = free_bytes(device)
    per_row = 3 * forward_bytes(model, (1, *shape[1:])) if model is not None and shape is not None else 0
    if not free or not per_row:
        return 64
    return max(1, min(AUTO_ROWS_LIMIT, int(USABLE_FRACTION * free // per_row)))


@accepts_loaded_model(categories="categories")
def saliency(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    method: str = "gradcam",
    target: TargetSpec = "top",
    layers: LayerSelectors | None = None,
    *,
    batch_size: int | Literal["auto"] = "auto",
    categories: Sequence[str] | None = None,
    layer_search: LayerSearchCache | None = None,
    allow_tf32: bool = False,
    **options: Any,
) -> SaliencyResult:
    """Compute a saliency map of ``model`` for input ``x``.

    The model is run in eval mode with frozen parameters (no parameter gradient is ever
    computed) and comes back exactly as it was, hooks removed, even after an error.

    Args:
        model: any image model; its output goes through :func:`fmapviz.outputs.output_tensor`.
        x: ``(N, C, H, W)`` model input (normalized as the model expects).
        method: a key of :data:`fmapviz.engines.saliency.METHODS`.
        target: what to explain; see :mod:`fmapviz.engines.saliency.targets` (``"top"``, a class
            index or name, a unit ``"features.10[17]"``, a callable).
        layers: methods that take a layer: one layer selector or a list (one map each, from a
            single forward and backward pass); a reused module named without ``#k`` means its
            last call (see :mod:`fmapviz.hooks`); None picks the last layer with a 4-D output
            that the target reaches.
        batch_size: rows per chunk for IG steps, SmoothGrad samples and Score-CAM masks; ``"auto"`` picks a
            size that is fast on ``x``'s device (see :func:`auto_batch_size`) and halves it on out-of-memory.
        categories: class names, for class-name targets and ``target_names``.
        layer_search: where ``layers=None`` searches are remembered; by default a cache shared by all calls
            (per model, held weakly, and input shape), so the search runs once per model and input shape.
        allow_tf32: let float32 convolutions and matmuls use TF32 on NVIDIA GPUs (faster, maps differ by ~1e-2);
            by default they run at full float32 precision and the user's settings are restored after.
        **options: the method's options (``METHODS[method].options`` lists them with defaults).

    Returns:
        A :class:`SaliencyResult` with ``(N, K, H, W)`` maps on ``x``'s device.

    Raises:
        ValueError: unknown method or option, bad target, or a layer that does not fit.
        LayerNotFoundError: ``layers`` or a unit target names no module.
        MemoryLimitError: a ``batch_size`` given that does not fit in memory (or one row does not).

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> result = fmapviz.saliency(loaded.model, x, "gradcam", target="tabby", categories=loaded.categories)
        >>> result.maps.shape, result.layers  # layers=None: the last module with a 4-D output
        (torch.Size([1, 1, 224, 224]), ['features'])
    """
    entry = method_entry(method)
    settings = method_settings(method, options)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor; got {getattr(x, 'shape', type(x).__name__)}.")
    check_model_input(model, x)
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be 'auto' or a positive int, not {batch_size!r}.")
    if layers is not None and not entry.takes_layer:
        raise ValueError(f"{method} explains the input and takes no layers; drop layers= or use a CAM method.")
    parsed = parse_target(target, categories)
    if parsed.unit is not None:
        resolve_layers(model, parsed.unit.layer)
    searches = layer_search if layer_search is not None else SHARED_SEARCHES

    def run(rows: int) -> tuple[Job, Any]:
        chosen = resolve_layers(model, layers) if layers is not None else []
        job = Job(model, x, parsed, chosen, rows, settings, searches, bool(chosen))
        if entry.takes_layer and layers is None:
            job.layers = [auto_layer(job, module_name(parsed.unit.layer) if parsed.unit else None)]
        return job, smoothing.run(entry.compute, job)

    with model_guard(model), float32_precision(allow_tf32):
        rows = auto_batch_size(x.device, model, x.shape) if batch_size == "auto" else batch_size
        job, produced = halving(run, rows, what=method, option="batch_size", chosen=batch_size != "auto")
    rows = job.batch_size
    indices = job.indices.detach() if job.indices is not None else None
    names = None
    if categories is not None and indices is not None:
        names = [[categories[int(i)] for i in row] for row in indices.cpu()]
    return SaliencyResult(
        maps=at_least_float32(produced.maps.detach()),
        method=method,
        view=entry.view,
        target=indices,
        target_label=parsed.label,
        target_names=names,
        layers=list(job.layers) if entry.takes_layer else [],
        layer_maps={name: at_least_float32(value.detach()) for name, value in produced.layer_maps.items()},
        attributions=at_least_float32(produced.attributions.detach()) if produced.attributions is not None else None,
        delta=produced.delta.detach() if produced.delta is not None else None,
        settings={"batch_size": rows, **settings},
    )


def auto_layer(job: Job, until: str | None = None) -> str:
    """The layer a layer method uses when ``layers=None``: the last spatial layer the target depends on.

    That is the last module with a 4-D map, unless that map has class tokens (ViT) or the target
    reads a raw output (detection): then the final :data:`PROBED_MODULES` spatial modules become
    ``job.candidates``, all captured in the one Grad-CAM pass, which keeps the last whose map gets
    a non-zero gradient from the (first) target. For torchvision's ``vit_b_16`` this is
    ``encoder.layers.encoder_layer_11.ln_1``: the last block's output reaches the logits only
    through the class token, so its patch maps get no gradient; for a detector with a
    :class:`fmapviz.engines.saliency.targets.BoxScoreTarget` it is ``backbone`` (one map per FPN level, summed).

    Raises:
        ValueError: the model has no layer with a 4-D output.
    """
    search = job.layer_search.search(job.model, job.x, until)
    modules = search.modules
    if not modules:
        raise ValueError("The model has no layer with a 4-D (N,C,H,W) output; pass layers= explicitly.")
    if job.target.raw:
        job.candidates = modules[-PROBED_MODULES:]
    elif search.has_class_tokens:
        # which patch maps reach a logit through the class token is a property of the architecture,
        # not of the class: probe once per model and input shape, then reuse the pick
        if search.probed is not None:
            return search.probed
        job.candidates = modules[-PROBED_MODULES:]
        job.probe_for = search
    return modules[-1]
