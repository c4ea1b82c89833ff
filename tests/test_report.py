"""report: the manifest holds what was computed, every section is on the page, --actmax, failed pages.

The pages are checked on their pixels (section rules, the header photo, no half-empty panels) and the
manifest against numbers computed here independently, on a tiny CNN with a channel killed on purpose.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyCNN, hook_count
from PIL import Image

import fmapviz
from fmapviz.cli import main
from fmapviz.pages.report import PANEL_PIXELS, ReportSpec
from fmapviz.plot.page import MARGIN

LAYERS = ("features.1", "features.3")
QUICK = ReportSpec(layers=LAYERS, top=3, gradcam_layers=1, methods=("gradient",), metric_steps=2)
RULE = (200, 200, 200)  # compose_page draws a gray rule under each section title
DEAD = 2  # channel of features.1 that never fires


class FlakyCNN(TinyCNN):
    """TinyCNN with channel 2 of features.1 dead (bias -10 after the ReLU) that raises on bright images."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.fail_bright = False
        with torch.no_grad():
            self.features[0].weight[DEAD].zero_()
            self.features[0].bias[DEAD] = -10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_bright and float(x.detach().mean()) > 1.0:
            raise RuntimeError("bright image")
        return super().forward(x)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """A red photo with a dark square, and a bright (almost white) one."""
    red = np.zeros((40, 40, 3), dtype=np.uint8)
    red[..., 0] = 230
    red[10:20, 10:20] = 20
    paths = [tmp_path / "red.png", tmp_path / "white.png"]
    Image.fromarray(red).save(paths[0])
    Image.fromarray(np.full((40, 40, 3), 250, dtype=np.uint8)).save(paths[1])
    return paths


def loaded_flaky() -> fmapviz.models.LoadedModel:
    return fmapviz.load_model(FlakyCNN().eval(), size=32)


def section_rules(page: np.ndarray) -> list[int]:
    """Rows of the page holding a section rule (a full-width gray line)."""
    inner = page[:, MARGIN : page.shape[1] - MARGIN]
    return [row for row in range(page.shape[0]) if (inner[row] == RULE).all()]


