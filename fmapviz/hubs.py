"""Models from timm and Hugging Face by name: ``timm:NAME[.TAG]``, ``hf:ORG/REPO`` or ``hf:FOLDER``.

Each comes with the library's own preprocessing and class names. timm models get the transform of
timm's data config (``resolve_data_config`` + ``create_transform``: size, crop, interpolation,
mean, std) and the class names of timm's dataset info (the first synonym of each ImageNet label,
as torchvision names them). Hugging Face models are read with ``AutoModelForImageClassification``;
their ``AutoImageProcessor`` becomes the same steps as torchvision calls (resize, centre crop,
rescale, normalize; processors with steps of their own are called as they are) and
``config.id2label`` gives the class names. The class names are those of the classifier head, so
random weights keep them.

Weights are read from the library's cache first, without network. They are downloaded only when
they are not cached and the hub answers; otherwise :class:`~fmapviz.errors.ModelLoadError` names
the cache folder and the files it looked for. timm and transformers are optional
(``pip install 'fmapviz[timm]'`` / ``'fmapviz[hf]'``) and imported only here, when such a model is loaded.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as F

from .errors import ModelLoadError, WeightsNotFoundError, closest_names
from .inputs import to_rgb

HUB_PREFIXES = ("timm:", "hf:")
PROBE_PICTURE = (320, 320)  # the transform's output size is read from a blank picture this big
REACH_TIMEOUT_S = 3.0
_TRUE = ("1", "ON", "YES", "TRUE")
MODEL_FILES = "config.json and model.safetensors (or pytorch_model.bin)"


@dataclass(frozen=True)
class HubTransform:
    """A hub library's preprocessing of one picture (converted to RGB first), with the attributes fmapviz reads.

    ``steps`` is timm's ``create_transform`` result, :class:`ProcessorSteps`, or a call of the
    Hugging Face processor itself; ``size`` is the (H, W) it gives a square picture.
    """

    steps: Callable[[Any], torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]

    @property
    def crop_size(self) -> list[int]:
        return list(self.size)

    def __call__(self, image: Any) -> torch.Tensor:
        return self.steps(to_rgb(image) if isinstance(image, Image.Image) else image)


@dataclass(frozen=True)
class ProcessorSteps:
    """What a Hugging Face torchvision-backend image processor does to one PIL picture or uint8 (C, H, W) tensor.

    ``resize`` is None, ``("shortest", edge)`` (the shorter side to ``edge``, the other in
    proportion) or ``("exact", height, width)``; ``crops`` are centre crops applied in order.
    ``scale`` multiplies the pixels (None: not rescaled); ``mean``/``std`` normalize (None: not).
    Rescaling and normalizing are fused as the processor fuses them, so the tensors are equal.
    """

    resize: tuple[Any, ...] | None
    crops: tuple[tuple[int, int], ...]
    interpolation: F.InterpolationMode
    scale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def __call__(self, image: Any) -> torch.Tensor:
        pixels = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
        if self.resize is not None:
            pixels = F.resize(
                pixels, self._resized(*pixels.shape[-2:]), interpolation=self.interpolation, antialias=True
            )
        for height, width in self.crops:
            pixels = _centre_crop(pixels, height, width)
        if self.mean is not None:
            factor = 1.0 if self.scale is None else 1.0 / self.scale
            mean, std = [m * factor for m in self.mean], [s * factor for s in self.std]
            return F.normalize(pixels.to(torch.float32), mean, std)
        return pixels * self.scale if self.scale is not None else pixels

    def _resized(self, height: int, width: int) -> list[int]:
        if self.resize[0] == "exact":
            return [self.resize[1], self.resize[2]]
        edge, short, long = self.resize[1], min(height, width), max(height, width)
        other = int(edge * long / short)
        return [edge, other] if height <= width else [other, edge]


@dataclass
class HubModel:
    """What a hub gives for one spec: the model, its transform and class names, which weights, fixed size or not.

    ``fixed_size`` is None where the library does not say (:func:`fmapviz.load_model` then tries a larger input).
    """

    model: nn.Module
    transform: HubTransform
    categories: list[str] | None
    weights: str | None
    fixed_size: bool | None


def is_hub_spec(spec: str) -> bool:
    """Whether ``spec`` names a timm or Hugging Face model (``timm:...`` or ``hf:...``)."""
    return spec.startswith(HUB_PREFIXES)


def load_hub_model(spec: str, weights: str | bool | None = "DEFAULT") -> HubModel:
    """Build a ``timm:`` or ``hf:`` model with the library's preprocessing and class names.

    Args:
        spec: ``"timm:NAME"`` or ``"timm:NAME.TAG"`` (e.g. ``"timm:convnext_tiny.fb_in1k"``),
            ``"hf:ORG/REPO"`` or ``"hf:FOLDER"`` (a folder written by ``save_pretrained``).
        weights: ``"DEFAULT"`` or True for the pretrained weights, None, False or ``"none"`` for
            random ones (timm builds them offline; Hugging Face still reads the config and
            preprocessor files).

    Raises:
        ModelLoadError: the library is not installed (the message names the ``pip install``), an
            unknown name, other weights than these, weights neither cached nor downloadable, a
            folder with no model.
    """
    kind, _, name = spec.partition(":")
    pretrained = _wants_pretrained(spec, weights)
    if kind == "timm":
        return _timm_model(spec, name, pretrained)
    return _hf_model(spec, name, pretrained)


def _wants_pretrained(spec: str, weights: str | bool | None) -> bool:
    if weights is None or weights is False or str(weights).lower() == "none":
        return False
    if weights is True or str(weights).upper() == "DEFAULT":
        return True
    tag_hint = " (name the weights in the spec: timm:NAME.TAG)" if spec.startswith("timm:") else ""
    raise ModelLoadError(f"Unknown weights '{weights}' for {spec}: pass DEFAULT or none{tag_hint}.")


def _library(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelLoadError(
            f"{extra}: models need {module}, which is not installed: pip install 'fmapviz[{extra}]'."
        ) from None


def _timm_model(spec: str, name: str, pretrained: bool) -> HubModel:
    timm = _library("timm", "timm")
    if not timm.is_model(name):
        hint = ", ".join(closest_names(name, timm.list_models())) or "resnet50, convnext_tiny"
        raise ModelLoadError(f"Unknown timm model '{name}'. Closest: {hint}. See timm.list_models().")
    try:
        config = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:  # an unknown pretrained tag
        tags = ", ".join(timm.list_pretrained(f"{name.partition('.')[0]}.*")) or "none"
        raise ModelLoadError(f"{spec}: {_first_line(error)} Pretrained: {tags}.") from None
    if pretrained and config is None:
        raise ModelLoadError(f"{spec}: timm has no pretrained weights for it; pass --weights none (weights=None).")
    model = _timm_pretrained(spec, name, config) if pretrained else timm.create_model(name, pretrained=False)
    data_config = timm.data.resolve_data_config({}, model=model)
    steps = timm.data.create_transform(**data_config)
    return HubModel(
        model,
        _hub_transform(steps, data_config["mean"], data_config["std"]),
        _timm_categories(timm, model),
        f"{config.architecture}.{config.tag}" if pretrained and config.tag else (name if pretrained else None),
        bool(model.pretrained_cfg.get("fixed_input_size", False)),
    )


def _timm_pretrained(spec: str, name: str, config: Any) -> nn.Module:
    """timm's pretrained model, from the cache when it is there, downloaded only when not and the hub answers."""
    import timm

    if config.hf_hub_id:
        files = [config.hf_hub_filename] if config.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        looked_for, where, variables, url = " or ".join(files), _hf_cache(), "HF_HUB_CACHE/HF_HOME", _hf_endpoint()
        try:
            with _hf_offline():
                return timm.create_model(name, pretrained=True)
        except OSError:
            pass  # not cached
    else:
        looked_for, where = os.path.basename(config.url), Path(torch.hub.get_dir()) / "checkpoints"
        variables, url = "TORCH_HOME", config.url
        if (where / looked_for).is_file():
            return timm.create_model(name, pretrained=True)
    if not _reachable(url):
        what = f"{config.hf_hub_id} ({looked_for})" if config.hf_hub_id else looked_for
        raise _not_cached(spec, what, where, variables, url)
    try:
        return timm.create_model(name, pretrained=True)
    except OSError as error:
        raise ModelLoadError(
            f"{spec}: cannot download {looked_for} ({type(error).__name__}: {_first_line(error)})"
        ) from None


