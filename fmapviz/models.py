"""load_model: torchvision names and weights, timm and Hugging Face names, user factories, checkpoints."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import nn

from .devices import resolve_device
from .errors import ModelLoadError, WeightsNotFoundError, closest_names
from .hubs import is_hub_spec, load_hub_model
from .inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocess, default_transform, model_device, model_dtype, normalization
from .memory import check_input_fits
from .outputs import select_output

# sizes tried, in order, to find what a user model accepts (common classifier and small-data sizes)
PROBE_SIZES = (224, 32, 28, 64, 96, 128, 256, 299, 384, 512, 16)


@dataclass
class LoadedModel:
    """A model ready to run: in eval mode, with the preprocessing and labels that belong to it.

    ``mean``/``std`` have one value per input channel (one: a grayscale model). ``size`` is the
    (H, W) the transform produces when the model needs a size of its own (user models found to
    reject 224, ``size=`` given, the library's size for timm and Hugging Face models), else None;
    ``fixed_size`` says the model runs at no other size (activation maximization then resizes its
    padded images back to ``size``).
    ``checkpoint`` and ``checkpoint_sha256`` record the file loaded with ``checkpoint=``.
    """

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    categories: list[str] | None
    name: str
    weights: str | None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    size: tuple[int, int] | None = None
    fixed_size: bool = False
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def channels(self) -> int:
        """Input channels the model takes: 1 (grayscale) or 3 (RGB)."""
        return len(self.mean)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the images the transform produces."""
        if self.size is not None:
            return self.size
        crop = getattr(self.transform, "crop_size", [224])
        return (int(crop[0]), int(crop[-1]))

    def describe_weights(self) -> str:
        """What the parameters are: the weights name, the checkpoint file, or ``"random weights"``."""
        if self.checkpoint is not None:
            return f"checkpoint {Path(self.checkpoint).name} (sha256 {self.checkpoint_sha256[:12]})"
        return self.weights or "random weights"


def check_normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """Raise ValueError unless ``mean`` and ``std`` are both None or both 1 or 3 values, ``std`` > 0."""
    if mean is None and std is None:
        return
    if mean is None or std is None:
        raise ValueError("Pass mean and std together (CLI: --mean and --std), one value each or three.")
    if len(mean) not in (1, 3) or len(mean) != len(std):
        raise ValueError(
            f"mean and std need one value each (grayscale model) or three (RGB), got {len(mean)} and {len(std)}."
        )
    if any(value <= 0 for value in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}.")


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``64`` or ``(64, 96)`` as (H, W); None stays None. Raises ValueError for sizes below 1."""
    if size is None:
        return None
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(value) for value in size)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}.")
    return pair


def load_model(
    spec: str | nn.Module,
    weights: str | bool | None = "DEFAULT",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    *,
    trust_checkpoint: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    output: str | None = None,
) -> LoadedModel:
    """Load a model with its preprocessing transform and class names.

    Args:
        spec: a torchvision model name (``"mobilenet_v2"``), a timm model ``"timm:NAME[.TAG]"``
            (``pip install 'fmapviz[timm]'``), a Hugging Face image classifier ``"hf:ORG/REPO"`` or
            ``"hf:FOLDER"`` (``pip install 'fmapviz[hf]'``; see :mod:`fmapviz.hubs`), a user factory
            ``"path/to/file.py:factory"`` or ``"package.module:factory"``, or an ``nn.Module``.
            TorchScript archives and ``torch.export`` programs are refused: fmapviz reads layers
            through module hooks, which compiled graphs do not run; pass the Python model
            (factory plus ``checkpoint=`` of its state dict) instead.
        weights: for torchvision names, ``"DEFAULT"``, an enum name such as
            ``"IMAGENET1K_V1"``, or None for random weights; for ``timm:`` and ``hf:`` models
            ``"DEFAULT"`` (or True) or None (or False). Ignored otherwise.
        checkpoint: a state dict file loaded into the model (``module.`` prefixes from
            DataParallel and ``_orig_mod.`` from torch.compile are stripped).
        device: where to put the model: ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda:1"``...,
            checked by :func:`fmapviz.devices.resolve_device`; default None: leave it where it is built.
        trust_checkpoint: unpickle arbitrary objects from ``checkpoint``; only for files you trust.
            A fully pickled model is read with the factory file's folder on ``sys.path``.
        mean, std: the model's input normalization, one value each (a grayscale model) or three
            (RGB); default: the weights' (or hub library's) own, else ImageNet's.
        size: input size, ``64`` or ``(H, W)``; default: the weights' (or hub library's) own, else
            224 when the model runs on 224, else the first size it runs on among :data:`PROBE_SIZES`.
            Given ``size``, ``mean`` or ``std``, the transform is the ImageNet-style one with them.
        output: the key (or attribute) of the model output to explain when it returns a dict or
            object; default: see :func:`fmapviz.outputs.output_tensor`.

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        ModelLoadError: unknown name or weights, weights neither cached nor downloadable
            (:class:`~fmapviz.errors.WeightsNotFoundError`: the message names the file and where to put
            it), a missing timm or transformers install (the message names the ``pip install``),
            unreadable or mismatched checkpoint, a compiled model, a user model that runs on no probed
            size (or not on ``size``).
        ValueError: ``mean``/``std`` or ``size`` out of range.
        DeviceError: ``device`` names no device, one this machine lacks, or ``meta``.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> loaded.categories[954]
        'banana'
    """
    check_normalization(mean, std)
    target_device = resolve_device(device) if device is not None else None  # a bad device fails before any build
    wanted_size = as_size(size)
    transform: Callable = default_transform()
    categories = None
    weights_name = None
    factory_folder = None
    torchvision_model = False
    hub = None
    if isinstance(spec, nn.Module):
        _refuse_compiled(spec, type(spec).__name__)
        model, name = spec, type(spec).__name__
    elif is_hub_spec(spec):
        hub, name = load_hub_model(spec, weights), spec
        model, transform, categories, weights_name = hub.model, hub.transform, hub.categories, hub.weights
    elif ":" in spec and not Path(spec).is_file():
        model, name = _from_factory(spec), spec
        target = spec.rpartition(":")[0]
        factory_folder = Path(target).resolve().parent if target.endswith(".py") else None
    elif Path(spec).is_file():
        _refuse_archive(Path(spec))
    else:
        name, torchvision_model = spec, True
        enum = _weights_enum(spec, weights)
        model = _torchvision_model(spec, enum)
        if enum is not None:
            transform, categories, weights_name = enum.transforms(), enum.meta.get("categories"), enum.name
    checkpoint_sha256 = None
    if checkpoint is not None:
        with _on_sys_path(factory_folder):
            load_checkpoint(model, checkpoint, trust=trust_checkpoint)
        checkpoint_sha256 = file_sha256(checkpoint)
    if target_device is not None:
        model.to(target_device)
    model.eval()
    mean, std = normalization(transform, mean, std)
    if wanted_size is not None:  # probing allocates an input of this size: refuse one that cannot fit first
        check_input_fits(model, (1, len(mean), *wanted_size), f"{name} at size {wanted_size[0]}x{wanted_size[1]}")
    fixed = False
    library_size = hub.transform.size if hub is not None else None
    if hub is not None:
        fixed = hub.fixed_size
        if fixed is None:  # the library does not say: a fixed-size model fails on a larger input
            fixed = _runs(model, len(mean), (library_size[0] + 32, library_size[1] + 32)) is not None
    elif not torchvision_model:
        wanted_size, fixed = _probe_size(model, name, len(mean), wanted_size)
    if output is not None:
        model = select_output(model, output)
        with torch.no_grad():  # a wrong key fails here, naming the keys there are
            model(torch.zeros(1, len(mean), *(wanted_size or library_size or (224, 224)), device=model_device(model)))
    if wanted_size is not None or len(mean) == 1 or tuple(getattr(transform, "mean", ())) != mean:
        crop = wanted_size or library_size or (224, 224)
        # torchvision's ImageNet presets resize with a margin, then crop; so does the stand-in for a hub's own
        ratio = 256 / 224 if torchvision_model or hub is not None else 1.0
        transform = Preprocess(crop, round(max(crop) * ratio), mean, std)
    size = wanted_size or library_size
    loaded = LoadedModel(model, transform, categories, name, weights_name, mean, std, size, fixed)
    if checkpoint is not None:
        loaded.checkpoint, loaded.checkpoint_sha256 = str(checkpoint), checkpoint_sha256
    return loaded


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _runs(model: nn.Module, channels: int, size: tuple[int, int]) -> Exception | None:
    """None if ``model`` runs on a zero (1, channels, H, W) input, else the error it raised."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, *size, device=model_device(model), dtype=model_dtype(model)))
    except Exception as error:  # any failure means "not this shape"
        return error
    return None


