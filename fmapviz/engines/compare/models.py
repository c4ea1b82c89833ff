"""Two models compared layer by layer over the same images: CKA, channel health, predictions.

:func:`compare` runs both models over ``data`` once, batch by batch, each through a
:class:`~fmapviz.engines.compare.tap.Tap` (per-channel statistics and pooled features folded inside
the forward pass, so memory does not grow with the number of images); the models' top-1
predictions are compared per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...data import file_batches, image_batches
from ...hooks import LayerSelectors, feature_maps, model_guard
from ...inputs import LoadedImage, default_transform, model_device
from ...models import LoadedModel
from ..channels import ChannelStats
from ..similarity import StreamingCKA
from .blocks import block_layers
from .tap import CompareError, Tap

MAX_SHOWN_IMAGES = 8
"""How many images with different predictions are kept (as tensors) for the figure."""


@dataclass
class ModelComparison:
    """What :func:`compare` found: CKA of every layer pair, channel health, prediction agreement.

    Attributes:
        names: the two models' names.
        layers_a, layers_b: the compared layers (capture keys), shallow to deep.
        cka: (len(layers_a), len(layers_b)) float64 linear CKA over every image.
        stats_a, stats_b: layer → :class:`~fmapviz.engines.channels.ChannelStats` (dead/weak channels).
        pairs: every layer of A with its counterpart in B (same name, else the best CKA match).
        matched: up to 4 of ``pairs`` spread over depth, shown side by side.
        predictions_a, predictions_b: (N,) top-1 class per image, or None when outputs are not (N, K) logits.
        count: images seen.
        sources: the image files, when ``data`` was files.
        example: index of the image whose maps are in ``maps_a`` / ``maps_b`` (the first disagreement, else 0).
        maps_a, maps_b: matched layer → (1, C, H, W) maps of the example image.
        shown: up to :data:`MAX_SHOWN_IMAGES` images (index, tensor as model A saw it) whose predictions differ.
        categories: class names of model A, when known.
    """

    names: tuple[str, str]
    layers_a: list[str]
    layers_b: list[str]
    cka: torch.Tensor
    stats_a: dict[str, ChannelStats]
    stats_b: dict[str, ChannelStats]
    pairs: list[tuple[str, str]]
    matched: list[tuple[str, str]]
    predictions_a: torch.Tensor | None
    predictions_b: torch.Tensor | None
    count: int
    sources: list[str] | None = None
    example: int = 0
    maps_a: dict[str, torch.Tensor] = field(default_factory=dict)
    maps_b: dict[str, torch.Tensor] = field(default_factory=dict)
    shown: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    categories: list[str] | None = None
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def differing(self) -> list[int]:
        """Indices of the images whose top-1 predictions differ."""
        if self.predictions_a is None or self.predictions_b is None:
            return []
        return torch.nonzero(self.predictions_a != self.predictions_b).flatten().tolist()

    @property
    def agreement(self) -> float | None:
        """Share of images with the same top-1 prediction (None without class outputs)."""
        if self.predictions_a is None or self.predictions_b is None:
            return None
        return float((self.predictions_a == self.predictions_b).double().mean())

    def similarity(self, layer_a: str, layer_b: str) -> float:
        """CKA of one layer pair."""
        return float(self.cka[self.layers_a.index(layer_a), self.layers_b.index(layer_b)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (CKA matrix, dead/weak counts, agreement)."""
        return {
            "models": list(self.names),
            "images": self.count,
            "layers_a": self.layers_a,
            "layers_b": self.layers_b,
            "cka": [[round(float(v), 6) for v in row] for row in self.cka],
            "matched": [list(pair) for pair in self.matched],
            "dead_a": {name: len(stats.dead_channels) for name, stats in self.stats_a.items()},
            "dead_b": {name: len(stats.dead_channels) for name, stats in self.stats_b.items()},
            "weak_a": {name: len(stats.weak_channels) for name, stats in self.stats_a.items()},
            "weak_b": {name: len(stats.weak_channels) for name, stats in self.stats_b.items()},
            "agreement": self.agreement,
            "differing": [self.sources[i] if self.sources else i for i in self.differing],
        }