def read_page(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_manifest_holds_settings_layers_predictions_scores_and_dead_channels(photos, tmp_path):
    loaded = loaded_flaky()
    result = fmapviz.report(loaded, photos, tmp_path / "out", spec=QUICK)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["complete"] is True and manifest["model"] == loaded.name
    assert manifest["device"] == fmapviz.devices.describe(loaded.device) == "cpu"  # where it computed
    assert manifest["settings"] == json.loads(json.dumps(asdict(QUICK)))
    assert manifest["settings"]["top"] == 3 and manifest["layers"] == list(LAYERS)
    assert [entry["page"] for entry in manifest["images"]] == ["red.png", "white.png"]
    image = fmapviz.load_image(photos, loaded.transform)
    with torch.no_grad():
        probabilities = loaded.model(image.tensor).softmax(1)
    for index, entry in enumerate(manifest["images"]):
        expected = probabilities[index].topk(4)
        assert [p["class"] for p in entry["predictions"]] == [f"class {int(i)}" for i in expected.indices]
        assert [p["probability"] for p in entry["predictions"]] == pytest.approx(expected.values.tolist(), abs=1e-4)
        assert set(entry["saliency_scores"]) == {"gradcam features.3", "gradient"}
        assert entry["saliency_substrates"] == {"deletion": "black", "insertion": "blur"}
        assert all(0 <= score <= 1 for scores in entry["saliency_scores"].values() for score in scores.values())
        maps = fmapviz.feature_maps(loaded.model, image.tensor[index : index + 1], list(LAYERS))
        never_positive = {
            name: torch.nonzero(value.amax((0, 2, 3)) <= 0).flatten().tolist() for name, value in maps.items()
        }
        assert entry["dead_channels"] == never_positive and DEAD in never_positive["features.1"]
    assert result.pages == [tmp_path / "out" / "red.png", tmp_path / "out" / "white.png"]
    assert "red.png" in result.index.read_text() and hook_count(loaded.model) == 0


def test_every_section_is_on_the_page_and_each_fills_the_page_width(photos, tmp_path):
    result = fmapviz.report(loaded_flaky(), photos[:1], tmp_path / "out", spec=QUICK)
    page = read_page(result.pages[0])
    assert page.shape[1] == PANEL_PIXELS + 2 * MARGIN
    rules = section_rules(page)
    assert len(rules) == 3  # feature maps, saliency, channel health (no actmax asked)
    header = page[: rules[0] - 30]
    reds = (header[..., 0] > 200) & (header[..., 1] < 60) & (header[..., 2] < 60)
    assert reds.sum() > 2000  # the red photo is in the header
    for top, bottom in zip(rules, rules[1:] + [page.shape[0]]):
        band = page[top + 2 : bottom - 40]
        right = band[:, int(page.shape[1] * 0.65) : page.shape[1] - MARGIN]
        assert (right < 235).any(axis=2).mean() > 0.02, f"section at row {top}: its right third is empty"


def test_actmax_section_shows_the_channels_that_fired_most(photos, tmp_path):
    loaded = loaded_flaky()
    spec = ReportSpec(**{**asdict(QUICK), "actmax": True, "actmax_top": 3, "actmax_steps": 2, "actmax_size": 16})
    result = fmapviz.report(loaded, photos[:1], tmp_path / "out", spec=spec)
    entry = json.loads(result.manifest.read_text())["images"][0]
    image = fmapviz.load_image(photos[:1], loaded.transform)
    maps = fmapviz.feature_maps(loaded.model, image.tensor, "features.1")  # the layer before the deepest
    assert entry["actmax_channels"] == {"features.1": maps["features.1"][0].mean((1, 2)).topk(3).indices.tolist()}
    assert len(section_rules(read_page(result.pages[0]))) == 4


def test_a_failed_page_leaves_no_partial_file_and_the_rerun_resumes(photos, tmp_path):
    loaded = loaded_flaky()
    loaded.model.fail_bright = True
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="bright image"):
        fmapviz.report(loaded, photos, out, spec=QUICK)
    assert sorted(path.name for path in out.iterdir()) == ["index.html", "manifest.json", "red.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and [entry["page"] for entry in manifest["images"]] == ["red.png"]
    assert hook_count(loaded.model) == 0
    first = (out / "red.png").stat().st_mtime_ns
    loaded.model.fail_bright = False
    fmapviz.report(loaded, photos, out, spec=QUICK)
    assert (out / "red.png").stat().st_mtime_ns == first  # kept, not redrawn
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert sorted(path.name for path in out.iterdir()) == ["index.html", "manifest.json", "red.png", "white.png"]


TINY_MODEL = """
import torch.nn as nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
"""


def test_cli_report_with_actmax_writes_a_page_wide_report_and_its_manifest(photos, tmp_path):
    (tmp_path / "tiny_net.py").write_text(TINY_MODEL)
    out = tmp_path / "cli"
    argv = ["report", f"{tmp_path / 'tiny_net.py'}:build", str(photos[0]), "-o", str(out), "--actmax"]
    assert main([*argv, "--quiet", "--size", "32", "--layer", "1", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["actmax"] is True and manifest["layers"] == ["1", "3"]
    (entry,) = manifest["images"]
    assert list(entry["actmax_channels"]) == ["1"] and len(entry["actmax_channels"]["1"]) == 6
    page = read_page(out / entry["page"])
    assert page.shape[1] == PANEL_PIXELS + 2 * MARGIN and len(section_rules(page)) == 4


def test_a_folder_with_an_unreadable_photo_is_reported_without_it(photos, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "tiny_net.py").write_text(TINY_MODEL)
    out = tmp_path / "cli"
    argv = ["report", f"{tmp_path / 'tiny_net.py'}:build", str(tmp_path), "-o", str(out), "--size", "32"]
    assert main([*argv, "--layers", "1", "--quiet"]) == 0
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: report skips it: ") and "broken.jpg" in warning and "\n" not in warning
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["page"] for entry in manifest["images"]] == ["red.png", "white.png"]
    ((name, reason),) = manifest["skipped"]
    assert name.endswith("broken.jpg") and "not an image" in reason


def test_a_resumed_report_says_kept_for_the_pages_it_kept(photos, tmp_path, capsys):
    (tmp_path / "tiny_net.py").write_text(TINY_MODEL)
    out = tmp_path / "cli"
    argv = ["-o", str(out), "--size", "32", "--layers", "1"]
    assert main(["report", f"{tmp_path / 'tiny_net.py'}:build", str(photos[0]), *argv]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))  # as if interrupted
    capsys.readouterr()
    assert main(["report", f"{tmp_path / 'tiny_net.py'}:build", *map(str, photos), *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"kept {out / 'red.png'}" in lines and f"wrote {out / 'white.png'}" in lines
    assert f"wrote {out / 'red.png'}" not in lines
