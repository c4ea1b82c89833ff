"""What the commands' run functions share: loading the model and images their options name, messages, and
output paths that are never overwritten without ``--force``.

torch loads inside these functions, when a command runs, not when the CLI is imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fmapviz.inputs import LoadedImage
    from fmapviz.models import LoadedModel


def say(args: argparse.Namespace, text: str) -> None:
    """Print ``text`` unless ``--quiet``."""
    if not args.quiet:
        print(text)


def command_device(args: argparse.Namespace, device: str | None = None) -> torch.device:
    """Where the command runs: ``device`` (a torchrun rank's GPU) or ``--device``, else the best device there is
    (CUDA, then MPS, then the CPU; see :func:`fmapviz.devices.resolve_device`).

    Raises:
        DeviceError: ``--device`` names no device, one this machine lacks, or ``meta`` (exit code 2).
    """
    from fmapviz.devices import resolve_device

    return resolve_device(device or args.device)


def say_device(args: argparse.Namespace, device: torch.device) -> None:
    """``device: cuda:0 (NVIDIA H100 80GB HBM3)`` on stderr, once per command run, unless ``--quiet``."""
    from fmapviz.devices import describe

    if not args.quiet and not getattr(args, "device_said", False):
        print(f"device: {describe(device)}", file=sys.stderr)
    args.device_said = True  # copies of args made for a second model say nothing more


def load_model_from(args: argparse.Namespace, device: str | None = None, use_size: bool = True) -> LoadedModel:
    """The model ``args.model`` names, loaded with the common options (``--weights``, ``--checkpoint``, ...)
    onto :func:`command_device`, which it then names on stderr (:func:`say_device`); a ``--size`` too small
    for the model is refused or warned about (:func:`fmapviz.layers.check_input_size`)."""
    import fmapviz

    chosen = command_device(args, device)
    weights = None if str(args.weights).lower() == "none" else args.weights
    loaded = fmapviz.load_model(
        args.model,
        weights=weights,
        checkpoint=args.checkpoint,
        device=chosen,
        trust_checkpoint=args.trust_checkpoint,
        mean=args.mean,
        std=args.std,
        size=args.size if use_size else None,
        output=args.output_key,
    )
    say_device(args, loaded.device)
    if use_size and args.size is not None:  # a size the model's maps collapse at: refused or warned, naming --size
        from fmapviz.layers import check_input_size

        check_input_size(loaded, option="--size")
    return loaded


def load_images_from(args: argparse.Namespace, loaded: LoadedModel, skip_unreadable: bool = False) -> LoadedImage:
    """The images ``args.images`` names, as ``loaded`` expects them (unreadable ones skipped if ``skip_unreadable``)."""
    import fmapviz

    return fmapviz.load_image(
        args.images, loaded.transform, mean=loaded.mean, std=loaded.std, skip_unreadable=skip_unreadable
    )


def free_path(path: Path, args: argparse.Namespace) -> Path:
    """``path`` if it may be written: its folder is created and writable, and it does not exist unless --force."""
    from fmapviz.errors import FmapvizError
    from fmapviz.files import writable_folder

    if path.exists() and not args.force:
        raise FmapvizError(f"{path} already exists; pass --force to overwrite it.")
    writable_folder(path.parent)
    return path


def free_outputs(args: argparse.Namespace, names: Sequence[str]) -> list[Path]:
    """:func:`free_path` of each of ``names`` in the ``--out`` folder."""
    return [free_path(Path(args.out) / name, args) for name in names]


def safe_name(text: str) -> str:
    """``text`` as part of a file name: anything but letters, digits and ``._-`` becomes ``_``."""
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in text)
