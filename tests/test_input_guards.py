"""Inputs guarded before they hurt: sizes the model's maps collapse at, photos blown up from a few pixels, batch
sizes that cannot fit, and a device the machine lacks, each refused (or warned about) before any output is made."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from conftest import TinyCNN, hook_count, model_state
from PIL import Image
from test_cli import TINY_MODEL

import fmapviz
from fmapviz.cli import main
from fmapviz.errors import InputSizeError
from fmapviz.layers import check_input_size
from fmapviz.memory import forward_bytes, free_bytes


@pytest.fixture
def tiny_model(tmp_path) -> str:
    path = tmp_path / "tiny_net.py"
    path.write_text(TINY_MODEL)
    return f"{path}:build"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        Image.fromarray((torch.rand(48, 48, 3) * 255).byte().numpy()).save(folder / f"photo{index}.png")
    return folder


def _no_warnings(call) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call()


def test_an_input_on_which_most_maps_are_1x1_is_refused_naming_the_size_and_the_total_stride():
    model = torchvision.models.mobilenet_v2().eval()
    before = model_state(model)
    for size in (3, 16):  # 1x1 from features.2 / features.7 on: most of the network sees one pixel
        with pytest.raises(
            InputSizeError, match=rf"An input of {size}x{size} is too small for MobileNetV2: .*1x1 from"
        ):
            check_input_size(model, (1, 3, size, size), "--size")
    with pytest.raises(InputSizeError, match=r"; pass --size 32 or more\.$"):
        check_input_size(model, (1, 3, 3, 3), "--size")
    with pytest.warns(UserWarning, match=r"24x24 is smaller than the total stride 32 of MobileNetV2 .* --size 32"):
        check_input_size(model, (1, 3, 24, 24), "--size")  # only the last stage's maps are 1x1
    for size in (32, 224, 4000):  # 4000: traced on the meta device, nothing allocated
        _no_warnings(lambda size=size: check_input_size(model, (1, 3, size, size)))
    assert hook_count(model) == 0 and all(torch.equal(a, b) for a, b in zip(before[2], model_state(model)[2]))


def test_an_input_smaller_than_the_first_kernel_is_refused_and_the_threshold_comes_from_the_model():
    resnet = torchvision.models.resnet18().eval()
    with pytest.raises(InputSizeError, match=r"5x5 is smaller than the 7x7 kernel of conv1, the first layer"):
        check_input_size(resnet, (1, 3, 5, 5))
    with pytest.warns(UserWarning, match="total stride 32 of ResNet"):
        check_input_size(resnet, (1, 3, 16, 16))
    tiny = TinyCNN().eval()  # total stride 2: 4 pixels are plenty, 1 is less than its 3x3 kernel
    _no_warnings(lambda: check_input_size(tiny, (1, 3, 4, 4)))
    with pytest.raises(InputSizeError, match=r"1x1 is smaller than the 3x3 kernel of features\.0"):
        check_input_size(tiny, (1, 3, 1, 1))


def test_cli_size_below_what_the_model_can_use_is_exit_2_or_a_warning(tiny_model, photos, tmp_path, capsys):
    photo = str(photos / "photo0.png")
    common = ["--weights", "none", "--device", "cpu", "--quiet"]
    args = ["maps", "mobilenet_v2", photo, "--layers", "features.1", *common, "-o", str(tmp_path / "small")]
    assert main([*args, "--size", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: An input of 3x3 is too small for MobileNetV2")
    assert "--size 32 or more" in err and not list(tmp_path.glob("small/*.png"))
    assert main([*args, "--size", "24"]) == 0
    assert "warning: An input of 24x24 is smaller than the total stride 32" in capsys.readouterr().err
    assert main(["maps", tiny_model, photo, "--layers", "0", *common, "--size", "1", "-o", str(tmp_path / "t")]) == 2
    assert "smaller than the 3x3 kernel of 0" in capsys.readouterr().err


def test_photos_much_smaller_than_the_model_input_are_named_in_one_warning(tmp_path):
    sizes = {"pixel": (1, 1), "icon": (20, 24), "cifar": (32, 32)}  # 224 px from 1, 20 and 32: 224x, 11x, 7x
    paths = {name: tmp_path / f"{name}.png" for name in sizes}
    for name, size in sizes.items():
        Image.new("RGB", size, (200, 30, 30)).save(paths[name])
    with pytest.warns(UserWarning, match=r"2 image\(s\) much smaller than the model's 224x224 input") as caught:
        image = fmapviz.load_image([str(path) for path in paths.values()])
    messages = [str(w.message) for w in caught if "much smaller" in str(w.message)]
    assert len(messages) == 1 and f"'{paths['pixel']}' (1x1)" in messages[0] and "(20x24)" in messages[0]
    assert "cifar" not in messages[0] and image.tensor.shape == (3, 3, 224, 224)
    _no_warnings(lambda: fmapviz.load_image(str(paths["cifar"])))  # upsampled 7x: a small photo, not a few pixels
    _no_warnings(lambda: fmapviz.load_image(str(paths["icon"]), fmapviz.inputs.default_transform(64)))


def test_cli_batch_size_that_cannot_fit_is_exit_2_naming_the_option(tmp_path, capsys):
    resnet = torchvision.models.resnet18().eval()
    free = free_bytes(torch.device("cpu"))
    per_pixel = forward_bytes(resnet, (1, 3, 64, 64)) / 64**2
    size = int((0.2 * free / per_pixel) ** 0.5)  # one image fits with room; 64 of them need 13x the memory
    args = ["actmax", "resnet18", "--weights", "none", "--layers", "layer1", "--channels", "0-63", "--quiet"]
    code = main([*args, "--batch-size", "64", "--size", str(size), "--device", "cpu", "-o", str(tmp_path / "a.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert (
        err.startswith("error: maximize with batch_size=64 needs about")
        and "lower batch_size (actmax --batch-size)" in err
    )
    assert not (tmp_path / "a.png").exists()


COMMANDS_WITH_OUTPUTS = {
    "maps": lambda m, data, photo: ["maps", m, photo, "--layers", "0"],
    "saliency": lambda m, data, photo: ["saliency", m, photo],
    "actmax": lambda m, data, photo: ["actmax", m, "--layers", "2"],
    "report": lambda m, data, photo: ["report", m, photo],
    "scan": lambda m, data, photo: ["scan", m, data, "--layers", "2"],
    "channel": lambda m, data, photo: ["channel", m, data, "--layers", "2", "--channel", "0"],
    "explore": lambda m, data, photo: ["explore", m, data, "--layers", "2"],
    "compare": lambda m, data, photo: ["compare", m, m, data, "--layers", "2"],
    "init": lambda m, data, photo: ["init", m],
}


@pytest.mark.parametrize("command", COMMANDS_WITH_OUTPUTS)
def test_a_device_the_machine_lacks_fails_before_any_output_folder_is_made(
    command, tiny_model, photos, tmp_path, capsys
):
    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    out = tmp_path / "out" / "nested"
    target = out / "result.png" if command in ("actmax", "channel") else out
    argv = COMMANDS_WITH_OUTPUTS[command](tiny_model, str(photos), str(photos / "photo0.png"))
    assert main([*argv, "--device", device, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: Device '{device}'") and "CUDA device" in err
    assert not (tmp_path / "out").exists()