def _timm_categories(timm: ModuleType, model: nn.Module) -> list[str] | None:
    subset = timm.data.infer_imagenet_subset(model)
    if subset is None:
        return None
    descriptions = timm.data.ImageNetInfo(subset).label_descriptions()
    return [description.split(", ")[0] for description in descriptions]


def _hf_model(spec: str, name: str, pretrained: bool) -> HubModel:
    transformers = _library("transformers", "hf")
    folder = Path(name).expanduser()
    local = folder.is_dir()
    if not local and name.startswith(("/", ".", "~")):
        raise ModelLoadError(f"{spec}: folder {folder} does not exist.")
    source = str(folder) if local else name
    try:
        processor = _hf_read(
            spec, source, local, transformers.AutoImageProcessor.from_pretrained, "preprocessor_config.json"
        )
        if pretrained:
            model = _hf_read(
                spec, source, local, transformers.AutoModelForImageClassification.from_pretrained, MODEL_FILES
            )
        else:
            config = _hf_read(spec, source, local, transformers.AutoConfig.from_pretrained, "config.json")
            model = transformers.AutoModelForImageClassification.from_config(config)
    except ValueError as error:  # a config of no image classifier
        raise ModelLoadError(f"{spec}: {_first_line(error)}") from None
    labels = model.config.id2label or {}
    categories = [str(labels[index]) for index in sorted(labels)]
    if categories == [f"LABEL_{index}" for index in range(len(categories))]:
        categories = None  # placeholders, not names
    return HubModel(
        model,
        processor_transform(processor),
        categories,
        (str(folder) if local else name) if pretrained else None,
        None,
    )


