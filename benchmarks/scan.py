"""Dataset scan: throughput against plain batched inference, and peak memory as the dataset grows.

    .venv/bin/python benchmarks/scan.py

mobilenet_v2 (IMAGENET1K_V1 when $TORCH_HOME has it, else random weights) over the 100
photos in ../shared/imagenet-samples, first shrunk once to 128 px PNGs in a temporary
folder so that JPEG decoding does not dominate on 2 cores; the model sees 112×112
(resize 128, centre-crop 112). Throughput: the same DataLoader (batch 32, 0 workers)
feeds plain ``model(x)`` under ``torch.no_grad`` and ``fmapviz.scan``; medians of
round-robin rounds. Peak memory: VmHWM increase of a fresh process scanning the file
list repeated to 100 and to 1000 images.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, markdown_table, peak_rss_delta_mb, setup, time_interleaved, write_section
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402
from fmapviz.inputs import default_transform, read_image_file  # noqa: E402

SIZE = 112
BATCH = 32
TOPK = 16
CASES = {
    "features.7 + features.14 (stops after features.14)": ["features.7", "features.14"],
    "features.7 + .14 + .18 (whole network runs)": ["features.7", "features.14", "features.18"],
}


class Files(Dataset):
    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_image_file(self.paths[index]))


def shrink_photos(folder: Path) -> list[str]:
    sources = sorted(p for p in (SHARED / "imagenet-samples").iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    paths = []
    for source in sources:
        with Image.open(source) as image:
            image = image.convert("RGB")
            image.thumbnail((170, 170))
            path = folder / f"{source.stem}.png"
            image.save(path)
            paths.append(str(path))
    return paths


def model_and_transform():
    try:
        loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        weights = "IMAGENET1K_V1"
    except fmapviz.ModelLoadError:
        loaded, weights = fmapviz.load_model("mobilenet_v2", weights=None), "random"
    return loaded.model, default_transform(SIZE, resize=128), weights


def main() -> int:
    setup()
    model, transform, weights = model_and_transform()
    folder = Path(tempfile.mkdtemp(prefix="fmapviz-scan-bench-"))
    paths = shrink_photos(folder)
    loader = DataLoader(Files(paths, transform), batch_size=BATCH)

    def plain() -> None:
        with torch.no_grad():
            for batch in loader:
                model(batch)

    methods = {"plain batched inference": plain}
    for label, layers in CASES.items():
        methods[f"scan {label}"] = lambda layers=layers: fmapviz.scan(model, loader, layers, topk=TOPK)
    started = time.perf_counter()
    times = time_interleaved(methods, rounds=3, warmup=1)
    rows = []
    for name, seconds in times.items():
        rate = len(paths) / seconds
        rows.append([name, f"{seconds:.2f}", f"{rate:.1f}", f"{times['plain batched inference'] / seconds:.2f}"])
    table = markdown_table(["method", "s / 100 images", "images/s", "throughput × plain"], rows)
    print(table, flush=True)

    setup_code = (
        "import sys; sys.path.insert(0, '.'); sys.path.insert(0, 'benchmarks')\n"
        "import fmapviz, torch\n"
        "from scan import model_and_transform\n"
        f"model, transform, _ = model_and_transform()\npaths = {paths!r}\n"
        "fmapviz.scan(model, paths[:32], ['features.7', 'features.14'], transform=transform, batch_size=32)\n"
    )
    memory_rows = []
    for count in (100, 1000):
        code = (
            f"files = (paths * {count // len(paths) + 1})[:{count}]\n"
            "result = fmapviz.scan(model, files, ['features.7', 'features.14', 'features.18'], "
            f"transform=transform, batch_size={BATCH}, topk={TOPK})\n"
            f"assert result.images == {count}\n"
        )
        begin = time.perf_counter()
        delta, _ = peak_rss_delta_mb(code, setup_code, repeats=1)
        memory_rows.append([count, f"{delta:.0f}", f"{time.perf_counter() - begin:.0f}"])
    memory = markdown_table(["images scanned", "peak RSS Δ MB", "wall s (incl. start-up)"], memory_rows)
    body = (
        f"mobilenet_v2 ({weights}), {SIZE}×{SIZE} input (resize 128, crop 112), batch {BATCH}, top-{TOPK}, "
        f"100 photos from ../shared/imagenet-samples pre-shrunk to ≤170 px PNGs; same DataLoader for both. "
        "Scan stops the forward after its last layer (`capture(stop_early=True)`), so the first case runs "
        "less of the network than plain inference; the second case runs all of it.\n\n"
        f"{table}\n\n"
        "Peak memory of a fresh process (baseline: after importing, building the model and a 32-image warm-up "
        "scan) scanning the 100 files, and the same list repeated to 1000 files, layers features.7/.14/.18:\n\n"
        f"{memory}\n\n"
        f"Benchmark wall time: {time.perf_counter() - started:.0f} s."
    )
    write_section("scan", "Dataset scan (fmapviz.scan)", ".venv/bin/python benchmarks/scan.py", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
