"""Everything that goes into a model, in one place.

* :func:`list_images`: the image files of paths, folders (``recursive=`` for sub-folders) and globs.
* :func:`read_image_file`: one image file as an RGB picture (EXIF applied, decompression bombs refused).
* :func:`load_image`: files, folders, globs, PIL images, numpy arrays and tensors into a
  model-ready batch plus a display image aligned with it pixel for pixel;
  :func:`transform_images` and :func:`stack_images` make and check such a batch.
* :class:`Preprocess`, :func:`default_transform`: ImageNet-style
  preprocessing (RGB or grayscale) from public ``torchvision.transforms.v2`` calls;
  :func:`normalization` reads the mean and std inside any transform;
  :func:`model_device` says where a model's inputs must go.

Many images in batches (tensors, Datasets, DataLoaders, folders read a batch at a time): :mod:`fmapviz.data`.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .errors import ImageLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ImageSource = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
PathSource = str | os.PathLike | Sequence[str | os.PathLike]


def list_images(data: PathSource, *, recursive: bool = False) -> list[str]:
    """The image files named by ``data``: a file, a folder, a glob, or a list of these.

    Folders and globs give their files with an image suffix (:data:`IMAGE_SUFFIXES`), sorted;
    a file named explicitly is kept whatever its suffix.

    Args:
        data: a path, a folder, a glob (``"photos/*.jpg"``, ``"photos/**/*.png"``) or a list of them.
        recursive: also search the sub-folders of folders (and let ``**`` in globs cross folders).

    Returns:
        The file paths, in the order given, each folder or glob sorted.

    Raises:
        ImageLoadError: a path does not exist, a folder or glob holds no image, the list is empty.

    Example:
        >>> fmapviz.inputs.list_images("photos/", recursive=True)[:2]
        ['photos/cats/1.jpg', 'photos/cats/2.jpg']
    """
    files: list[str] = []
    for item in path_list(data, ImageLoadError("The list of images is empty; pass at least one file, folder or glob.")):
        path = Path(item)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            listed = sorted(str(p) for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not listed:
                where = "or its sub-folders " if recursive else ""
                raise ImageLoadError(f"Folder '{path}' {where}holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        elif is_glob(item) and not path.exists():
            matches = sorted(glob.glob(str(item), recursive=recursive))
            listed = [m for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES]
            if not listed:
                raise ImageLoadError(f"No image file matches '{item}'. Check the pattern.")
        elif not path.exists():
            raise ImageLoadError(f"Cannot read image '{path}': no such file or folder.")
        else:
            listed = [str(path)]
        files += listed
    return files


def path_list(data: PathSource, empty: Exception) -> list[str | os.PathLike]:
    """``data`` as a list of paths (one path is a list of one).

    Raises:
        The ``empty`` exception: the list is empty.
    """
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise empty
    return items


def is_glob(item: object) -> bool:
    """Whether a path string holds glob characters (``*``, ``?``, ``[``)."""
    return isinstance(item, (str, os.PathLike)) and any(char in str(item) for char in "*?[")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize``, centre-crop ``size``, scale to [0,1], normalize.

    Built from public ``torchvision.transforms.v2.functional`` calls; on a PIL image it gives the
    same tensors as the torchvision ImageNet weights' ``transforms()`` with the same settings.
    One value in ``mean``/``std`` gives a 1-channel (grayscale) tensor, three an RGB one. It has
    the ``mean``, ``std``, ``crop_size``, ``resize_size`` and ``interpolation`` attributes that
    torchvision's presets have, so :func:`normalization` reads both alike.
    """

    size: tuple[int, int]
    resize: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR

    @property
    def crop_size(self) -> list[int]:
        return list(self.size)

    @property
    def resize_size(self) -> list[int]:
        return [self.resize]

    def __call__(self, image: Any) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) and getattr(image, "mode", "RGB") not in ("RGB", "L"):
            image = image.convert("RGB")
        image = F.resize(image, [self.resize], interpolation=self.interpolation, antialias=True)
        image = F.center_crop(image, list(self.size))
        tensor = F.to_dtype(F.pil_to_tensor(image) if not isinstance(image, torch.Tensor) else image, scale=True)
        if len(self.mean) == 1 and tensor.shape[0] == 3:
            tensor = F.rgb_to_grayscale(tensor)
        elif len(self.mean) == 3 and tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        return F.normalize(tensor, list(self.mean), list(self.std))


