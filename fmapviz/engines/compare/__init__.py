"""Two models, or a series of checkpoints, compared layer by layer over the same images.

:func:`compare` runs both models over ``data`` once, batch by batch. Inside each forward pass
(capture's ``reduce=``) every chosen layer's maps are folded into per-channel statistics
(:class:`~fmapviz.engines.channels.statistics.RunningChannelStats`: dead and weak channels) and average-pooled into
features for linear CKA (:class:`~fmapviz.engines.similarity.StreamingCKA`), so memory does
not grow with the number of images. The models' top-1 predictions are compared per image.

:func:`compare_checkpoints` does the same for checkpoints of one architecture: per layer,
the dead-channel fraction, the activation mean and std, and the CKA to the last checkpoint.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import FmapvizError, ModelLoadError
from ...hooks import LayerSelectors, capture, feature_maps, model_guard, resolve_layers
from ...inputs import default_transform, is_glob, list_images, model_device, read_image_file
from ...models import LoadedModel, load_checkpoint, load_model
from ..channels import ChannelStats, stats_from_running
from ..channels.statistics import RunningChannelStats
from ..similarity import StreamingCKA, pooled_features

_SKIPPED = (nn.Dropout, nn.Identity, nn.Flatten, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid)
_SKIPPED += (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Tanh, nn.LeakyReLU)
MAX_SHOWN_IMAGES = 8
"""How many images with different predictions are kept (as tensors) for the figure."""


class CompareError(FmapvizError, ValueError):
    """The two models (or the checkpoint series) cannot be compared as given."""


def block_layers(model: nn.Module) -> list[str]:
    """Default layers to compare: the model's blocks at most two names deep (``features.7``, ``layer3.1``, ``fc``).

    Containers are replaced by their children; activations, pooling, dropout and flatten are left
    out (their maps repeat the layer before).

    Example:
        >>> block_layers(torchvision.models.mobilenet_v2())[:3]
        ['features.0', 'features.1', 'features.2']
    """
    modules = dict(model.named_modules())
    names = [name for name in modules if name and name.count(".") <= 1]
    names = [name for name in names if not any(part.startswith("_") for part in name.split("."))]  # _packed_params
    chosen = [
        name
        for name in names
        if not any(other.startswith(name + ".") for other in names) and not isinstance(modules[name], _SKIPPED)
    ]
    return chosen or resolve_layers(model, "all")


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


@dataclass
class CheckpointSeries:
    """Per-layer curves over a series of checkpoints (rows follow the checkpoint order).

    Attributes:
        checkpoints: the checkpoint files, in order.
        layers: the layers measured.
        dead_fraction, weak_fraction, mean, std, cka_to_final: (checkpoints, layers) float64.
        count: images seen.
    """

    checkpoints: list[str]
    layers: list[str]
    dead_fraction: torch.Tensor
    weak_fraction: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cka_to_final: torch.Tensor
    count: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready curves."""
        values = {"checkpoints": self.checkpoints, "layers": self.layers, "images": self.count}
        for name in ("dead_fraction", "weak_fraction", "mean", "std", "cka_to_final"):
            values[name] = [[round(float(v), 6) for v in row] for row in getattr(self, name)]
        return values


# ------------------------------------------------------------------------------------------ data


def _model_and_transform(model: nn.Module | LoadedModel, transform: Callable | None) -> tuple[nn.Module, Callable]:
    if isinstance(model, LoadedModel):
        return model.model, transform or model.transform
    return model, transform or default_transform()


