"""scan: dataset statistics, top-k examples, receptive-field crops, shards, torchrun, save/load."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TinyCNN, assert_same_state, hook_count, model_state, one_thread
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import fmapviz
from fmapviz.engines.scan import HISTOGRAM_EDGES, ScanResult, load_scan, scan
from fmapviz.inputs import default_transform, read_image_file

SIZE = 24
LAYERS = ["features.0", "features.2"]


def _transform(size: int = SIZE) -> Callable:
    return default_transform(size, resize=size)


def _write_images(folder: Path, count: int, size: int = SIZE, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"image_{index:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path) -> Path:
    _write_images(tmp_path / "images", 11)
    return tmp_path / "images"


def _assert_same_scan(a: ScanResult, b: ScanResult, *, exact: bool = False) -> None:
    assert list(a.layers) == list(b.layers)
    assert a.images == b.images
    tolerance = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-5, "atol": 1e-6}
    for name in a.layers:
        left, right = a.layers[name], b.layers[name]
        for part in ("stats", "image_max"):
            for quantity in ("mean", "std", "max", "min", "fraction_positive"):
                value_a, value_b = getattr(getattr(left, part), quantity), getattr(getattr(right, part), quantity)
                torch.testing.assert_close(value_a, value_b, **tolerance, msg=f"{name} {part}.{quantity}")
        assert int(left.stats.count) == int(right.stats.count)
        torch.testing.assert_close(left.top_values, right.top_values, **tolerance)
        assert torch.equal(left.top_sources, right.top_sources), name
        assert torch.equal(left.top_positions, right.top_positions), name
        assert torch.equal(left.histogram, right.histogram), name


def test_merged_shards_equal_one_pass_over_everything(tiny_cnn, image_folder):
    whole = scan(tiny_cnn, image_folder, LAYERS, topk=4, batch_size=3, transform=_transform())
    shards = [
        scan(tiny_cnn, image_folder, LAYERS, topk=4, batch_size=3, transform=_transform(), shard=(i, 2)) for i in (0, 1)
    ]
    assert [shard.images for shard in shards] == [6, 5]
    merged = ScanResult.merge(*shards)
    _assert_same_scan(merged, whole)
    assert whole.images == 11 and whole.skipped == []
    assert int(whole.stats("features.0").count) == 11 * SIZE * SIZE
    assert torch.equal(whole["features.2"].histogram.sum(dim=1), torch.full((16,), 11))


def test_topk_matches_brute_force(tiny_cnn, image_folder):
    result = scan(tiny_cnn, image_folder, LAYERS, topk=5, batch_size=4, transform=_transform())
    everything = fmapviz.load_image(image_folder, _transform())
    maps = fmapviz.feature_maps(tiny_cnn, everything.tensor, LAYERS)
    for name in LAYERS:
        flat = maps[name].flatten(2)  # (N, C, H*W)
        image_max, where = flat.max(dim=2)
        values, images = image_max.T.topk(5, dim=1)
        kept = result[name]
        torch.testing.assert_close(kept.top_values, values)
        assert torch.equal(kept.top_sources, images)
        width = maps[name].shape[-1]
        positions = where.T.gather(1, images)
        assert torch.equal(kept.top_positions[..., 0] * width + kept.top_positions[..., 1], positions)
        all_values = maps[name].transpose(0, 1).flatten(1).double()
        torch.testing.assert_close(result.stats(name).mean, all_values.mean(1))
        torch.testing.assert_close(result.stats(name).std, all_values.std(1, correction=0))
        torch.testing.assert_close(result.stats(name).fraction_positive, (all_values > 0).double().mean(1))
    assert [Path(p).name for p in result.sources] == [Path(p).name for p in everything.names]


@pytest.mark.parametrize(
    "model_name, layer, size, channels", [("tiny", "features.2", SIZE, (0, 5)), ("resnet18", "layer2.0", 64, (5,))]
)
def test_crop_contains_the_maximums_true_receptive_field(
    model_name, layer, size, channels, tmp_path, tiny_cnn, resnet18
):
    model = tiny_cnn if model_name == "tiny" else resnet18
    folder = tmp_path / "images"
    _write_images(folder, 3, size=size)
    result = scan(model, folder, layer, topk=3, transform=_transform(size))
    checked = 0
    for channel in channels:
        for example in result.examples(layer, channel):
            x = _transform(size)(read_image_file(example.source))[None].requires_grad_(True)
            with fmapviz.capture(model, layer, keep_grad=True) as maps:
                model(x)
            row, col = example.position
            unit = maps[layer][0, channel, row, col]
            assert unit.item() == pytest.approx(example.value, rel=1e-5, abs=1e-6)
            (grad,) = torch.autograd.grad(unit, x)
            rows, cols = grad.abs().sum(dim=(0, 1)).nonzero(as_tuple=True)
            assert rows.numel() > 0
            top, left, bottom, right = example.window
            assert top <= rows.min() and rows.max() <= bottom, (example.window, rows.min(), rows.max())
            assert left <= cols.min() and cols.max() <= right, (example.window, cols.min(), cols.max())
            assert example.crop.shape == (3, bottom - top + 1, right - left + 1)
            assert 0 <= example.crop.min() and example.crop.max() <= 1
            checked += 1
    assert checked == 3 * len(channels)
    assert hook_count(model) == 0


def test_corrupt_image_is_skipped_with_reason_and_nothing_else_lost(tiny_cnn, image_folder):
    good = scan(tiny_cnn, sorted(image_folder.iterdir()), LAYERS, topk=4, transform=_transform())
    (image_folder / "image_05b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = scan(tiny_cnn, image_folder, LAYERS, topk=4, batch_size=4, transform=_transform())
    assert result.images == 11
    assert len(result.skipped) == 1
    source, reason = result.skipped[0]
    assert source.endswith("image_05b.png") and "Cannot read image" in reason
    _assert_same_scan(_remapped(result, good.sources), good)


def _remapped(result: ScanResult, sources: list[str]) -> ScanResult:
    """The result with its image indices renumbered into another list of sources."""
    lookup = torch.tensor([sources.index(s) if s in sources else -1 for s in result.sources])
    for layer in result.layers.values():
        layer.top_sources = lookup[layer.top_sources]
    result.sources = sources
    return result


def test_save_and_load_round_trip_exactly(tiny_cnn, image_folder, tmp_path):
    (image_folder / "broken.jpg").write_bytes(b"nope")
    result = scan(tiny_cnn, image_folder, LAYERS, topk=3, transform=_transform())
    folder = result.save(tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["scan.json", "scan.pt"]
    torch.load(folder / "scan.pt", weights_only=True)  # plain tensors only
    loaded = load_scan(folder / "scan.json")
    _assert_same_scan(loaded, result, exact=True)
    for name in ("sources", "skipped", "images", "topk", "input_size", "geometry", "mean", "std", "transform_repr"):
        assert getattr(loaded, name) == getattr(result, name), name
    crops = loaded.examples("features.2", 1, transform=_transform())
    assert [c.source for c in crops] == [result.sources[int(i)] for i in result["features.2"].top_sources[1]]
    with pytest.raises(ValueError, match="pass it as transform="):
        loaded.examples("features.2", 1)
    with pytest.raises(fmapviz.FmapvizError, match="No scan in"):
        load_scan(tmp_path)


def test_dataloader_scan_names_images_by_dataset_index(tiny_cnn):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, SIZE, SIZE, generator=generator)
    loader = DataLoader(TensorDataset(images, torch.zeros(10)), batch_size=4)
    whole = scan(tiny_cnn, loader, LAYERS, topk=3)
    halves = ScanResult.merge(*(scan(tiny_cnn, loader, LAYERS, topk=3, shard=(i, 2)) for i in (0, 1)))
    _assert_same_scan(halves, whole)
    assert whole.sources is None and whole.images == 10
    maps = fmapviz.feature_maps(tiny_cnn, images, "features.2")["features.2"]
    assert torch.equal(whole["features.2"].top_sources, maps.flatten(2).amax(2).T.topk(3, dim=1).indices)
    example = whole.examples("features.2", 2, data=loader, k=1)[0]
    assert example.source == int(whole["features.2"].top_sources[2, 0])
    with pytest.raises(ValueError, match="pass data="):
        whole.examples("features.2", 2)


def test_dead_and_weak_channels_are_found(image_folder):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.features[2].bias[3] = -1000.0  # channel 3 never fires after the ReLU
        model.features[2].weight[7] *= 1e-3  # channel 7 fires a thousand times less
        model.features[2].bias[7] = 0.0
    result = scan(model, image_folder, "features.3", transform=_transform())
    health = result.dead_channels(weak_ratio=0.1)["features.3"]
    assert health.dead_channels == [3]
    assert health.weak_channels == [7]
    assert health.channels == 16 and health.count == 11 * (SIZE // 2) ** 2


def test_scan_leaves_no_hooks_and_an_untouched_model(tiny_cnn, image_folder):
    tiny_cnn.train()
    before = model_state(tiny_cnn)
    scan(tiny_cnn, image_folder, LAYERS, transform=_transform())
    assert hook_count(tiny_cnn) == 0
    assert_same_state(before, model_state(tiny_cnn))
    with pytest.raises(RuntimeError):
        scan(tiny_cnn, _ragged_loader(), LAYERS)
    assert hook_count(tiny_cnn) == 0
    assert_same_state(before, model_state(tiny_cnn))


def _ragged_loader() -> DataLoader:
    """First batch fine, second batch one channel: the model fails mid-scan."""

    class Ragged(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(3 if index < 2 else 1, SIZE, SIZE)

    return DataLoader(Ragged(), batch_size=2)


def test_bad_arguments_raise_clear_errors(tiny_cnn, image_folder, tmp_path):
    loader = DataLoader(TensorDataset(torch.rand(4, 3, SIZE, SIZE)), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        scan(tiny_cnn, loader, LAYERS)
    with pytest.raises(ValueError, match="topk must be"):
        scan(tiny_cnn, image_folder, LAYERS, topk=0)
    with pytest.raises(ValueError, match="shard must be"):
        scan(tiny_cnn, image_folder, LAYERS, shard=(2, 2))
    with pytest.raises(fmapviz.LayerNotFoundError, match="features.2"):
        scan(tiny_cnn, image_folder, "features.20")
    (tmp_path / "empty").mkdir()
    with pytest.raises(fmapviz.ImageLoadError, match="no image files"):
        scan(tiny_cnn, tmp_path / "empty", LAYERS)
    with pytest.raises(ValueError, match="transform= applies to image files only"):
        scan(tiny_cnn, DataLoader(TensorDataset(torch.rand(2, 3, 8, 8))), LAYERS, transform=_transform())


MODEL_FILE = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
"""