def _hf_read(spec: str, source: str, local: bool, read: Callable[..., Any], looked_for: str) -> Any:
    """``read(source)`` from the cache or folder, downloaded only when not cached and the hub answers."""
    try:
        with _hf_offline():
            return read(source, local_files_only=True)
    except OSError as error:
        if local:
            raise ModelLoadError(f"{spec}: {source} has no {looked_for} ({_first_line(error)})") from None
    if not _reachable(_hf_endpoint()):
        raise _not_cached(spec, f"{source} ({looked_for})", _hf_cache(), "HF_HUB_CACHE/HF_HOME", _hf_endpoint())
    try:
        return read(source)
    except OSError as error:
        raise ModelLoadError(f"{spec}: {_first_line(error)}") from None


def processor_transform(processor: Any) -> HubTransform:
    """A Hugging Face image processor as a transform of one picture, giving the tensor the processor gives.

    Processors with the usual steps (resize to a size or a shortest edge, ConvNeXt's crop ratio,
    centre crop, rescale, normalize) become :class:`ProcessorSteps`; others are called as they are.

    Example:
        >>> transform = processor_transform(AutoImageProcessor.from_pretrained("microsoft/resnet-50"))
        >>> transform(picture).shape
        torch.Size([3, 224, 224])
    """
    normalized = processor.do_normalize and processor.image_mean is not None
    mean, std = (processor.image_mean, processor.image_std) if normalized else ((0.0,) * 3, (1.0,) * 3)
    return _hub_transform(_processor_steps(processor), mean, std)