def _image_batches(data: Any, transforms: Sequence[Callable], batch_size: int) -> tuple[list[str] | None, Iterator]:
    """(files or None, iterator of per-transform batches): one tuple of tensors per batch, one per transform."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise CompareError(f"data as a tensor must be (N,3,H,W), got shape {tuple(data.shape)}.")
        return None, ((chunk,) * len(transforms) for chunk in torch.split(data, batch_size))
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike))
    ):
        files = list_images(data, recursive=True)
        return files, _file_batches(files, transforms, batch_size)
    if isinstance(data, Iterable):
        return None, ((_first_tensor(batch),) * len(transforms) for batch in data)
    raise CompareError(f"Cannot read images from a {type(data).__name__}: pass a folder, files, a tensor or batches.")


def _first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise CompareError(f"Batches must be tensors or (tensor, label) pairs, got {type(batch).__name__}.")
    return batch


def _file_batches(files: list[str], transforms: Sequence[Callable], batch_size: int) -> Iterator[tuple]:
    distinct = list(dict.fromkeys(transforms))
    for start in range(0, len(files), batch_size):
        images = [read_image_file(path) for path in files[start : start + batch_size]]
        stacked = {}
        for transform in distinct:
            tensors = [transform(image) for image in images]
            if len({tuple(t.shape) for t in tensors}) > 1:
                raise CompareError("Images have different sizes after the transform; use one that crops to one size.")
            stacked[transform] = torch.stack(tensors)
        yield tuple(stacked[transform] for transform in transforms)


# -------------------------------------------------------------------------------------- streaming


class _Tap:
    """One model's chosen layers folded into channel statistics and pooled features per forward pass."""

    def __init__(self, model: nn.Module, layers: LayerSelectors, label: str, grid: int) -> None:
        self.model, self.label, self.grid = model, label, grid
        self.names = resolve_layers(model, layers)
        self.running: dict[str, RunningChannelStats] = {}
        self.device = model_device(model)

    def _fold(self, name: str, output: torch.Tensor) -> torch.Tensor:
        self.running.setdefault(name, RunningChannelStats()).update(output)
        return pooled_features(output, self.grid)

    def run(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        try:
            with capture(self.model, self.names, reduce=self._fold) as features:
                output = self.model(x.to(self.device))
        except (RuntimeError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CompareError(
                f"{self.label} cannot run on inputs of shape {tuple(x.shape)} ({reason}). "
                "Give each model inputs of the size it expects (transform_a= / transform_b=, CLI --size)."
            ) from None
        return dict(features), output

    def stats(self, weak_ratio: float) -> dict[str, ChannelStats]:
        return {name: stats_from_running(value, name, weak_ratio) for name, value in self.running.items()}


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
        data: images: a folder, files, a glob list, a (N,3,H,W) tensor or an iterable of batches.
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
    tap_a = _Tap(net_a, layers_a if layers_a is not None else block_layers(net_a), f"Model {labels[0]}", grid)
    tap_b = _Tap(net_b, layers_b if layers_b is not None else block_layers(net_b), f"Model {labels[1]}", grid)
    files, batches = _image_batches(data, [transform_a, transform_b], batch_size)
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
    if files is not None:
        image = read_image_file(files[index])
        inputs = [transform(image).unsqueeze(0) for _, transform in (side_a, side_b)]
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


# ------------------------------------------------------------------------------------ checkpoints


def _natural_key(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def checkpoint_files(checkpoints: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The checkpoint files named by paths or globs, globs sorted naturally (``ckpt_2`` before ``ckpt_10``).

    Raises:
        CompareError: the series is empty, or a path or glob names no file.
    """
    items = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    if not items:
        raise CompareError("The checkpoint series is empty; pass at least two checkpoint files (ckpt_*.pt).")
    files: list[str] = []
    for item in items:
        text = str(item)
        if Path(text).is_file():
            files.append(text)
        elif is_glob(text):
            matches = sorted(glob.glob(text), key=_natural_key)
            if not matches:
                raise CompareError(f"No checkpoint matches '{text}'. Check the pattern.")
            files += matches
        else:
            raise CompareError(f"Checkpoint '{text}' does not exist.")
    return files


def compare_checkpoints(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike],
    factory: str | Callable[[], nn.Module],
    data: Any,
    layers: LayerSelectors | None = None,
    *,
    transform: Callable | None = None,
    batch_size: int = 32,
    grid: int = 1,
    weak_ratio: float = 0.1,
    trust_checkpoint: bool = False,
) -> CheckpointSeries:
    """Dead channels, activation mean/std and CKA to the last checkpoint, per layer, over a checkpoint series.

    All checkpoints run on each batch in turn, so the images are read once and memory stays flat
    in their number (the models are held together: fine for tens of small checkpoints).

    Args:
        checkpoints: state-dict files or globs, in training order (globs sort naturally).
        factory: ``"file.py:build"`` / ``"package.module:build"`` or a callable building the model.
        data: images, as in :func:`compare`.
        layers: layer selectors (default :func:`block_layers`).
        transform: preprocessing of image files (default ImageNet 224 px).
        batch_size, grid, weak_ratio: as in :func:`compare`.
        trust_checkpoint: unpickle arbitrary objects from the checkpoints.

    Returns:
        A :class:`CheckpointSeries`.

    Raises:
        CompareError: an empty series, a missing file, no images, or a model that cannot run on them.
        ModelLoadError: a checkpoint does not fit the factory's model (names the file and the keys).

    Example:
        >>> net = torchvision.models.mobilenet_v2()
        >>> for step in range(3):  # a stand-in for a training run: one layer drifts step by step
        ...     _ = net.features[1].conv[0][0].weight.data.mul_(0.5)
        ...     torch.save(net.state_dict(), f"ckpt_{step}.pt")
        >>> series = fmapviz.compare_checkpoints("ckpt_*.pt", "torchvision.models:mobilenet_v2", "photos/")
        >>> [path.rsplit("/", 1)[-1] for path in series.checkpoints], series.layers[:2]
        (['ckpt_0.pt', 'ckpt_1.pt', 'ckpt_2.pt'], ['features.0', 'features.1'])
    """
    files = checkpoint_files(checkpoints)
    models = [_build(factory) for _ in files]
    for model, path in zip(models, files):
        load_checkpoint(model, path, trust=trust_checkpoint)
        model.eval()
    selectors = layers if layers is not None else block_layers(models[-1])
    taps = [_Tap(model, selectors, f"Checkpoint {Path(path).name}", grid) for model, path in zip(models, files)]
    _, batches = _image_batches(data, [transform or default_transform()], batch_size)
    cka: StreamingCKA | None = None
    count = 0
    with ExitStack() as stack, torch.no_grad():
        for model in models:
            stack.enter_context(model_guard(model))
        for (x,) in batches:
            runs = [tap.run(x)[0] for tap in taps]
            if cka is None:
                keys = list(runs[-1])
                cka = StreamingCKA([(f"{k}:{key}", f"{len(taps) - 1}:{key}") for k in range(len(taps)) for key in keys])
            cka.update({f"{k}:{key}": value for k, run in enumerate(runs) for key, value in run.items()})
            count += len(x)
    if cka is None or count < 2:
        raise CompareError("compare_checkpoints needs at least 2 images; data gave fewer.")
    stats = [tap.stats(weak_ratio) for tap in taps]
    keys = list(stats[-1])
    last = len(taps) - 1

    def table(value: Callable[[int, str], float]) -> torch.Tensor:
        return torch.tensor([[value(k, key) for key in keys] for k in range(len(taps))], dtype=torch.float64)

    return CheckpointSeries(
        checkpoints=files,
        layers=keys,
        dead_fraction=table(lambda k, key: float(stats[k][key].dead.double().mean())),
        weak_fraction=table(lambda k, key: float(stats[k][key].weak.double().mean())),
        mean=table(lambda k, key: float(stats[k][key].mean.double().mean())),
        std=table(lambda k, key: float(_layer_std(taps[k].running[key]))),
        cka_to_final=table(lambda k, key: 1.0 if k == last else cka.cka(f"{k}:{key}", f"{last}:{key}")),
        count=count,
    )


def _layer_std(running: RunningChannelStats) -> float:
    """Std of every value of the layer (all channels pooled), from the per-channel moments."""
    mean = running.mean
    second = running.variance + mean.square()
    return float((second.mean() - mean.mean().square()).clamp_min(0).sqrt())


def _build(factory: str | Callable[[], nn.Module]) -> nn.Module:
    if callable(factory):
        model = factory()
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"The factory returned {type(model).__name__}, not a torch.nn.Module.")
        return model
    return load_model(factory).model