@pytest.mark.slow  # three interpreters importing torch: 8-30 s depending on machine load
def test_torchrun_two_processes_give_the_same_result_as_one(tmp_path, image_folder):
    (tmp_path / "tiny_model.py").write_text(MODEL_FILE)
    spec = f"{tmp_path / 'tiny_model.py'}:make"
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "fmapviz", "scan", spec, str(image_folder), "--layer", "1", "--layer", "2"]
    command += ["-o", str(out), "--weights", "none", "--size", str(SIZE), "--topk", "4", "--batch-size", "1"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Scanned 11 images" in run.stdout
    distributed = load_scan(out)
    model = fmapviz.load_model(spec).model
    with one_thread():
        single = scan(model, image_folder, ["1", "2"], topk=4, batch_size=1, transform=_transform())
    # whole batches per rank, folded pairwise in batch order: the same float64 statistics bit for bit
    _assert_same_scan(distributed, single, exact=True)
    for name in ("1", "2"):
        assert torch.equal(distributed[name].stats.m2, single[name].stats.m2)
    assert distributed.sources == single.sources and distributed.shard is None


def test_histogram_edges_are_sorted_and_symmetric():
    assert torch.all(HISTOGRAM_EDGES[1:] > HISTOGRAM_EDGES[:-1])
    torch.testing.assert_close(HISTOGRAM_EDGES, -HISTOGRAM_EDGES.flip(0))


def test_channel_page_shows_actmax_image_crops_and_histogram(tiny_cnn, image_folder, tmp_path):
    result = scan(tiny_cnn, image_folder, LAYERS, topk=5, transform=_transform())
    green = torch.zeros(3, 40, 40)
    green[1] = 1.0
    figure = fmapviz.show_channel_page(result, "features.2", 4, actmax_image=green)
    pixels = figure.image.astype(int)
    pure_green = (pixels[..., 1] > 240) & (pixels[..., 0] < 15) & (pixels[..., 2] < 15)
    assert pure_green.sum() > 40 * 40  # the actmax panel, drawn larger than 40×40
    titles = [axes.get_title() for axes in figure.matplotlib.axes]
    assert "activation maximization" in titles and "histogram over the dataset" in titles
    captions = [text.get_text() for axes in figure.matplotlib.axes for text in axes.texts]
    values = result["features.2"].top_values[4]
    assert [caption for caption in captions if caption.startswith("#")] == [
        f"#{i + 1} {v:.3g}" for i, v in enumerate(values.tolist())
    ]
    assert figure.save(tmp_path / "page.png").stat().st_size > 10_000
    plain = fmapviz.channel_page(tiny_cnn, result, "features.2", 4, with_actmax=False)
    assert "activation maximization" not in [axes.get_title() for axes in plain.matplotlib.axes]


def test_channel_page_glue_runs_activation_maximization(tiny_cnn, image_folder):
    result = scan(tiny_cnn, image_folder, "features.2", topk=3, transform=_transform())
    before = model_state(tiny_cnn)
    figure = fmapviz.channel_page(tiny_cnn, result, "features.2", 1, steps=2, size=24)
    assert "activation maximization" in [axes.get_title() for axes in figure.matplotlib.axes]
    assert hook_count(tiny_cnn) == 0
    assert_same_state(before, model_state(tiny_cnn))


def test_dead_channel_figure_has_one_panel_per_layer(tiny_cnn, image_folder):
    result = scan(tiny_cnn, image_folder, ["features.1", "features.3"], transform=_transform())
    figure = fmapviz.show_dead_channels(result)
    titles = [axes.get_title() for axes in figure.matplotlib.axes if axes.get_title()]
    assert [title.split(":")[0] for title in titles] == ["features.1", "features.3"]
    dead = result.dead_channels()
    assert all(f"{len(dead[name].dead_channels)} dead" in title for name, title in zip(dead, titles))
