"""The fmapviz command line: every subcommand, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, ROOT, real_weights
from PIL import Image

from fmapviz.cli import channel_list, main

TINY_MODEL = """
import torch.nn as nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
"""


@pytest.fixture
def tiny_model(tmp_path: Path) -> str:
    path = tmp_path / "tiny_net.py"
    path.write_text(TINY_MODEL)
    return f"{path}:build"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    Image.open(ASSETS / "chelsea.png").resize((96, 64)).save(path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "fmapviz.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def test_layers_prints_the_summary_table(tiny_model, capsys):
    assert main(["layers", tiny_model, "--size", "32"]) == 0
    table = capsys.readouterr().out
    assert "receptive field" in table and "1×16×16×16" in table


def test_maps_writes_one_png_per_image_and_layer(tiny_model, photo, tmp_path):
    out = tmp_path / "maps"
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "2", "-o", str(out), "--quiet", "--size", "64"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["cat_0.png", "cat_2.png"]
    assert Image.open(out / "cat_2.png").size[0] > 100


def test_existing_output_is_not_overwritten_without_force(tiny_model, photo, tmp_path, capsys):
    out = tmp_path / "maps"
    out.mkdir()
    keep = out / "cat_0.png"
    keep.write_bytes(b"user data")
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "-o", str(out), "--size", "64"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert keep.read_bytes() == b"user data"
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "-o", str(out), "--size", "64", "--force"]) == 0
    assert keep.read_bytes()[:4] == b"\x89PNG"


def test_saliency_and_actmax_write_pngs(tiny_model, photo, tmp_path):
    out = tmp_path / "sal"
    args = ["saliency", tiny_model, str(photo), "--method", "gradcam", "gradient", "--target", "2", "-o", str(out)]
    assert main([*args, "--quiet", "--size", "64"]) == 0
    assert (out / "cat_saliency.png").is_file()
    png = tmp_path / "act.png"
    args = ["actmax", tiny_model, "--layer", "2", "--channels", "0-3", "--steps", "8", "--size", "32", "-o", str(png)]
    assert main([*args, "--quiet"]) == 0
    assert Image.open(png).size[0] > 100


def test_report_writes_pages_manifest_and_index(tiny_model, photo, tmp_path):
    out = tmp_path / "report"
    assert main(["report", tiny_model, str(photo), "-o", str(out), "--quiet", "--size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "index.html", "manifest.json"]
    assert "cat.png" in (out / "index.html").read_text()


def test_scan_and_channel_page(tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(4):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(data / f"img{index}.png")
    out = tmp_path / "scan"
    assert main(["scan", tiny_model, str(data), "--layer", "2", "--topk", "2", "-o", str(out), "--quiet"]) == 0
    page = tmp_path / "channel.png"
    args = ["channel", tiny_model, str(out), "--layer", "2", "--channel", "1", "--steps", "4", "-o", str(page)]
    assert main([*args, "--quiet", "--size", "32"]) == 0
    assert page.is_file()


@pytest.mark.parametrize(
    ("make_args", "code", "message"),
    [
        (lambda m, p, t: ["maps", m, str(t / "missing.png"), "--layer", "0"], 1, r"missing\.png.*no such file"),
        (lambda m, p, t: ["maps", m, str(t / "corrupt.png"), "--layer", "0"], 1, r"corrupt\.png"),
        (lambda m, p, t: ["maps", m, str(p), "--layer", "9"], 1, r"Unknown layer '9'. Closest"),
        (lambda m, p, t: ["maps", "resnet19", str(p), "--layer", "x"], 1, r"Unknown model 'resnet19'.*resnet18"),
        (
            lambda m, p, t: ["maps", m, str(p), "--layer", "0", "--checkpoint", str(t / "other.pt")],
            1,
            r"does not match the model",
        ),
        (
            lambda m, p, t: ["maps", m, str(p), "--layer", "0", "-o", str(t / "file.txt" / "out")],
            1,
            r"Cannot create folder",
        ),
        (lambda m, p, t: ["actmax", m, "--layer", "2", "--channels", "0-x"], 2, r"bad channel list"),
        (lambda m, p, t: ["maps", m], 2, r"required"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(tiny_model, photo, tmp_path, make_args, code, message):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    result = run_cli(*make_args(tiny_model, photo, tmp_path), "--size", "64")
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0]), lines[0]


def test_channel_list_forms():
    assert channel_list("0-3,8") == [0, 1, 2, 3, 8]
    assert channel_list("5") == [5]


@real_weights
@pytest.mark.real_weights
def test_real_mobilenet_maps_and_saliency_through_the_cli(tmp_path):
    out = tmp_path / "real"
    chelsea = str(ASSETS / "chelsea.png")
    result = run_cli(
        "maps", "mobilenet_v2", "--weights", "IMAGENET1K_V1", chelsea, "--layer", "features.7", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "saliency", "mobilenet_v2", "--weights", "IMAGENET1K_V1", chelsea, "--target", "tabby", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_features.7.png", "chelsea_saliency.png"]
