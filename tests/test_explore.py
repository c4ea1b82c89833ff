"""The explorer site: every page and link, incremental and resumable caching, bad input on the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TinyCNN, one_thread
from PIL import Image

import fmapviz
from fmapviz.cli import main
from fmapviz.engines.scan import ScanResult
from fmapviz.explorer import ExploreSettings
from fmapviz.explorer.build import Site
from fmapviz.explorer.cache import MARKER, read_tensors
from fmapviz.inputs import default_transform
from fmapviz.models import LoadedModel

LAYERS = ["features.1", "features.3"]
TINY = ExploreSettings(
    topk=4, crops=3, least=2, explain_top=2, actmax_top=2, actmax_copies=2, actmax_steps=2, actmax_size=32, batch_size=4
)
TINY_NET = """
import torch.nn as nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
"""


def tiny_model() -> LoadedModel:
    """TinyCNN with channel 0 of features.3 dead (never positive) and channel 1 weak (a small constant)."""
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.features[2].bias[0] = -100.0
        model.features[2].weight[1].zero_()
        model.features[2].bias[1] = 0.001
    transform = default_transform(48, resize=48)
    return LoadedModel(model, transform, ["cat", "dog", "fish", "bird"], "tiny", None)


def make_photos(folder: Path, count: int, first: int = 0) -> list[Path]:
    """``count`` 64x64 PNGs of coloured rectangles on noise, each different."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(first, first + count):
        generator = torch.Generator().manual_seed(index)
        pixels = torch.rand(64, 64, 3, generator=generator) * 0.3
        top, left = (int(v) for v in torch.randint(0, 40, (2,), generator=generator))
        pixels[top : top + 24, left : left + 24] = torch.rand(3, generator=generator)
        path = folder / f"photo_{index:02d}.png"
        Image.fromarray((pixels * 255).byte().numpy()).save(path)
        paths.append(path)
    return paths


def build_site(tmp_path: Path, photos: int = 5, **options) -> Path:
    make_photos(tmp_path / "photos", photos)
    return fmapviz.explore(tiny_model(), tmp_path / "photos", LAYERS, tmp_path / "site", settings=TINY, **options)


def references(page: Path) -> list[str]:
    """Every href and src of a page that is not an anchor or data URI."""
    found = re.findall(r'(?:href|src)="([^"#]+)"', page.read_text())
    return [link for link in found if not link.startswith("data:")]


def site_contents(site: Path) -> dict[str, bytes]:
    """Every file of a site by its path in the site, as bytes; the status file aside (it holds times)."""
    files = [path for path in sorted(site.rglob("*")) if path.is_file() and path.name != MARKER]
    return {path.relative_to(site).as_posix(): path.read_bytes() for path in files}


def mtimes(folder: Path, pattern: str) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob(pattern)}


def test_site_has_every_page_type_and_every_link_resolves(tmp_path):
    index = build_site(tmp_path, progress=False)
    site = index.parent
    assert index == tmp_path / "site" / "index.html"
    assert json.loads((site / "fmapviz-site.json").read_text())["device"] == "cpu"  # where it computed
    assert sorted(p.name for p in (site / "layers").iterdir()) == ["features.1.html", "features.3.html"]
    assert len(list((site / "channels" / "features.3").glob("*.html"))) == 16
    assert len(list((site / "images").glob("*.html"))) == 5
    pages = list(site.rglob("*.html"))
    for page in pages:
        for link in references(page):
            assert (page.parent / link).resolve().is_file(), f"{page.relative_to(site)} links to missing {link}"
    channel = (site / "channels" / "features.3" / "5.html").read_text()
    assert channel.count('class="small"') >= TINY.crops and "<svg" in channel
    layer = (site / "layers" / "features.3.html").read_text()
    assert 'data-channel="0" data-state="dead"' in layer and 'data-channel="1" data-state="weak"' in layer


