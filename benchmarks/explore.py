"""The explorer's budget: a whole site of the real mobilenet_v2 over 100 photos, then a re-run with 10 more.

    .venv/bin/python benchmarks/explore.py

Runs the command line exactly as a user would, with default settings:
``fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers features.7 features.14 -o SITE``
on the 100 photos of ../shared/imagenet-samples (linked into a temporary folder), then adds 10 photos
(mirror images of 10 of them, so new photos with new activations) and runs the same command again.
Reports wall-clock time of each run, what the re-run recomputed, and the site's size on disk.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, markdown_table, write_section
from PIL import Image, ImageOps

from fmapviz.explorer import ExploreSettings
from fmapviz.explorer.cache import MARKER

ROOT = Path(__file__).resolve().parents[1]


def run(photos: Path, site: Path) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one command-line run."""
    command = [sys.executable, "-m", "fmapviz", "explore", "mobilenet_v2", "--weights", "IMAGENET1K_V1"]
    command += [str(photos), "--layers", "features.7", "features.14", "-o", str(site), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - start, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def size_mb(folder: Path) -> tuple[float, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in files) / 1e6, len(files)


def stage_seconds(site: Path) -> str:
    """The seconds of each stage of the last run, as the site's marker file records them."""
    seconds = json.loads((site / MARKER).read_text())["seconds"]
    return ", ".join(f"{stage} {value:.0f}" for stage, value in seconds.items())


def main() -> None:
    samples = sorted((SHARED / "imagenet-samples").glob("*.JPEG"))
    with tempfile.TemporaryDirectory() as temporary:
        photos, site = Path(temporary) / "photos", Path(temporary) / "site"
        photos.mkdir()
        for path in samples:
            (photos / path.name).symlink_to(path)
        load = os.getloadavg()[0]
        first, first_cpu = run(photos, site)
        first_stages = stage_seconds(site)
        first_size, first_files = size_mb(site)
        for path in samples[::10]:
            ImageOps.mirror(Image.open(path).convert("RGB")).save(photos / f"mirrored_{path.stem}.jpg", quality=90)
        before = {path: path.stat().st_mtime_ns for path in (site / "data").rglob("*") if path.is_file()}
        second, second_cpu = run(photos, site)
        second_stages = stage_seconds(site)
        load = max(load, os.getloadavg()[0])
        after = {path: path.stat().st_mtime_ns for path in (site / "data").rglob("*") if path.is_file()}
        rewritten = sum(1 for path, stamp in after.items() if before.get(path) != stamp)
        size, files = size_mb(site)
    rows = [
        [f"{len(samples)} photos, empty site", _minutes(first), _minutes(first_cpu), first_stages,
         f"{first_size:.1f} MB", first_files],
        ["+10 photos, re-run", _minutes(second), _minutes(second_cpu), second_stages, f"{size:.1f} MB", files],
    ]  # fmt: skip
    settings = ExploreSettings()
    body = (
        "`fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers features.7 features.14 -o SITE` "
        f"with the default settings ({settings}): every channel (64 + 160) gets its dataset crops and "
        "input-gradient map, every photo its prediction, Grad-CAM and explained channels, and every channel "
        "an activation-maximization image (the 16 per layer that fire hardest also get 2 alternatives). "
        f"PHOTOS: the {len(samples)} photos of ../shared/imagenet-samples; the re-run adds 10 mirrored photos and "
        f"rewrote {rewritten} of {len(after)} cached data files. Load average before and after: {load:.1f} on "
        f"{os.cpu_count()} cores. CPU time is the process's user + system seconds (both threads); stage seconds "
        "are wall clock, as the site's `fmapviz-site.json` records them.\n\n"
        + markdown_table(["run", "wall clock", "CPU time", "stages (s)", "site size", "files"], rows)
    )
    print(body)
    write_section("explore", "Explorer budget: mobilenet_v2 site over 100 photos (issue 14)",
                  "python benchmarks/explore.py", body)  # fmt: skip


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


if __name__ == "__main__":
    main()
