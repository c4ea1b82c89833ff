"""fmapviz compare (two models, a checkpoint series) and fmapviz init from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import ASSETS
from PIL import Image

from fmapviz.cli import main

NETS = """
import torch.nn as nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )

def fixed32():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))

def fixed64():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 62 * 62, 5))
"""


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    chelsea = Image.open(ASSETS / "chelsea.png").convert("RGB")
    for index in range(6):
        chelsea.crop((index * 20, index * 10, index * 20 + 200, index * 10 + 200)).resize((48, 48)).save(
            folder / f"{index}.png"
        )
    return folder


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    lines = lines[1:] if lines and lines[0].startswith("device: ") else lines  # said once a model is loaded
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_compare_two_models_writes_figures_and_json(nets, photos, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", f"{nets}:build", f"{nets}:build", str(photos), "--size", "32", "-o", str(out), "--quiet"]
    assert main(args) == 0
    written = sorted(path.name for path in out.iterdir())
    assert {"cka.png", "side_by_side.png", "health.png", "compare.json"} <= set(written)
    summary = json.loads((out / "compare.json").read_text())
    assert summary["images"] == 6 and summary["layers_a"] == ["0", "2", "6"]
    assert len(summary["cka"]) == 3 and all(0 <= value <= 1 + 1e-6 for row in summary["cka"] for value in row)
    assert main(args) == 1  # outputs exist: never overwritten without --force


def test_compare_checkpoint_series(nets, photos, tmp_path, capsys):
    namespace: dict = {}
    exec(NETS, namespace)
    torch.manual_seed(0)
    model = namespace["build"]()
    for step in (1, 2, 10):
        with torch.no_grad():
            model[2].weight.mul_(0.9)
        torch.save(model.state_dict(), tmp_path / f"ckpt_{step}.pt")
    out = tmp_path / "series"
    args = ["compare", str(tmp_path / "ckpt_*.pt"), "--factory", f"{nets}:build", str(photos), "--size", "32"]
    assert main([*args, "-o", str(out)]) == 0
    series = json.loads((out / "checkpoints.json").read_text())
    assert [Path(path).name for path in series["checkpoints"]] == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt"]
    assert series["cka_to_final"][-1] == [1.0, 1.0, 1.0]
    assert (out / "checkpoints.png").stat().st_size > 10_000
    assert "3 checkpoints, 6 images" in capsys.readouterr().out


def test_init_report_prints_the_table_and_writes_figures(nets, tmp_path, capsys):
    out = tmp_path / "init"
    assert main(["init", f"{nets}:build", "--size", "32", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grad rms" in printed and re.search(r"\d+ flagged layer\(s\)", printed)
    assert {path.name for path in out.iterdir()} == {"init.png", "histograms.png", "init.json"}
    assert [row["layer"] for row in json.loads((out / "init.json").read_text())["layers"]] == ["1", "3"]


@pytest.mark.parametrize(
    ("make_args", "code", "message"),
    [
        (lambda n, p, t: [f"{n}:fixed32", f"{n}:fixed64", str(p)], 1, r"expect inputs of different sizes"),
        (
            lambda n, p, t: [f"{n}:fixed32", f"{n}:fixed64", str(p), "--size", "32"],
            1,
            r"fixed64 does not run on a \(1, 3, 32, 32\) input; this model needs --size 64",
        ),
        (lambda n, p, t: [str(t / "other.pt"), "--factory", f"{n}:build", str(p)], 1, r"does not match the model"),
        (lambda n, p, t: ["--factory", f"{n}:build", str(p)], 1, r"series is empty"),
        (lambda n, p, t: [str(t / "none_*.pt"), "--factory", f"{n}:build", str(p)], 1, r"No checkpoint matches"),
        (lambda n, p, t: [f"{n}:build", str(p)], 2, r"MODEL_A MODEL_B DATA"),
    ],
)
def test_bad_compare_input_gives_one_line_and_an_exit_code(nets, photos, tmp_path, capsys, make_args, code, message):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    assert main(["compare", *make_args(nets, photos, tmp_path), "-o", str(tmp_path / "out")]) == code
    assert re.search(message, one_error_line(capsys))