def _model_and_transform(model: nn.Module | LoadedModel, transform: Callable | None) -> tuple[nn.Module, Callable]:
    if isinstance(model, LoadedModel):
        return model.model, transform or model.transform
    return model, transform or default_transform()


def _logits(output: Any) -> torch.Tensor | None:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    logits = getattr(output, "logits", output)
    return logits if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] > 1 else None


def compare(
    model_a: nn.Module | LoadedModel,
    model_b: nn.Module | LoadedModel,
    data: Any,
    layers_a: LayerSelectors | None = None,
    layers_b: LayerSelectors | None = None,
    *,
    transform_a: Callable | None = None,
    transform_b: Callable | None = None,
    batch_size: int = 32,
    grid: int = 1,
    weak_ratio: float = 0.1,
    names: tuple[str, str] | None = None,
) -> ModelComparison:
    """Compare two models layer by layer over the same images: CKA, channel health, predictions.

    Args:
        model_a, model_b: the models (``nn.Module`` or :class:`~fmapviz.models.LoadedModel`); any
            architectures, e.g. a float model and its pruned or dynamically quantized copy. Left untouched.
        data: images: a folder, files, a glob list, a (N,3,H,W) tensor or an iterable of batches
            (read through :func:`fmapviz.data.image_batches`, folders searched recursively).
        layers_a, layers_b: layer selectors (default :func:`block_layers` of each model).
        transform_a, transform_b: preprocessing of image files per model (default: the
            LoadedModel's transform, else ImageNet 224 px).
        batch_size: images per forward pass (files and tensors).
        grid: spatial pooling before CKA (see :mod:`fmapviz.engines.similarity`).
        weak_ratio: threshold for weak channels (see :class:`~fmapviz.engines.channels.ChannelStats`).
        names: labels of the two models (default their LoadedModel names, else "A" and "B").

    Returns:
        A :class:`ModelComparison`; draw it with :func:`fmapviz.views.compare.show_cka` and friends.

    Raises:
        CompareError: the models' own transforms give inputs of different sizes, a model cannot
            run on its inputs, no images, or fewer than 2 images.
        LayerNotFoundError: a layer selector matches nothing.
        ImageLoadError, TypeError, ValueError: ``data`` cannot be read as images (see
            :func:`fmapviz.data.image_batches`).

    Example:
        >>> import copy
        >>> from torch.nn.utils import prune
        >>> pruned = copy.deepcopy(model)
        >>> _ = prune.l1_unstructured(pruned.features[3].conv[0][0], "weight", 0.5)  # half of a conv's weights
        >>> result = fmapviz.compare(model, pruned, "photos/")
        >>> round(result.similarity("features.2", "features.2"), 2), result.similarity("features.3", "features.3") < 1
        (1.0, True)
    """
    explicit = transform_a is not None or transform_b is not None
    net_a, transform_a = _model_and_transform(model_a, transform_a)
    net_b, transform_b = _model_and_transform(model_b, transform_b)
    labels = names or tuple(
        m.name if isinstance(m, LoadedModel) else label for m, label in ((model_a, "A"), (model_b, "B"))
    )
    tap_a = Tap(net_a, layers_a if layers_a is not None else block_layers(net_a), f"Model {labels[0]}", grid)
    tap_b = Tap(net_b, layers_b if layers_b is not None else block_layers(net_b), f"Model {labels[1]}", grid)
    files, batches = image_batches(data, [transform_a, transform_b], batch_size, recursive=True)
    cka: StreamingCKA | None = None
    predictions: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    shown: list[tuple[int, torch.Tensor]] = []
    count = 0
    with model_guard(net_a), model_guard(net_b), torch.no_grad():
        for x_a, x_b in batches:
            if not explicit and x_a.shape[1:] != x_b.shape[1:]:
                raise CompareError(
                    f"The models expect inputs of different sizes ({labels[0]}: {tuple(x_a.shape[1:])}, "
                    f"{labels[1]}: {tuple(x_b.shape[1:])}); compare shows both the same images: "
                    "pass one size both accept (CLI --size) or transform_a= and transform_b=."
                )
            features_a, output_a = tap_a.run(x_a)
            features_b, output_b = tap_b.run(x_b)
            if cka is None:
                keys_a, keys_b = list(features_a), list(features_b)
                cka = StreamingCKA([(f"a:{ka}", f"b:{kb}") for ka in keys_a for kb in keys_b])
            cka.update({**{f"a:{k}": v for k, v in features_a.items()}, **{f"b:{k}": v for k, v in features_b.items()}})
            logits_a, logits_b = _logits(output_a), _logits(output_b)
            if logits_a is not None and logits_b is not None and logits_a.shape == logits_b.shape:  # same classes
                top_a, top_b = logits_a.argmax(dim=1).cpu(), logits_b.argmax(dim=1).cpu()
                predictions[0].append(top_a)
                predictions[1].append(top_b)
                for offset in torch.nonzero(top_a != top_b).flatten().tolist()[: MAX_SHOWN_IMAGES - len(shown)]:
                    shown.append((count + offset, x_a[offset].detach().cpu().clone()))
            count += len(x_a)
    if cka is None or count == 0:
        raise CompareError("No images to compare: data is empty.")
    if count < 2:
        raise CompareError("CKA needs at least 2 images; pass more data.")
    stats_a, stats_b = tap_a.stats(weak_ratio), tap_b.stats(weak_ratio)
    layers_a_keys, layers_b_keys = list(stats_a), list(stats_b)
    matrix = cka.matrix([f"a:{k}" for k in layers_a_keys], [f"b:{k}" for k in layers_b_keys])
    pred_a = torch.cat(predictions[0]) if len(predictions[0]) and sum(map(len, predictions[0])) == count else None
    pred_b = torch.cat(predictions[1]) if pred_a is not None else None
    pairs = _pair_layers(layers_a_keys, layers_b_keys, matrix)
    matched = _spread(pairs)
    example = shown[0][0] if shown else 0
    maps_a, maps_b = _example_maps(data, files, example, (net_a, transform_a), (net_b, transform_b), matched)
    loaded_a = model_a if isinstance(model_a, LoadedModel) else None
    return ModelComparison(
        names=labels,
        layers_a=layers_a_keys,
        layers_b=layers_b_keys,
        cka=matrix,
        stats_a=stats_a,
        stats_b=stats_b,
        pairs=pairs,
        matched=matched,
        predictions_a=pred_a,
        predictions_b=pred_b,
        count=count,
        sources=files,
        example=example,
        maps_a=maps_a,
        maps_b=maps_b,
        shown=shown,
        categories=loaded_a.categories if loaded_a else None,
        mean_std=(loaded_a.mean, loaded_a.std) if loaded_a else None,
    )


