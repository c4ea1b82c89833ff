"""load_image and denormalize: the model-ready tensor and a display image aligned with it."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError
from .models import IMAGENET_MEAN, IMAGENET_STD, default_transform

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ImageSource = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class LoadedImage:
    """A batch of images: ``tensor`` goes to the model, ``display`` is what to draw under overlays.

    ``display`` is (N,3,H,W) in [0,1] with exactly the geometry of ``tensor``: it is
    ``tensor`` with the normalization undone (a grayscale tensor repeated over three
    channels), so a map upsampled to H×W lines up pixel for pixel after any resize or crop.
    """

    tensor: torch.Tensor
    display: torch.Tensor
    names: list[str]


def load_image(
    src: ImageSource | Sequence[ImageSource],
    transform: Callable[[Any], torch.Tensor] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> LoadedImage:
    """Read one image, a list, a folder or a glob into a model-ready batch.

    Args:
        src: a path, a folder, a glob (``"photos/*.jpg"``), a PIL image, a numpy array
            (H,W) or (H,W,C) — uint8, uint16 (16-bit), bool, floats in [0,1] or values in
            [0,255] — a tensor (H,W), (C,H,W) or (N,C,H,W) with the same value ranges, or a
            list of these.
        transform: preprocessing from PIL image to tensor, usually ``loaded_model.transform``;
            default: resize 256, centre-crop 224, ImageNet normalization.
        mean, std: the normalization inside ``transform``, to build the display image;
            read from the transform's ``mean``/``std`` attributes when not given.

    Returns:
        A :class:`LoadedImage` with ``tensor`` (N,3,H,W), ``display`` (N,3,H,W) in [0,1] and names.

    Raises:
        ImageLoadError: a file is missing, unreadable, not an image or a decompression bomb;
            a folder or glob holds no image; images end up with different sizes; an empty list;
            an array or tensor of another shape, with no pixels, or with values outside those ranges.

    Example:
        >>> image = fmapviz.load_image("assets/chelsea.png", loaded.transform)
        >>> image.tensor.shape, image.display.shape
        (torch.Size([1, 3, 224, 224]), torch.Size([1, 3, 224, 224]))
    """
    transform = transform or default_transform()
    mean = tuple(mean if mean is not None else getattr(transform, "mean", IMAGENET_MEAN))
    std = tuple(std if std is not None else getattr(transform, "std", IMAGENET_STD))
    pictures = [(name, picture) for item in _as_list(src) for name, picture in _expand(item)]
    tensors = []
    for name, picture in pictures:
        tensor = transform(picture)
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise ImageLoadError(f"The transform turned '{name}' into {type(tensor).__name__}, not a (C,H,W) tensor.")
        tensors.append(tensor)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ImageLoadError(
            f"Images have different sizes after the transform ({sorted(shapes)}). "
            "Use a transform that crops to one size."
        )
    batch = torch.stack(tensors)
    display = denormalize(batch, mean, std).expand(-1, 3, -1, -1)
    return LoadedImage(batch, display.contiguous(), [name for name, _ in pictures])


def denormalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` and clamp to [0,1]; works on (3,H,W) and (N,3,H,W).

    Example:
        >>> photo = fmapviz.denormalize(x, loaded.mean, loaded.std)  # back to [0, 1] for display
        >>> tuple(photo.shape), float(photo.min()) >= 0.0, float(photo.max()) <= 1.0
        ((1, 3, 224, 224), True, True)
    """
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(shape)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(shape)
    return (tensor * std_t + mean_t).clamp(0, 1)


def _as_list(src: Any) -> list[Any]:
    if isinstance(src, (list, tuple)):
        if not src:
            raise ImageLoadError("No images given: pass a path, a folder, a glob, an image or a list of them.")
        return list(src)
    if isinstance(src, torch.Tensor) and src.ndim == 4:
        return list(src)
    if isinstance(src, torch.Tensor) and src.ndim not in (2, 3):
        raise ImageLoadError(
            f"Cannot use a tensor of shape {tuple(src.shape)} as images: expected (H,W), (C,H,W) or (N,C,H,W)."
        )
    return [src]


def _expand(item: Any) -> list[tuple[str, Image.Image]]:
    if isinstance(item, Image.Image):
        return [("image", to_rgb(item))]
    if isinstance(item, np.ndarray):
        return [("array", _array_to_pil(item))]
    if isinstance(item, torch.Tensor):
        pixels = item.detach().cpu()
        return [("tensor", _array_to_pil((pixels.permute(1, 2, 0) if pixels.ndim == 3 else pixels).numpy()))]
    path = Path(item)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageLoadError(f"Folder '{path}' holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        return [(str(p), read_image_file(p)) for p in files]
    if any(char in str(item) for char in "*?[") and not path.exists():
        files = sorted(glob.glob(str(item)))
        if not files:
            raise ImageLoadError(f"No file matches '{item}'. Check the pattern.")
        return [(f, read_image_file(f)) for f in files]
    return [(str(path), read_image_file(path))]


def read_image_file(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied; refuse decompression bombs.

    Raises:
        ImageLoadError: naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"Cannot read image '{path}': no such file.")
    if path.is_dir():
        raise ImageLoadError(f"Cannot read image '{path}': it is a folder.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                return to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(f"Refusing image '{path}': {error}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"Cannot read image '{path}': not an image format PIL recognizes.") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageLoadError(f"Cannot read image '{path}': {error} (the file may be truncated or corrupt).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha is composited on white, 16-bit and float are rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "F" and array.max() <= 1.0:
            top = 1.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"Cannot use an array of shape {array.shape} as an image: expected (H,W), (H,W,3) or (H,W,4)."
        )
    if array.size == 0:
        raise ImageLoadError(f"Cannot use an array of shape {array.shape} as an image: it has no pixels.")
    if array.dtype != np.uint8:
        array = (np.asarray(array, dtype=np.float64) / _value_range(array) * 255.0 + 0.5).astype(np.uint8)
    return to_rgb(Image.fromarray(array))


def _value_range(array: np.ndarray) -> float:
    """The top of an array's pixel scale: 1 (floats in [0,1], bool), 255 (0-255 values), 65535 (uint16)."""
    if array.dtype == np.bool_:
        return 1.0
    if array.dtype == np.uint16:
        return 65535.0
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if not np.isfinite(array).all() or low < 0:
        raise ImageLoadError(
            f"Cannot use an array with values in [{low:g}, {high:g}] as an image: pixels must be finite and >= 0 "
            "(in [0, 1], [0, 255] or uint16). Undo any normalization first."
        )
    if high <= 1.0 and np.issubdtype(array.dtype, np.floating):
        return 1.0
    if high <= 255.0:
        return 255.0
    raise ImageLoadError(
        f"Cannot use an array with values up to {high:g} as an image: scale it to [0, 1] or [0, 255] "
        "(or pass uint16 for 16-bit pixels)."
    )
