"""load_image: sources, PIL modes, EXIF, bombs, folders, and display alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import fmapviz
from fmapviz.errors import ImageLoadError
from fmapviz.inputs import (
    default_transform,
    denormalize,
    list_images,
    model_device,
    normalization,
    read_image_file,
    to_rgb,
)


def _gradient_image(width: int = 40, height: int = 30) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return Image.fromarray(array)


def test_display_is_pixel_aligned_with_the_tensor_after_resize_and_crop():
    image = _gradient_image(400, 300)
    loaded = fmapviz.load_image(image)
    assert loaded.tensor.shape == loaded.display.shape == (1, 3, 224, 224)
    expected = v2.Compose([v2.PILToTensor(), v2.Resize(256, antialias=True), v2.CenterCrop(224)])(image)
    assert torch.allclose(loaded.display[0], expected.float() / 255, atol=2 / 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB"])
def test_every_pil_mode_becomes_rgb(mode):
    rgb = _gradient_image()
    image = rgb.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(rgb)[..., 0].astype(np.uint16) * 257)
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == rgb.size
    if mode == "I;16":  # 16-bit values are rescaled, not clipped to white
        assert np.abs(np.asarray(converted)[..., 0].astype(int) - np.asarray(rgb)[..., 0]).max() <= 1


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = _gradient_image(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert read_image_file(path).size == (30, 40)


def test_missing_corrupt_and_bomb_files_name_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png.*no such file"):
        fmapviz.load_image(tmp_path / "nope.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageLoadError, match=r"corrupt\.png"):
        fmapviz.load_image(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageLoadError, match=r"notes\.txt.*not an image"):
        fmapviz.load_image(text)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(bomb)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000
    try:
        with pytest.raises(ImageLoadError, match=r"Refusing image .*bomb\.png"):
            fmapviz.load_image(bomb)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_folder_and_glob_give_a_batch(tmp_path):
    for index in range(3):
        _gradient_image(50 + index * 10, 40).save(tmp_path / f"img{index}.png")
    (tmp_path / "readme.txt").write_text("not an image")
    batch = fmapviz.load_image(tmp_path)
    assert batch.tensor.shape == (3, 3, 224, 224) and len(batch.names) == 3
    assert fmapviz.load_image(str(tmp_path / "img[01].png")).tensor.shape[0] == 2
    with pytest.raises(ImageLoadError, match="No image file matches"):
        fmapviz.load_image(str(tmp_path / "*.jpg"))


def test_arrays_and_tensors_are_images_in_unit_range():
    array = np.full((20, 20, 3), 0.5, dtype=np.float32)
    identity = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    loaded = fmapviz.load_image(array, identity, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.allclose(loaded.tensor, torch.full((1, 3, 20, 20), 128 / 255))
    from_tensor = fmapviz.load_image(torch.full((2, 3, 20, 20), 0.5), identity, mean=(0, 0, 0), std=(1, 1, 1))
    assert from_tensor.tensor.shape == (2, 3, 20, 20)
    with pytest.raises(ImageLoadError, match=r"shape \(5, 5, 7\)"):
        fmapviz.load_image(np.zeros((5, 5, 7)))


def test_denormalize_inverts_normalize():
    x = torch.rand(2, 3, 5, 5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalized = v2.Normalize(mean, std)(x)
    assert torch.allclose(denormalize(normalized, mean, std), x, atol=1e-6)


def test_list_images_reads_folders_globs_and_files_with_a_recursive_flag(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for path in (tmp_path / "a" / "1.png", nested / "2.jpg", tmp_path / "a" / "notes.txt"):
        (_gradient_image().save(path) if path.suffix != ".txt" else path.write_text("x"))
    top = tmp_path / "a"
    assert list_images(top) == [str(top / "1.png")]
    assert list_images(top, recursive=True) == [str(top / "1.png"), str(nested / "2.jpg")]
    assert list_images(f"{top}/**/*.jpg", recursive=True) == [str(nested / "2.jpg")]
    assert list_images([top / "notes.txt", top]) == [str(top / "notes.txt"), str(top / "1.png")]
    with pytest.raises(ImageLoadError, match="sub-folders holds no image"):
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        list_images(tmp_path / "empty", recursive=True)
    with pytest.raises(ImageLoadError, match="No images given"):
        fmapviz.load_image([])
    assert fmapviz.load_image(top, recursive=True).names == [str(top / "1.png"), str(nested / "2.jpg")]


def test_transforms_are_public_and_match_the_weights_transform():
    import torchvision

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    image = _gradient_image(300, 211)
    torch.testing.assert_close(default_transform()(image), weights(image), atol=1e-5, rtol=0)
    small = default_transform(96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert small(image).shape == (3, 96, 96)
    assert normalization(small) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert normalization(weights) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization(small, mean=(0.1, 0.2, 0.3))[0] == (0.1, 0.2, 0.3)


def test_model_device_of_parameters_buffers_and_neither():
    assert model_device(torch.nn.Conv2d(1, 1, 1)) == torch.device("cpu")
    assert model_device(torch.nn.BatchNorm2d(1, affine=False)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert model_device(torch.nn.BatchNorm2d(1, affine=False).to("meta")) == torch.device("meta")