def _processor_steps(processor: Any) -> Callable[[Any], torch.Tensor]:
    """The processor as :class:`ProcessorSteps` where its steps are the usual ones, else a call of the processor."""
    import transformers
    from transformers.image_processing_backends import TorchvisionBackend
    from transformers.image_utils import pil_torch_interpolation_mapping

    kind = type(processor)
    convnext = kind is transformers.ConvNextImageProcessor
    size = processor.size
    plain_size = size is not None and bool(size.shortest_edge) != bool(size.height and size.width)
    plain_size = plain_size and not (size.longest_edge or size.max_height or getattr(size, "max_pixels", None))
    own_steps = not issubclass(kind, TorchvisionBackend) or (not convnext and _has_own_steps(kind, TorchvisionBackend))
    if own_steps or not plain_size or getattr(processor, "do_pad", False):
        return _ProcessorCall(processor)
    resize, crops = None, []
    if processor.do_resize:
        if convnext and size.shortest_edge < 384:  # ConvNeXt's own rule: resize by crop_pct, crop the edge
            resize, crops = ("shortest", int(size.shortest_edge / processor.crop_pct)), [(size.shortest_edge,) * 2]
        elif convnext:
            resize = ("exact", size.shortest_edge, size.shortest_edge)
        else:
            resize = ("shortest", size.shortest_edge) if size.shortest_edge else ("exact", size.height, size.width)
    if getattr(processor, "do_center_crop", False):
        crops.append((processor.crop_size.height, processor.crop_size.width))
    interpolation = pil_torch_interpolation_mapping.get(processor.resample, F.InterpolationMode.BILINEAR)
    return ProcessorSteps(
        resize,
        tuple(crops),
        interpolation,
        processor.rescale_factor if processor.do_rescale else None,
        tuple(processor.image_mean) if processor.do_normalize else None,
        tuple(processor.image_std) if processor.do_normalize else None,
    )


def _has_own_steps(kind: type, backend: type) -> bool:
    """Whether a processor class defines a step of its own between it and the ``backend`` it derives from."""
    steps = ("resize", "_preprocess", "preprocess", "center_crop", "rescale_and_normalize", "__call__")
    return any(step in vars(cls) for cls in kind.__mro__[: kind.__mro__.index(backend)] for step in steps)


@dataclass(frozen=True)
class _ProcessorCall:
    """The Hugging Face processor called on one picture (processors whose steps are their own)."""

    processor: Any

    def __call__(self, image: Any) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt").pixel_values[0]


def _hub_transform(steps: Callable[[Any], torch.Tensor], mean: Any, std: Any) -> HubTransform:
    size = tuple(steps(Image.new("RGB", PROBE_PICTURE)).shape[-2:])
    return HubTransform(steps, tuple(float(m) for m in mean), tuple(float(s) for s in std), size)


def _centre_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Hugging Face's centre crop: pad a side that is too short with zeros, crop from the floor of the offset."""
    rows, cols = pixels.shape[-2:]
    if height > rows or width > cols:
        pad_h, pad_w = max(height - rows, 0), max(width - cols, 0)
        pixels = F.pad(pixels, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)
        rows, cols = pixels.shape[-2:]
    return F.crop(pixels, (rows - height) // 2, (cols - width) // 2, height, width)


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Hugging Face Hub calls in the block read the cache only: huggingface_hub's HF_HUB_OFFLINE switch, set
    for the block and restored after it (the libraries have no cache-only argument for every call)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _reachable(url: str) -> bool:
    """Whether ``url``'s host takes a connection (never under HF_HUB_OFFLINE; behind a proxy, assumed so)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=REACH_TIMEOUT_S).close()
    except (OSError, TypeError):
        return False
    return True


def _not_cached(spec: str, what: str, where: Path, variables: str, url: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{spec}: {what} is not in the cache {where} and {_host(url)} is unreachable; copy it there, or set "
        f"{variables} to a cache holding it (--weights none: random weights)."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