def _probe_size(
    model: nn.Module, name: str, channels: int, size: tuple[int, int] | None
) -> tuple[tuple[int, int] | None, bool]:
    """The size a user model needs (None: the default 224 works) and whether it runs at no other.

    Raises:
        ModelLoadError: the model runs on neither ``size`` nor any probed size; the message says
            which size or channel count would work.
    """
    default = size or (224, 224)
    first = _runs(model, channels, default)
    if first is None:
        if size is None:
            return None, False
        return size, _runs(model, channels, (size[0] + 32, size[1] + 32)) is not None
    found = next((s for s in PROBE_SIZES if (s, s) != default and _runs(model, channels, (s, s)) is None), None)
    tried = f"(1, {channels}, {default[0]}, {default[1]})"
    if found is not None and size is None:
        return (found, found), _runs(model, channels, (found + 32, found + 32)) is not None
    if found is not None:
        raise ModelLoadError(f"{name} does not run on a {tried} input; this model needs --size {found} (size={found}).")
    other = 1 if channels == 3 else 3
    if any(_runs(model, other, (s, s)) is None for s in PROBE_SIZES[:4]):
        values = "one value each" if other == 1 else "three values each"
        raise ModelLoadError(f"{name} takes {other}-channel input: pass --mean and --std with {values} (mean=, std=).")
    reason = str(first).strip().splitlines()[0][:200] if str(first).strip() else type(first).__name__
    if len(kinds := {str(t.dtype)[6:] for t in (*model.parameters(), *model.buffers())}) > 1 or "implemented" in reason:
        raise ModelLoadError(f"{name} does not run in {' and '.join(sorted(kinds))} ({reason}); try model.float().")
    raise ModelLoadError(
        f"{name} does not run on a {tried} input ({type(first).__name__}: {reason}); "
        "pass the size it needs with --size H[,W] (size=)."
    )


