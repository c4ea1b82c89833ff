"""load_model: torchvision models and weights, user factories, checkpoints, TorchScript."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import nn
from torchvision.transforms._presets import ImageClassification

from .errors import ModelLoadError, closest_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A model ready to run: in eval mode, with the preprocessing and labels that belong to it."""

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    categories: list[str] | None
    name: str
    weights: str | None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")


def default_transform() -> ImageClassification:
    """ImageNet preprocessing: resize to 256, centre-crop 224, normalize (used when weights say nothing)."""
    return ImageClassification(crop_size=224, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_model(
    spec: str | nn.Module,
    weights: str | None = "DEFAULT",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    *,
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """Load a model with its preprocessing transform and class names.

    Args:
        spec: a torchvision model name (``"mobilenet_v2"``), a user factory
            ``"path/to/file.py:factory"`` or ``"package.module:factory"``, a TorchScript
            archive, or an ``nn.Module``.
        weights: for torchvision names, ``"DEFAULT"``, an enum name such as
            ``"IMAGENET1K_V1"``, or None for random weights. Ignored otherwise.
        checkpoint: a state dict file loaded into the model (``module.`` prefixes from
            DataParallel and ``_orig_mod.`` from torch.compile are stripped).
        device: where to put the model (default: leave it where it is).
        trust_checkpoint: unpickle arbitrary objects from ``checkpoint``; only for files you trust.

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        ModelLoadError: unknown name or weights, weights neither cached nor downloadable
            (the message names the file and where to put it), unreadable or mismatched checkpoint.

    Example:
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> loaded.categories[954]
        'banana'
    """
    transform: Callable = default_transform()
    categories = None
    weights_name = None
    if isinstance(spec, nn.Module):
        model, name = spec, type(spec).__name__
    elif ":" in spec and not Path(spec).is_file():
        model, name = _from_factory(spec), spec
    elif Path(spec).is_file():
        model, name = _from_torchscript(Path(spec)), Path(spec).name
    else:
        name = spec
        enum = _weights_enum(spec, weights)
        model = _torchvision_model(spec, enum)
        if enum is not None:
            transform, categories, weights_name = enum.transforms(), enum.meta.get("categories"), enum.name
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, trust=trust_checkpoint)
    if device is not None:
        model.to(device)
    model.eval()
    mean = tuple(getattr(transform, "mean", IMAGENET_MEAN))
    std = tuple(getattr(transform, "std", IMAGENET_STD))
    return LoadedModel(model, transform, categories, name, weights_name, mean, std)


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
        return torchvision.models.get_model(name, weights=enum)
    except (URLError, OSError, RuntimeError) as error:
        if (checkpoints / file_name).is_file():
            raise ModelLoadError(f"Cached weights {checkpoints / file_name} are unreadable ({error}).") from None
        raise ModelLoadError(
            f"Weights {type(enum).__name__}.{enum.name} are not cached and could not be downloaded "
            f"({type(error).__name__}). Put {file_name} (from {enum.url}) in {checkpoints}/ "
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


def _from_torchscript(path: Path) -> nn.Module:
    if not zipfile.is_zipfile(path) or not any("/code/" in n for n in zipfile.ZipFile(path).namelist()):
        raise ModelLoadError(
            f"'{path}' is not a TorchScript archive. "
            f"For a state dict, pass the model spec and checkpoint={str(path)!r}."
        )
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise ModelLoadError(f"Cannot load TorchScript archive '{path}': {error}") from None


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
        reason = str(error).splitlines()[0]
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