def default_transform(
    size: int | Sequence[int] = 224,
    *,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Preprocess:
    """ImageNet-style preprocessing: resize the short side to ``resize``, centre-crop ``size``, normalize.

    Args:
        size: the crop, ``224`` or ``(H, W)``.
        resize: the short side before cropping (default: the crop's longer side ·256/224, as torchvision).
        mean, std: the normalization (default ImageNet's; one value each for a grayscale model).

    Example:
        >>> default_transform(160)(picture).shape
        torch.Size([3, 160, 160])
    """
    crop = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    resize = round(max(crop) * 256 / 224) if resize is None else resize
    return Preprocess(crop, resize, tuple(mean), tuple(std))


def normalization(
    transform: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a transform normalizes with; ``mean``/``std`` given explicitly win.

    Reads ``mean``/``std`` attributes of the transform itself (a weights' ``transforms()``)
    or of the last step that has them inside a ``Compose``; ImageNet's when none is found.
    """
    found = transform if hasattr(transform, "mean") and hasattr(transform, "std") else None
    for step in getattr(transform, "transforms", None) or []:
        if hasattr(step, "mean") and hasattr(step, "std"):
            found = step
    found_mean = tuple(found.mean) if found is not None else IMAGENET_MEAN
    found_std = tuple(found.std) if found is not None else IMAGENET_STD
    return tuple(mean if mean is not None else found_mean), tuple(std if std is not None else found_std)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without either."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (or buffer); float32 for a model without one.

    Example:
        >>> fmapviz.inputs.model_dtype(torch.nn.Linear(2, 2).half())
        torch.float16
    """
    found = next((t.dtype for t in model.parameters() if t.is_floating_point()), None)
    return found or next((t.dtype for t in model.buffers() if t.is_floating_point()), torch.float32)


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
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of each unreadable file left out (``load_image(..., skip_unreadable=True)``)."""


def load_image(
    src: ImageSource | Sequence[ImageSource],
    transform: Callable[[Any], torch.Tensor] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    recursive: bool = False,
    skip_unreadable: bool = False,
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
            read from the transform (see :func:`normalization`) when not given.
        recursive: also read the images in sub-folders of a folder (see :func:`list_images`).
        skip_unreadable: leave out files that cannot be read, listing them in ``skipped``, instead of raising
            (a missing path still raises, and so do files none of which is readable).

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
    mean, std = normalization(transform, mean, std)
    items = _as_list(src)
    skipped: list[tuple[str, str]] | None = [] if skip_unreadable else None
    pictures = [(name, picture) for item in items for name, picture in _expand(item, recursive, skipped)]
    if not pictures and skipped:
        raise ImageLoadError(f"None of the {len(skipped)} files is a readable image; the first: {skipped[0][1]}")
    batch = transform_images(pictures, transform)
    display = denormalize(batch, mean, std).expand(-1, 3, -1, -1)
    return LoadedImage(batch, display.contiguous(), [name for name, _ in pictures], skipped or [])


UPSAMPLED_LIMIT = 8
"""A photo whose shorter side the transform enlarges more than this many times gets a warning naming it."""


def transform_images(pictures: Sequence[tuple[str, Any]], transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """The (N,C,H,W) batch ``transform`` makes of named pictures (``(name, PIL image)`` pairs).

    Raises:
        ImageLoadError: the transform gives no (C,H,W) tensor (naming the picture), or tensors of different sizes.

    Warns:
        UserWarning: once, naming the pictures upsampled more than :data:`UPSAMPLED_LIMIT` times (a 1x1 photo).
    """
    tensors, blown_up = [], []
    for name, picture in pictures:
        tensor = transform(picture)
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise ImageLoadError(f"The transform turned '{name}' into {type(tensor).__name__}, not a (C,H,W) tensor.")
        tensors.append(tensor)
        if isinstance(picture, Image.Image) and min(picture.size) * UPSAMPLED_LIMIT < min(tensor.shape[-2:]):
            blown_up.append(f"'{name}' ({picture.size[0]}x{picture.size[1]})")
    if blown_up:
        size = "x".join(str(side) for side in tensors[0].shape[-2:])
        warnings.warn(
            f"{len(blown_up)} image(s) much smaller than the model's {size} input, upsampled more than "
            f"{UPSAMPLED_LIMIT}x (its maps show blown-up pixels; use larger photos): {', '.join(blown_up[:3])}"
            + (", ..." if len(blown_up) > 3 else ""),
            stacklevel=3,  # the caller of load_image
        )
    return stack_images(tensors)


def stack_images(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(C,H,W) images of one size as one (N,C,H,W) batch.

    Raises:
        ImageLoadError: the images have different sizes (the message lists them).
    """
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ImageLoadError(
            f"Images have different sizes after the transform ({sorted(shapes)}). "
            "Use a transform that crops to one size."
        )
    return torch.stack(list(tensors))


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


def _expand(item: Any, recursive: bool, skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, Image.Image]]:
    if isinstance(item, Image.Image):
        return [("image", to_rgb(item))]
    if isinstance(item, np.ndarray):
        return [("array", _array_to_pil(item))]
    if isinstance(item, torch.Tensor):
        pixels = item.detach().cpu()
        return [("tensor", _array_to_pil((pixels.permute(1, 2, 0) if pixels.ndim == 3 else pixels).numpy()))]
    pictures = []
    for path in list_images(item, recursive=recursive):
        try:
            pictures.append((path, read_image_file(path)))
        except ImageLoadError as error:
            if skipped is None:
                raise
            skipped.append((path, str(error)))
    return pictures


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