def test_rerun_with_more_photos_computes_only_what_they_need(tmp_path):
    build_site(tmp_path, photos=4, progress=False)
    data = tmp_path / "site" / "data"
    records = mtimes(data, "record.json")
    pictures = {path: stamp for path, stamp in mtimes(data, "*.webp").items() if "/actmax-" in str(path)}
    make_photos(tmp_path / "photos", 2, first=4)
    fmapviz.explore(tiny_model(), tmp_path / "photos", LAYERS, tmp_path / "site", settings=TINY, progress=False)
    after = mtimes(data, "record.json")
    image_records = [path for path in after if "/images-" in str(path)]
    assert len(image_records) == 6
    assert all(after[path] == stamp for path, stamp in records.items() if "/images-" in str(path))
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in pictures.items() if path.exists())
    # the incremental scan equals one scan of all six photos
    scanned = ScanResult.from_state(torch.load(next(data.glob("scan-*")) / "scan.pt", weights_only=True))
    fresh = fmapviz.scan(
        tiny_model(), sorted(str(p.resolve()) for p in (tmp_path / "photos").iterdir()), LAYERS, topk=4
    )
    assert scanned.images == 6
    for layer in LAYERS:
        torch.testing.assert_close(scanned.stats(layer).mean, fresh.stats(layer).mean)
        torch.testing.assert_close(scanned[layer].top_values, fresh[layer].top_values)
        assert [scanned.sources[i] for i in scanned[layer].top_sources.flatten()] == [
            fresh.sources[i] for i in fresh[layer].top_sources.flatten()
        ]


def test_interrupted_run_is_completed_by_the_next(tmp_path, monkeypatch):
    calls = {"count": 0}
    original = Site._channel_examples

    def interrupt_the_second_batch(self, *args):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Site, "_channel_examples", interrupt_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        build_site(tmp_path, progress=False)
    done = mtimes(tmp_path / "site" / "data", "record.json")
    assert len([path for path in done if "/channels-" in str(path)]) == 8  # the first batch: features.1
    assert not (tmp_path / "site" / "index.html").exists()
    monkeypatch.setattr(Site, "_channel_examples", original)
    build_site(tmp_path, progress=False)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done.items())
    assert (tmp_path / "site" / "index.html").is_file()
    assert len(list((tmp_path / "site" / "data").rglob("drive.webp"))) >= 20
    assert not list((tmp_path / "site").rglob(".*.tmp-*"))


@pytest.fixture
def net(tmp_path: Path) -> str:
    path = tmp_path / "tiny_net.py"
    path.write_text(SEEDED_NET)  # the same weights at every load: a re-run continues its site
    return f"{path}:build"


def explore_cli(net: str, data: Path, out: Path, *extra: str) -> int:
    options = ["--actmax-top", "1", "--actmax-steps", "1", "--actmax-copies", "1", "--crops", "2", "--size", "32"]
    return main(["explore", net, str(data), "-o", str(out), "--quiet", *options, *extra])


def test_cli_builds_a_site_quietly(net, tmp_path, capsys):
    make_photos(tmp_path / "photos", 3)
    assert explore_cli(net, tmp_path / "photos", tmp_path / "site", "--layers", "0", "--layer", "2") == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "layers" / "2.html").is_file()
    assert explore_cli(net, tmp_path / "photos", tmp_path / "site", "--layers", "0", "2") == 0  # a site: no --force


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown layer", "Unknown layer '9'"),
        ("no spatial maps", "Layer '6' gives (1, 5) outputs, not (N,C,H,W) spatial maps"),
        ("empty folder", "holds no image files"),
        ("unreadable photos", "None of the 2 photos could be read"),
        ("missing folder", "no such file or folder"),
    ],
)
def test_bad_input_gives_one_line_exit_1_and_writes_nothing(net, tmp_path, capsys, case, message):
    data = tmp_path / "photos"
    data.mkdir()
    layers = {"unknown layer": "9", "no spatial maps": "6"}.get(case, "2")
    if case in ("unknown layer", "no spatial maps"):
        make_photos(data, 2)
    if case == "unreadable photos":
        for name in ("a.png", "b.jpg"):
            (data / name).write_bytes(b"not an image")
    if case == "missing folder":
        data = tmp_path / "nowhere"
    assert explore_cli(net, data, tmp_path / "site", "--layers", layers) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "site").exists()  # refused before the site folder is made