def _pair_layers(layers_a: list[str], layers_b: list[str], cka: torch.Tensor) -> list[tuple[str, str]]:
    """Same names when the models share them, else each layer of A with its best CKA match in B."""
    shared = [name for name in layers_a if name in layers_b]
    if shared:
        return [(name, name) for name in shared]
    return [(name, layers_b[int(cka[i].argmax())]) for i, name in enumerate(layers_a)]


def _spread(pairs: list[tuple[str, str]], limit: int = 4) -> list[tuple[str, str]]:
    """Up to ``limit`` of ``pairs``, evenly spread from shallow to deep."""
    if len(pairs) <= limit:
        return pairs
    picks = torch.linspace(0, len(pairs) - 1, limit).round().long().tolist()
    return [pairs[i] for i in dict.fromkeys(picks)]


def _example_maps(
    data: Any, files: list[str] | None, index: int, side_a: tuple, side_b: tuple, matched: list
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Maps of one image (``index``) at the matched layers of both models (two short forwards)."""
    if isinstance(data, LoadedImage):
        data = data.tensor
    if files is not None:
        inputs = next(file_batches([files[index]], [transform for _, transform in (side_a, side_b)], 1))
    elif isinstance(data, torch.Tensor):
        inputs = [data[index : index + 1]] * 2
    else:
        return {}, {}  # an iterable of batches may not be replayable
    result = []
    for (model, _), x, layers in zip((side_a, side_b), inputs, zip(*matched)):
        device = model_device(model)
        with model_guard(model):
            maps = feature_maps(model, x.to(device), list(dict.fromkeys(_module_of(name) for name in layers)))
        result.append({name: maps[name].cpu() for name in layers if name in maps and maps[name].ndim == 4})
    return result[0], result[1]


def _module_of(key: str) -> str:
    return key.split("#")[0].split(":")[0]
