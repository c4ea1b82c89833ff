"""The site folder as a cache: atomic writes, keys from the model's weights and the settings, the site marker."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import FmapvizError
from ..files import atomic_path, write_json

MARKER = "fmapviz-site.json"
FORMAT = 1
ALPHA_QUALITY = 50  # see-through map layers: lossy alpha halves a smooth fading layer (drive maps: 6.9 -> 3.9 KB)
WEBP_METHOD = 2  # libwebp effort 0-6: 2 encodes 2.4x faster than the default 4 for 4% more bytes (site pictures)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`fmapviz.files.atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or was cut short."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_picture(path: Path, pixels: np.ndarray, quality: int = 80) -> Path:
    """A uint8 (H, W, 3) image as WebP or JPEG (lossy, ``quality``) or PNG (exact), by the suffix of ``path``,
    atomically."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(
            temporary,
            format=Image.registered_extensions()[path.suffix.lower()],
            quality=quality,
            method=WEBP_METHOD,
            alpha_quality=ALPHA_QUALITY,
        )
    return path


def read_tensors(path: Path) -> Any | None:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError, ValueError):
        return None


def weights_digest(model: nn.Module) -> str:
    """A short hash of every parameter and buffer: a changed weight means a new cache."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def key(*parts: Any) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_digest(path: str | os.PathLike) -> str:
    """A short hash of a file's bytes: an image keeps its cached results when it is renamed or moved."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def claim_folder(out: Path, force: bool, photos: list[str]) -> None:
    """Make ``out`` a site folder, refusing a folder with other content unless ``force``; nothing is deleted.

    Raises:
        FmapvizError: ``out`` is a file, holds one of the photos, or is a non-empty folder that is not
            an fmapviz site.
    """
    inside = out.resolve()
    if any(inside in Path(photo).parents for photo in photos):
        raise FmapvizError(f"'{out}' holds the photos being explored; choose another -o/--out for the site.")
    if out.exists() and not out.is_dir():
        raise FmapvizError(f"'{out}' is a file, not a folder; choose another -o/--out.")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()) and not force:
        raise FmapvizError(
            f"'{out}' exists and is not an fmapviz site (no {MARKER}); choose another -o/--out, "
            "or pass --force to write the site into it (nothing there is deleted)."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FmapvizError(f"Cannot create folder '{out}': {error.strerror}. Choose another -o/--out.") from None
    marker = read_json(out / MARKER) or {}
    if marker.get("format", FORMAT) > FORMAT:
        raise FmapvizError(f"'{out}' holds a site of format {marker['format']}; this fmapviz writes {FORMAT}.")
    write_json(out / MARKER, {**marker, "format": FORMAT})


def check_same_site(out: Path, model: str, keys: dict[str, str], force: bool) -> None:
    """Refuse to build into a finished site of another model or other settings unless ``force`` (whose data
    the build would replace); more photos are not other settings.

    Raises:
        FmapvizError: the site's marker names another model or other cache keys, and not ``force``.
    """
    marker = read_json(out / MARKER) or {}
    if force or "keys" not in marker:
        return
    if marker.get("model") != model:
        what = f"model {marker.get('model')}"
    else:
        changed = [stage for stage, value in keys.items() if marker["keys"].get(stage) != value]
        if not changed:
            return
        what = f"other weights or settings ({', '.join(changed)} differ)"
    if what:
        raise FmapvizError(
            f"'{out}' is a site of {what}; choose another -o/--out, or pass --force to replace its data."
        )