def test_a_folder_that_is_not_a_site_is_kept_unless_forced(net, tmp_path, capsys):
    make_photos(tmp_path / "photos", 2)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    assert explore_cli(net, tmp_path / "photos", out, "--layers", "2") == 1
    assert "is not an fmapviz site" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]
    assert explore_cli(net, tmp_path / "photos", out, "--layers", "2", "--force") == 0
    assert (out / "chapter1.tex").read_text() == "precious" and (out / "index.html").is_file()


def test_the_site_never_goes_into_the_photos_folder(net, tmp_path, capsys):
    make_photos(tmp_path / "photos", 2)
    assert explore_cli(net, tmp_path / "photos", tmp_path / "photos", "--layers", "2", "--force") == 1
    assert "holds the photos being explored" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["photo_00.png", "photo_01.png"]


SEEDED_NET = TINY_NET.replace("def build():\n", "def build():\n    import torch\n    torch.manual_seed(0)\n")


@pytest.mark.slow  # three interpreters importing torch
def test_torchrun_two_processes_build_the_same_site_as_one(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "seeded.py").write_text(SEEDED_NET)
    spec = f"{tmp_path / 'seeded.py'}:build"
    make_photos(tmp_path / "photos", 5)
    options = ["--layers", "0", "2", "--size", "32", "--actmax-top", "2", "--actmax-steps", "2", "--quiet"]
    options += ["--batch-size", "2"]  # 3 batches of photos: which photos share a batch must not depend on the ranks
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "fmapviz", "explore", spec, str(tmp_path / "photos"), "-o", str(tmp_path / "two"), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with one_thread():
        assert main(["explore", spec, str(tmp_path / "photos"), "-o", str(tmp_path / "one"), *options]) == 0
    one, two = site_contents(tmp_path / "one"), site_contents(tmp_path / "two")
    assert len(list((tmp_path / "two" / "images").glob("*.html"))) == 5 and any(
        name.endswith("scan.pt") for name in one
    )
    assert list(two) == list(one)
    assert [name for name in one if two[name] != one[name]] == []  # every page, picture, record and the scan


DYING_NET = (
    SEEDED_NET
    + """
import os
import time

import torch

class DiesOnRankOne(torch.nn.Module):  # rank 1 crashes (no clean-up) in its third activation-maximization step
    def __init__(self, net):
        super().__init__()
        self.net, self.steps = net, 0

    def forward(self, x):
        if os.environ.get("RANK") == "1" and x.requires_grad and not x.is_leaf:  # an image being optimized
            self.steps += 1
            if self.steps == 3:  # after rank 0 has saved its chunk of images (its steps take milliseconds)
                time.sleep(3)
                os._exit(3)
        return self.net(x)

def dying():
    return DiesOnRankOne(build())
"""
)