@contextmanager
def _on_sys_path(folder: Path | None) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the block (pickled models import their class's module)."""
    if folder is None or str(folder) in sys.path:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))


def _weights_enum(name: str, weights: str | None) -> Any:
    available = torchvision.models.list_models()
    if name not in available:
        hint = ", ".join(closest_names(name, available)) or "resnet18, mobilenet_v2"
        raise ModelLoadError(
            f"Unknown model '{name}'. Closest torchvision names: {hint}. "
            "For your own model pass 'file.py:factory' or 'package.module:factory'."
        )
    if weights is None or str(weights).lower() == "none":
        return None
    enum_class = torchvision.models.get_model_weights(name)
    try:
        return enum_class.verify(weights)
    except (ValueError, KeyError):
        names = ", ".join(["DEFAULT", *(member.name for member in enum_class)])
        raise ModelLoadError(f"Unknown weights '{weights}' for {name}. Available: {names}, or None.") from None


def _torchvision_model(name: str, enum: Any) -> nn.Module:
    if enum is None:
        return torchvision.models.get_model(name, weights=None)
    file_name = os.path.basename(enum.url)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        if not (checkpoints / file_name).is_file():  # offline, fail before torch prints "Downloading:"
            checkpoints.mkdir(parents=True, exist_ok=True)
            digest = torch.hub.HASH_REGEX.search(file_name)
            torch.hub.download_url_to_file(enum.url, str(checkpoints / file_name), digest and digest.group(1))
        return torchvision.models.get_model(name, weights=enum)
    except (URLError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:  # the last two: a broken file
        if (checkpoints / file_name).is_file():
            raise ModelLoadError(f"Cached weights {checkpoints / file_name} are unreadable ({error}).") from None
        cached = [m.name for m in type(enum) if (checkpoints / os.path.basename(m.url)).is_file()]
        other = f" {cached[0]} is cached: pass --weights {cached[0]} (weights='{cached[0]}')." if cached else ""
        raise WeightsNotFoundError(
            f"Weights {type(enum).__name__}.{enum.name} are not cached and could not be downloaded "
            f"({type(error).__name__}).{other} Put {file_name} (from {enum.url}) in {checkpoints}/ "
            "or set TORCH_HOME to a folder whose hub/checkpoints/ holds it."
        ) from None


def _from_factory(spec: str) -> nn.Module:
    target, _, factory_name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelLoadError(f"Model file '{target}' does not exist. Check the path in '{spec}'.")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"Cannot import '{target}' from '{spec}': {type(error).__name__}: {error}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        hint = ", ".join(closest_names(factory_name, found)) or "none"
        raise ModelLoadError(f"'{target}' has no callable '{factory_name}'. Closest: {hint}.")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module.")
    return model


COMPILED_HINT = (
    "fmapviz reads layers through module hooks, which compiled graphs do not run: pass the Python model "
    "instead, e.g. 'my_net.py:build --checkpoint weights.pt' with torch.save(model.state_dict(), 'weights.pt')."
)


def _refuse_archive(path: Path) -> None:
    names = zipfile.ZipFile(path).namelist() if zipfile.is_zipfile(path) else []
    if any("/code/" in name for name in names):
        raise ModelLoadError(f"'{path}' is a TorchScript archive. {COMPILED_HINT}")
    if any(name.endswith("/archive_format") or "serialized_exported_program" in name for name in names):
        raise ModelLoadError(f"'{path}' is a torch.export program (.pt2). {COMPILED_HINT}")
    raise ModelLoadError(
        f"'{path}' is a file, not a model name: for a state dict, pass the model spec and "
        f"checkpoint={str(path)!r} (CLI: my_net.py:build --checkpoint {path})."
    )


def _refuse_compiled(model: nn.Module, name: str) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelLoadError(f"{name} is a TorchScript module. {COMPILED_HINT}")


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, trust: bool = False) -> None:
    """Load a state dict file into ``model`` (``weights_only=True`` unless ``trust``).

    Raises:
        ModelLoadError: the file is missing or unreadable, holds pickled objects while
            ``trust`` is False, or its keys or shapes do not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"Checkpoint '{path}' does not exist.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        if trust or not _is_torch_file(path):
            raise ModelLoadError(f"'{path}' is not a checkpoint torch.load can read ({reason}).") from None
        raise ModelLoadError(
            f"Checkpoint '{path}' holds objects that weights_only loading refuses ({reason}). "
            "If you trust this file, pass trust_checkpoint=True (CLI: --trust-checkpoint)."
        ) from None
    except Exception as error:
        raise ModelLoadError(f"Cannot read checkpoint '{path}': {type(error).__name__}: {error}") from None
    state = _state_dict_of(loaded)
    if state is None:
        raise ModelLoadError(f"Checkpoint '{path}' holds a {type(loaded).__name__}, not a state dict.")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ModelLoadError(
            f"Checkpoint '{path}' does not match the model: {'; '.join(parts)}. "
            "Check that the checkpoint was saved from this architecture."
        )
    model.load_state_dict(state)


def _is_torch_file(path: Path) -> bool:
    """A file torch.save could have written: its zip format, or the legacy pickle's protocol byte."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def _state_dict_of(loaded: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(loaded, nn.Module):
        loaded = loaded.state_dict()
    if not isinstance(loaded, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded.get(key), Mapping):
            return _state_dict_of(loaded[key])
    if not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return None
    return {_strip_prefixes(key): value for key, value in loaded.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key
