"""Users' own models and real faults through the command line: nothing lost, nothing silently wrong.

The fault cases (Ctrl-C, a second run on the same folder) run the CLI in subprocesses;
the rest call ``main(argv)`` in this process. The models are in ``user_models.py``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from PIL import Image

from fmapviz.cli import main

MODELS = Path(__file__).resolve().parent / "user_models.py"
MNIST = ["--mean", "0.1307", "--std", "0.3081"]
FIXED = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
QUICK_REPORT = ["--quiet", "--size", "32"]


def spec(factory: str) -> str:
    return f"{MODELS}:{factory}"


def cli(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fmapviz", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )  # fmt: skip


def strict_json(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path} holds bare {name}"))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(6):
        pixels = (torch.rand(48, 40, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(folder / f"photo{index}.png")
    return folder


def test_grayscale_mnist_model_works_end_to_end(photos, tmp_path, capsys):
    photo = str(photos / "photo0.png")
    assert main(["layers", spec("mnist"), *MNIST]) == 0
    assert "1×8×28×28" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["maps", spec("mnist"), photo, *MNIST, "--layer", "features.0", "--overlay", "-o", str(out)]) == 0
    args = ["saliency", spec("mnist"), photo, *MNIST, "--method", "gradcam", "gradient", "-o", str(out)]
    assert main(args) == 0
    args = ["actmax", spec("mnist"), *MNIST, "--layer", "features.0", "--channels", "0-1", "--steps", "2"]
    assert main([*args, "-o", str(out / "actmax.png"), "--quiet"]) == 0
    assert main(["report", spec("mnist"), photo, *MNIST, "-o", str(out / "report"), "--quiet"]) == 0
    for name in ("photo0_features.0.png", "photo0_saliency.png", "actmax.png", "report/photo0.png"):
        assert Image.open(out / name).size[0] > 50
    manifest = strict_json(out / "report" / "manifest.json")
    assert manifest["identity"]["mean"] == [0.1307] and manifest["complete"] is True


def test_fixed_size_model_needs_no_size_and_a_wrong_one_says_which(tmp_path, capsys):
    assert main(["layers", spec("fixed64"), *FIXED]) == 0
    assert "1×4×32×32" in capsys.readouterr().out
    for goal in (["--class", "2"], ["--layer", "features.0", "--channels", "0-1"]):
        out = tmp_path / f"{goal[0][2:]}.png"
        assert main(["actmax", spec("fixed64"), *FIXED, *goal, "--steps", "2", "-o", str(out), "--quiet"]) == 0
        assert out.is_file()
    assert main(["actmax", spec("fixed64"), *FIXED, "--class", "2", "--size", "100", "-o", str(tmp_path / "x")]) == 1
    assert "this model needs --size 64" in capsys.readouterr().err


def test_dict_output_is_explained_on_its_logits_or_the_chosen_key(photos, tmp_path, capsys):
    photo = photos / "photo0.png"
    out = tmp_path / "report"
    assert main(["report", spec("dict_out"), str(photo), "-o", str(out), *QUICK_REPORT]) == 0
    import user_models

    import fmapviz

    loaded = fmapviz.load_model(user_models.dict_out(), size=32)
    with torch.no_grad():
        logits = loaded.model(fmapviz.load_image(photo, loaded.transform).tensor)["logits"][0]
    predicted = strict_json(out / "manifest.json")["images"][0]["predictions"][0]["class"]
    assert predicted == f"class {int(logits.argmax())}"
    assert main(["saliency", spec("two_heads"), str(photo), "-o", str(tmp_path / "s")]) == 1
    assert "several tensors (embedding, scores)" in capsys.readouterr().err
    assert main(["saliency", spec("two_heads"), str(photo), "--output-key", "scores", "-o", str(tmp_path / "s")]) == 0


def test_torchscript_file_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "net.pt"
    torch.jit.trace(torch.nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 3, 8, 8)).save(str(path))
    assert main(["layers", str(path)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "TorchScript archive" in error and "state_dict" in error


def test_pickled_checkpoint_needs_no_pythonpath_and_the_report_records_it(photos, tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
    )
    save_pickled_model(tmp_path, "mynet", tmp_path / "full.pt")  # as a training script that imports mynet does
    monkeypatch.chdir(ROOT)  # the factory's folder is neither the working folder nor on sys.path
    out = tmp_path / "report"
    args = ["report", f"{tmp_path / 'mynet.py'}:build", str(photos / "photo0.png"), "-o", str(out), *QUICK_REPORT]
    assert main([*args, "--checkpoint", str(tmp_path / "full.pt"), "--trust-checkpoint"]) == 0
    recorded = strict_json(out / "manifest.json")["checkpoint"]
    assert recorded == {
        "path": str(tmp_path / "full.pt"),
        "sha256": hashlib.sha256((tmp_path / "full.pt").read_bytes()).hexdigest(),
    }


def save_pickled_model(folder: Path, module: str, path: Path) -> None:
    """torch.save(module.build()) with ``folder`` importable only while saving."""
    sys.path.insert(0, str(folder))
    try:
        torch.save(importlib.import_module(module).build(), path)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def test_ctrl_c_keeps_finished_pages_a_second_run_is_refused_and_the_next_run_resumes(photos, tmp_path, capsys):
    out, many = tmp_path / "report", tmp_path / "many"
    many.mkdir()  # 24 pages, so the Ctrl-C below lands before the last one even on a fast machine
    for copy in range(4):
        for photo in sorted(photos.iterdir()):
            (many / f"{copy}-{photo.name}").write_bytes(photo.read_bytes())
    photos = many
    run = cli("report", spec("batchnorm_dropout"), str(photos), "-o", str(out), "--size", "32")
    assert run.stderr.readline().startswith("device: ")  # which device the run uses comes first
    first_line = run.stderr.readline()  # one line per finished page when stderr is not a terminal
    assert first_line.startswith("report: 1/24"), first_line + run.stderr.read()
    # meanwhile a second report into the same folder fails at once instead of mixing manifests
    assert main(["report", spec("batchnorm_dropout"), str(photos), "-o", str(out), *QUICK_REPORT]) == 1
    assert "Another fmapviz run is writing" in capsys.readouterr().err
    run.send_signal(signal.SIGINT)
    _, rest = run.communicate(timeout=120)
    assert run.returncode == 130, rest
    manifest = strict_json(out / "manifest.json")
    done = [entry["page"] for entry in manifest["images"]]
    assert manifest["complete"] is False and 1 <= len(done) < 24
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == sorted(done)  # no partial PNG
    for page in done:
        Image.open(out / page).verify()
    kept = {page: (out / page).stat().st_mtime_ns for page in done}
    assert main(["report", spec("batchnorm_dropout"), str(photos), "-o", str(out), *QUICK_REPORT]) == 0
    assert {page: (out / page).stat().st_mtime_ns for page in done} == kept  # resumed, not redone
    manifest = strict_json(out / "manifest.json")
    assert manifest["complete"] is True and len(manifest["images"]) == 24
    assert main(["report", spec("batchnorm_dropout"), str(photos), "-o", str(out), *QUICK_REPORT]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err


def test_report_never_writes_over_its_input_photos_even_with_force(photos, capsys):
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert main(["report", spec("dict_out"), str(photos), "-o", str(photos), "--force", *QUICK_REPORT]) == 1
    assert "is one of the input files" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_actmax_output_without_extension_gets_png_and_is_not_overwritten(tmp_path, capsys):
    target = tmp_path / "noext"
    args = ["actmax", spec("fixed64"), *FIXED, "--class", "1", "--steps", "1", "-o", str(target)]
    assert main(args) == 0
    assert f"wrote {target}.png" in capsys.readouterr().out
    written = (tmp_path / "noext.png").read_bytes()
    assert main(args) == 1
    assert "noext.png already exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "noext.png").read_bytes() == written


def test_unwritable_output_folder_is_found_before_the_work(photos, capsys):
    started = time.perf_counter()
    assert main(["maps", spec("dict_out"), str(photos), "--layer", "features.0", "-o", "/proc"]) == 1
    assert re.search(r"Cannot (write into|create folder) '/proc'", capsys.readouterr().err)
    assert main(["scan", spec("dict_out"), str(photos), "--layer", "features.0", "-o", "/proc", "--quiet"]) == 1
    assert re.search(r"Cannot (write into|create folder) '/proc'", capsys.readouterr().err)
    assert time.perf_counter() - started < 30


def test_long_error_lines_are_capped(photos, tmp_path, capsys):
    layer = "features." + "9" * 5000
    assert main(["maps", spec("dict_out"), str(photos / "photo0.png"), "--layer", layer, "-o", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    error = "\n".join(line for line in lines if not line.startswith("device: "))  # said once the model loads
    assert len(error.splitlines()) == 1 and len(error) < 400


def test_negative_class_and_unpaired_normalization_are_usage_errors_before_loading(capsys):
    assert main(["actmax", "no_such_file.py:build", "--class=-1"]) == 2
    assert "class indices start at 0" in capsys.readouterr().err
    assert main(["layers", "no_such_file.py:build", "--mean", "0.5"]) == 2
    assert "pass --mean and --std together" in capsys.readouterr().err
    assert main(["layers", "no_such_file.py:build", "--mean", "0.5,0.5", "--std", "1"]) == 2


def test_nan_model_warns_and_writes_strict_json(photos, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", spec("nan_net"), str(photos / "photo0.png"), "-o", str(out), *QUICK_REPORT]) == 0
    assert "warning: " in capsys.readouterr().err
    manifest = strict_json(out / "manifest.json")
    assert manifest["images"][0]["predictions"][0]["probability"] is None


def test_layers_needs_no_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached, nothing downloadable
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    assert main(["layers", "mobilenet_v2"]) == 0
    assert "features.18" in capsys.readouterr().out


def test_help_states_every_default():
    from fmapviz.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.default not in (None, False, "==SUPPRESS=="):
                assert "default" in (action.help or ""), f"{name} {action.option_strings}: {action.help}"


def test_views_draw_a_grayscale_display_and_feature_maps_says_what_x_must_be():
    import numpy as np
    import user_models

    import fmapviz

    loaded = fmapviz.load_model(user_models.mnist(), mean=(0.1307,), std=(0.3081,))
    image = fmapviz.load_image(np.full((30, 30), 255, np.uint8), loaded.transform)
    maps = fmapviz.feature_maps(loaded.model, image.tensor, "features.0")
    gray = image.display[0, :1]  # (1,H,W), as a user's own grayscale display
    overlay = np.asarray(fmapviz.show_maps(maps, channels="top:2", image=gray, overlay=True).image)
    assert overlay.ndim == 3 and overlay.shape[2] == 3
    result = fmapviz.saliency(loaded.model, image.tensor, "gradient")
    assert np.asarray(fmapviz.show_saliency({"gradient": result}, gray).image).shape[2] == 3
    with pytest.raises(TypeError, match="needs the model input tensor x, not a ndarray.*load_image"):
        fmapviz.feature_maps(loaded.model, np.zeros((28, 28)), "features.0")


def test_load_image_scales_0_255_floats_and_uint16_and_refuses_what_it_cannot_read():
    import numpy as np

    import fmapviz
    from fmapviz.errors import ImageLoadError

    def shown(source: object) -> float:
        return float(fmapviz.load_image(source).display.mean())

    assert shown(np.full((8, 8, 3), 127.5)) == pytest.approx(0.5, abs=0.01)  # was clipped to white
    assert shown(np.full((8, 8), 32768, np.uint16)) == pytest.approx(0.5, abs=0.01)  # was white
    assert shown(np.full((8, 8, 3), 0.25, np.float32)) == pytest.approx(0.25, abs=0.01)
    assert fmapviz.load_image(torch.full((8, 8), 0.5)).tensor.shape == (1, 3, 224, 224)  # a 2-D tensor: grayscale
    bad = {
        "No images given": [],
        "has no pixels": np.zeros((0, 5)),
        r"shape \(1, 1, 3, 8, 8\) as images: expected": torch.zeros(1, 1, 3, 8, 8),
        r"values in \[-1, -1\].*Undo any normalization": np.full((4, 4), -1.0),
        "values up to 300": np.full((4, 4), 300.0),
    }
    for message, source in bad.items():
        with pytest.raises(ImageLoadError, match=message):
            fmapviz.load_image(source)


def test_scan_writes_a_picture_and_a_text_of_dead_and_weak_channels(photos, tmp_path):
    out = tmp_path / "scan"
    args = ["scan", spec("batchnorm_dropout"), str(photos), "--layer", "features.0", "features.2", "-o", str(out)]
    assert main([*args, "--quiet", "--size", "32"]) == 0
    lines = (out / "channels.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["features.0", "features.2"]
    assert all("dead (never > 0)" in line and "weak" in line for line in lines)
    assert Image.open(out / "channels.png").size[0] > 100


def test_help_examples_run_offline_with_cached_weights_only():
    from fmapviz.cli import COMMANDS

    for entry in COMMANDS.values():
        for line in entry.examples.splitlines():
            torchvision_name = any(name in line.split() for name in ("mobilenet_v2", "resnet18"))
            if torchvision_name and entry.weights != "none":  # layers and init need no weights
                assert "--weights IMAGENET1K_V1" in line, line


def test_a_training_step_watched_by_the_tensorboard_logger_stays_a_training_step(tmp_path):
    import user_models
    from torch.utils.tensorboard import SummaryWriter

    from fmapviz.integrations.tensorboard import FeatureMapLogger

    model = user_models.batchnorm_dropout()
    statistics = model.features[1].running_mean.clone()
    with SummaryWriter(tmp_path) as writer, FeatureMapLogger(writer, model, "features.0", every=1).watch(0):
        assert model.training
        model(torch.randn(4, 3, 8, 8))
    assert not torch.equal(model.features[1].running_mean, statistics)  # BatchNorm learned from the batch


def test_grayscale_scan_and_channel_page_and_scan_progress_lines(photos, tmp_path, capsys):
    out = tmp_path / "scan"
    args = ["scan", spec("mnist"), str(photos), *MNIST, "--layer", "features.0", "--batch-size", "2", "-o", str(out)]
    assert main(args) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scan: ")]
    assert [line.split()[1] for line in progress] == ["1/3", "2/3", "3/3"]  # one line per batch off a terminal
    page = tmp_path / "channel.png"
    args = ["channel", spec("mnist"), str(out), *MNIST, "--layer", "features.0", "--channel", "1", "--steps", "2"]
    assert main([*args, "-o", str(page)]) == 0
    assert Image.open(page).size[0] > 100
    stages = [line.split()[1] for line in capsys.readouterr().err.splitlines() if line.startswith("channel: ")]
    assert stages == ["1/2", "2/2"]  # the actmax image, then the crops


def test_python_m_fmapviz_scan_does_not_overwrite_a_scan(photos, tmp_path, capsys):
    def scan_main(argv):
        return main(["scan", *argv])

    out = tmp_path / "scan"
    args = [spec("dict_out"), str(photos), "--layer", "features.0", "-o", str(out)]
    assert scan_main(args) == 0
    written = (out / "scan.pt").read_bytes()
    assert scan_main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "scan.pt").read_bytes() == written