@pytest.mark.slow  # three interpreters importing torch
def test_a_rank_that_dies_leaves_a_cache_the_next_run_completes_into_the_same_site(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "dying.py").write_text(DYING_NET)
    make_photos(tmp_path / "photos", 5)
    options = ["--layers", "net.0", "net.2", "--size", "32", "--actmax-top", "4"]
    options += ["--actmax-steps", "4", "--batch-size", "2", "--quiet", "--weights", "none"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "fmapviz", "explore", f"{tmp_path / 'dying.py'}:dying", str(tmp_path / "photos"), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([*command, "-o", str(tmp_path / "site")], capture_output=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode != 0 and not (tmp_path / "site" / "index.html").exists()
    assert list((tmp_path / "site" / "data").glob("channels-*/*/*/record.json"))  # the stages before actmax
    assert len(list((tmp_path / "site" / "data").glob("actmax-*/*/*.webp"))) == 16  # rank 0's chunk of 24 images
    spec = f"{tmp_path / 'dying.py'}:dying"
    with one_thread():  # as each rank; this run does not die (RANK is unset): it finishes the site, then a fresh one
        for site in ("site", "fresh"):
            assert main(["explore", spec, str(tmp_path / "photos"), *options, "-o", str(tmp_path / site)]) == 0
    assert site_contents(tmp_path / "site") == site_contents(tmp_path / "fresh")  # nothing half-written was kept
    assert not list((tmp_path / "site").rglob(".*partial"))


def test_every_channel_gets_an_actmax_tile_and_the_strongest_get_alternatives(tmp_path):
    make_photos(tmp_path / "photos", 4)
    settings = ExploreSettings(topk=2, crops=1, least=0, explain_top=1, actmax_top=None, actmax_copies=3,
                               alternatives_top=2, actmax_steps=1, actmax_size=16, batch_size=4)  # fmt: skip
    index = fmapviz.explore(tiny_model(), tmp_path / "photos", ["features.3"], tmp_path / "site", settings=settings,
                            progress=False)  # fmt: skip
    folder = next((index.parent / "data").glob("actmax-*")) / "features.3"
    images = sorted(path.stem for path in folder.glob("*.webp"))
    strength = ScanResult.from_state(read_tensors(next((index.parent / "data").glob("scan-*")) / "scan.pt"))
    assert len([name for name in images if name.endswith("_0")]) == 16  # every channel has its tile
    strongest = strength["features.3"].image_max.mean.argsort(descending=True, stable=True)[:2].tolist()
    for copy in (1, 2):
        assert sorted(int(name.split("_")[0]) for name in images if name.endswith(f"_{copy}")) == sorted(strongest)
    page = (index.parent / "channels" / "features.3" / f"{strongest[0]}.html").read_text()
    assert page.count('alt="activation maximization"') == 3
    assert 'alt="activation maximization"' in (index.parent / "channels" / "features.3" / "7.html").read_text()


def test_cli_actmax_top_takes_all_or_a_count(capsys):
    assert main(["explore", "tiny.py:build", "photos/", "--layers", "0", "--actmax-top", "some"]) == 2
    assert "'some' is neither a whole number nor all" in capsys.readouterr().err


def test_layers_all_selects_every_block_with_spatial_maps_shallow_to_deep():
    import torchvision

    from fmapviz.explorer.layers import spatial_layers

    loaded = LoadedModel(torchvision.models.mobilenet_v2().eval(), default_transform(64), None, "mobilenet_v2", None)
    blocks = [f"features.{i}" for i in range(19)]
    assert spatial_layers(loaded, "all", (64, 64)) == blocks  # the blocks, not each BatchNorm/ReLU; no classifier
    assert spatial_layers(loaded, ["blocks"], (64, 64)) == blocks
    mixed = spatial_layers(loaded, ["features.3.conv.0", "all"], (64, 64))  # execution order, each once
    assert mixed == blocks[:3] + ["features.3.conv.0"] + blocks[3:]


def test_cli_layers_all_builds_every_spatial_block_and_the_whole_strip(net, tmp_path):
    make_photos(tmp_path / "photos", 2)
    assert explore_cli(net, tmp_path / "photos", tmp_path / "site", "--layers", "all") == 0
    assert sorted(p.name for p in (tmp_path / "site" / "layers").iterdir()) == ["0.html", "2.html"]  # not ReLU/pool
    strip = (tmp_path / "site" / "index.html").read_text().split('class="strip"')[1]
    assert strip.index('href="layers/0.html"') < strip.index('href="layers/2.html"')


def test_cli_layers_all_on_a_model_without_spatial_layers_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "flat.py").write_text(
        "import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))\n"
    )
    make_photos(tmp_path / "photos", 2)
    code = explore_cli(f"{tmp_path / 'flat.py'}:build", tmp_path / "photos", tmp_path / "site", "--layers", "all")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no block of Sequential gives (N,C,H,W)" in err, err
    assert not (tmp_path / "site").exists()


def test_site_pictures_are_webp_and_smaller_than_png(tmp_path):
    import io

    index = build_site(tmp_path, progress=False)
    pictures = [p for p in (index.parent / "data").rglob("*") if p.suffix in (".png", ".jpg", ".jpeg", ".webp")]
    assert pictures and {p.suffix for p in pictures} == {".webp"}
    assert all(p.read_bytes()[:4] == b"RIFF" and p.read_bytes()[8:12] == b"WEBP" for p in pictures)
    crop = next(p for p in pictures if p.parent.name == "crops")
    with Image.open(crop) as picture:
        assert picture.format == "WEBP" and max(picture.size) == 112
        exact = io.BytesIO()
        picture.convert("RGB").save(exact, "PNG")
    assert crop.stat().st_size < len(exact.getvalue()) / 2


def test_channel_page_without_actmax_shows_its_best_crop_and_histogram_labels_stay_in_range(tmp_path):
    index = build_site(tmp_path, progress=False)
    site = index.parent
    scanned = ScanResult.from_state(read_tensors(next((site / "data").glob("scan-*")) / "scan.pt"))
    optimized = {int(p.stem.split("_")[0]) for p in (site / "data").glob("actmax-*/features.3/*_0.webp")}
    channel = next(c for c in range(16) if c not in optimized and c > 1)
    page = (site / "channels" / "features.3" / f"{channel}.html").read_text()
    record = json.loads(
        (next((site / "data").glob("channels-*")) / "features.3" / str(channel) / "record.json").read_text()
    )
    crop = re.search(r'<span class="crop"><img class="big" src="([^"]+)" alt="best dataset crop"><i style=', page)
    assert crop and crop.group(1).endswith(record["crops"][0]["picture"])
    labels = [float(v) for v in re.findall(r'<text [^>]*font-size="11"[^>]*>([-\d.e+]+)</text>', page)]
    low, high = (
        float(scanned["features.3"].image_max.min[channel]),
        float(scanned["features.3"].image_max.max[channel]),
    )
    assert len(labels) == 2 and labels[0] == pytest.approx(low, rel=1e-3) and labels[1] == pytest.approx(high, rel=1e-3)
    assert labels[1] <= float(scanned.stats("features.3").max[channel]) * (1 + 1e-3)
    bars = [int(count) for count in re.findall(r"<rect [^>]*><title>(\d+) photos", page)]
    histogram = scanned["features.3"].histogram[channel]
    assert bars == histogram[histogram > 0].tolist() and sum(bars) == 5  # a bar per non-empty bin, every photo


def test_crops_of_one_photo_region_are_one_picture_with_each_channels_window_drawn_by_the_page(tmp_path):
    index = build_site(tmp_path, progress=False)
    site = index.parent
    channels = next((site / "data").glob("channels-*"))
    records = [json.loads(path.read_text()) for path in channels.glob("features.*/*/record.json")]
    crops = [crop for record in records for crop in record["crops"]]
    pictures = {crop["picture"] for crop in crops}
    assert len(crops) == 24 * TINY.crops and len(pictures) < len(crops)  # 24 channels, shared regions
    assert {path.relative_to(channels).as_posix() for path in (channels / "crops").iterdir()} == pictures
    for crop in crops:
        left, top, width, height = crop["box"]
        assert 0 <= left and 0 <= top and 0 < width and 0 < height and left + width <= 100.1 and top + height <= 100.1
    record = json.loads((channels / "features.3" / "5" / "record.json").read_text())
    page = (site / "channels" / "features.3" / "5.html").read_text()
    for crop in record["crops"]:
        left, top, width, height = crop["box"]
        assert f'{crop["picture"]}" alt=' in page
        assert f'<i style="left:{left}%;top:{top}%;width:{width}%;height:{height}%"></i>' in page


def test_maps_are_see_through_layers_over_their_photo_and_empty_where_nothing_drives_the_channel(tmp_path):
    from fmapviz.explorer.build import DRIVE_ALPHA, MAP_PIXELS
    from fmapviz.plot.colors import heat_layer, overlay

    gradient = torch.zeros(8, 8)
    gradient[:, 6:] = 1.0
    layer = heat_layer(gradient, "jet", MAP_PIXELS, DRIVE_ALPHA, fade=True)
    assert layer.shape == (*MAP_PIXELS, 4)
    assert layer[:, : MAP_PIXELS[1] // 2, 3].max() == 0  # the photo, untouched, away from the map
    assert layer[:, -4:, 3].min() == int(DRIVE_ALPHA * 255 + 0.5)  # the map where it peaks
    photo = torch.rand(3, *MAP_PIXELS)  # the browser's source-over compositing is overlay's blend
    blended = overlay(photo, gradient, "jet", 0.5).astype(int)
    flat = heat_layer(gradient, "jet", MAP_PIXELS, 0.5).astype(float)
    pixels = (photo.permute(1, 2, 0).numpy() * 255 + 0.5).astype(int)
    composite = pixels * (1 - flat[..., 3:] / 255) + flat[..., :3] * flat[..., 3:] / 255
    assert abs(composite - blended).max() <= 2

    index = build_site(tmp_path, progress=False)
    site = index.parent
    image_page = next((site / "images").glob("*.html")).read_text()
    layered = re.findall(
        r'<span class="layered"><img class="(\w+)" src="([^"]+)"[^>]*><img class="\w+ heat" src="([^"]+)"', image_page
    )
    assert len(layered) == len(LAYERS) * (1 + TINY.explain_top)  # a Grad-CAM per layer, an attribution per channel
    assert {Path(photo).name for _, photo, _ in layered} == {"photo.webp"}
    for _, _, heat in layered:
        with Image.open(next(site.rglob(Path(heat).name))) as picture:
            assert picture.mode == "RGBA"
    channel_page = (site / "channels" / "features.3" / "5.html").read_text()
    assert re.search(
        r'<span class="layered"><img class="big" src="[^"]+/photo.webp"[^>]*>'
        r'<img class="big heat" src="[^"]+/drive.webp"',
        channel_page,
    )


def test_a_site_of_other_settings_or_another_model_is_refused_unless_forced(net, tmp_path, capsys):
    make_photos(tmp_path / "photos", 2)
    site = tmp_path / "site"
    assert explore_cli(net, tmp_path / "photos", site, "--layers", "2") == 0
    before = {path: path.stat().st_mtime_ns for path in site.rglob("*") if path.is_file()}
    assert explore_cli(net, tmp_path / "photos", site, "--layers", "2", "--crops", "1") == 1
    err = capsys.readouterr().err
    assert "is a site of other weights or settings (channels differ)" in err and "--force" in err, err
    (tmp_path / "other.py").write_text(SEEDED_NET.replace("manual_seed(0)", "manual_seed(1)"))
    assert explore_cli(f"{tmp_path / 'other.py'}:build", tmp_path / "photos", site, "--layers", "2") == 1
    assert "is a site of " in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in site.rglob("*") if path.is_file()} == before  # nothing touched
    assert explore_cli(net, tmp_path / "photos", site, "--layers", "2", "--crops", "1", "--force") == 0
    assert len(list((site / "data").glob("channels-*"))) == 1  # the old settings' data replaced


def test_the_status_file_shows_each_stage_and_the_time_left_while_building(tmp_path, monkeypatch):
    import json

    seen = []
    original = Site._channel_examples

    def record_the_status(self, *args):
        seen.append(json.loads((self.out / "fmapviz-site.json").read_text())["building"])
        return original(self, *args)

    monkeypatch.setattr(Site, "_channel_examples", record_the_status)
    index = build_site(tmp_path, progress=False)
    assert [item["stage"] for item in seen] == ["channels"] * 3 and seen[0]["total"] == 8 + 16
    assert [item["done"] for item in seen] == [0, 8, 16]  # batches: features.1, then features.3 in two
    assert seen[0]["done"] == 0 and seen[0]["left_s"] is None
    assert seen[1]["done"] == 8 and seen[1]["left_s"] >= 0 and seen[1]["elapsed_s"] >= 0
    assert "building" not in json.loads((index.parent / "fmapviz-site.json").read_text())


def test_each_stage_line_says_the_time_left_when_stderr_is_not_a_terminal(tmp_path, capsys):
    build_site(tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("explore channels:")]
    assert len(lines) == 3, lines
    assert re.fullmatch(r"explore channels: 8/24 features\.1 8 channels \(\d+\.\d s, about \d+ s left\)", lines[0])
    assert re.fullmatch(r"explore channels: 24/24 features\.3 8 channels \(\d+\.\d s\)", lines[2])


def test_the_actmax_stage_batches_layers_and_copies_and_each_image_equals_a_one_channel_run():
    from fmapviz.explorer.actmax_stage import actmax_chunks, actmax_work, chunk_label, optimize_chunk

    loaded = tiny_model()
    settings = ExploreSettings(actmax_copies=2, alternatives_top=3, actmax_steps=4, actmax_size=24, seed=5)
    chosen = {"features.1": [5, 2, 7, 0], "features.3": [9, 1, 4, 3, 12, 8, 6, 10, 11, 13, 14, 15]}
    work = actmax_work(chosen, settings, lambda image: image.channel == 0)  # channel 0 is cached
    assert [(image.layer, image.channel, image.copy) for image in work[:7]] == [
        ("features.1", 5, 0), ("features.1", 2, 0), ("features.1", 7, 0),
        ("features.1", 5, 1), ("features.1", 2, 1), ("features.1", 7, 1), ("features.3", 9, 0),
    ]  # fmt: skip
    chunks = actmax_chunks(loaded, work, settings.actmax_size)
    assert [len(chunk) for chunk in chunks] == [16, 5]  # maximize's automatic batch on the CPU, across layers
    assert chunk_label(chunks[0]) == "features.1-features.3 16 channels"
    images = optimize_chunk(loaded, chunks[0], settings)
    for image, pixels in zip(chunks[0], images):
        alone = fmapviz.maximize(loaded.model, f"{image.layer}[{image.channel}]", seed=5 + image.copy, size=24,
                                 steps=4, progress=False, mean=loaded.mean, std=loaded.std)  # fmt: skip
        assert torch.allclose(pixels, alone.images[0], atol=1e-5), image


def test_cli_quick_preset_optimizes_one_small_image_per_channel_with_early_stopping(net, tmp_path, capsys):
    from fmapviz.explorer.settings import QUICK

    make_photos(tmp_path / "photos", 2)
    site = tmp_path / "site"
    command = ["explore", net, str(tmp_path / "photos"), "-o", str(site), "--layers", "2", "--size", "32", "--quick"]
    assert main([*command, "--quiet", "--actmax-steps", "24"]) == 0  # an explicit option overrides the preset
    settings = json.loads((site / "fmapviz-site.json").read_text())["settings"]
    assert settings["actmax_steps"] == 24 and settings["actmax_copies"] == 1
    assert (settings["actmax_size"], settings["actmax_stop"]) == (QUICK["actmax_size"], 0.01) != (128, None)
    pictures = sorted((site / "data").glob("actmax-*/2/*.webp"))
    assert len(pictures) == 16 and all(path.stem.endswith("_0") for path in pictures)  # every channel, one copy
    with Image.open(pictures[0]) as picture:
        assert picture.size == (QUICK["actmax_size"],) * 2
    assert ExploreSettings.quick(actmax_copies=2) == ExploreSettings(**{**QUICK, "actmax_copies": 2})
    assert main([*command, "--quiet", "--actmax-steps", "24", "--actmax-stop", "0", "--force"]) == 0
    assert json.loads((site / "fmapviz-site.json").read_text())["settings"]["actmax_stop"] is None  # every step
    assert len(list((site / "data").glob("actmax-*"))) == 1  # another key: the old images were removed
    assert main([*command, "--actmax-stop", "1.5"]) == 2
    assert "--actmax-stop" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    assert "--quick" in capsys.readouterr().out


@pytest.mark.slow  # three interpreters importing torch
def test_under_torchrun_a_refusal_on_rank_0_stops_both_ranks_with_one_line(net, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    make_photos(tmp_path / "photos", 2)
    site = tmp_path / "site"
    assert explore_cli(net, tmp_path / "photos", site, "--layers", "2") == 0
    (tmp_path / "other.py").write_text(SEEDED_NET.replace("manual_seed(0)", "manual_seed(1)"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fmapviz"]
    command += ["explore", f"{tmp_path / 'other.py'}:build", str(tmp_path / "photos"), "-o", str(site), "--quiet"]
    command += ["--layers", "2", "--size", "32", "--actmax-top", "1", "--actmax-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)  # no hang
    assert run.returncode != 0
    # one line from each rank (their writes may interleave; torchrun adds its own report)
    assert run.stderr.count("error: ") == 2 and run.stderr.count("is a site of model") == 2, run.stderr[-3000:]
    assert "Connection reset" not in run.stderr and "fmapviz/explorer" not in run.stderr  # rank 1 did not crash
