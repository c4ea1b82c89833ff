"""The whole mobilenet_v2 in the explorer (issue 26): time and size per stage, the widest layer page, 1 vs 2 processes.

    .venv/bin/python benchmarks/explore_model.py            # everything (about 1.5 h on 2 CPU cores)
    .venv/bin/python benchmarks/explore_model.py --part quick|default|shards

Runs the command line as a user would, on the 100 photos of ../shared/imagenet-samples:
- quick: ``fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers all --quick`` (every block,
  features.0 … features.18, 2,816 channels): wall clock, seconds per stage, size per page type and the load time of
  the widest layer page (features.18, 1,280 tiles) in headless Chromium.
- default: the same site at the default settings (128 activation-maximization steps, 128 px, three seeds for
  the 16 strongest channels of each layer, early stopping at 1 %): wall clock, seconds per stage, size per page
  type (the issue's target: at most 100 MB).
- shards: 20 photos, two layers, ``--quick``, with 1 process and with ``torchrun --nproc-per-node 2`` (gloo): wall
  clock and whether the two sites hold the same files with the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import SHARED, markdown_table, write_section

from fmapviz.explorer.cache import MARKER

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "fmapviz", "explore", "mobilenet_v2", "--weights", "IMAGENET1K_V1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


def explore(photos: Path, site: Path, *options: str, processes: int = 1, threads: int = 2) -> float:
    """Wall-clock seconds of one command-line run with ``threads`` per process (``processes`` > 1: under torchrun,
    gloo on the CPU)."""
    launcher = [sys.executable]
    env = {**ENV, "OMP_NUM_THREADS": str(threads)}
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = launcher + COMMAND + [str(photos), *options, "-o", str(site), "--quiet", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - start


def sizes(site: Path) -> dict[str, tuple[float, int]]:
    """MB and file count per kind of file: each page type, each stage's data, the scripts."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in site.rglob("*"):
        if not path.is_file():
            continue
        parts = path.relative_to(site).parts
        if parts[0] == "data":
            stage = parts[1].rsplit("-", 1)[0]
            kind = f"data: {stage}" + (" (shared crops)" if len(parts) > 2 and parts[2] == "crops" else "")
        elif path.suffix == ".html":
            kind = f"pages: {parts[0] if len(parts) > 1 else 'index'}"
        else:
            kind = "scripts, styles, status"
        found[kind][0] += path.stat().st_size
        found[kind][1] += 1
    return {kind: (total / 1e6, count) for kind, (total, count) in sorted(found.items())}


def size_rows(site: Path) -> list[list[object]]:
    table = sizes(site)
    rows = [[kind, f"{mb:.1f} MB", count] for kind, (mb, count) in table.items()]
    rows.append(["**total**", f"**{sum(mb for mb, _ in table.values()):.1f} MB**", sum(c for _, c in table.values())])
    return rows


def stages(site: Path) -> str:
    seconds = json.loads((site / MARKER).read_text())["seconds"]
    return ", ".join(f"{stage} {value:.0f}" for stage, value in seconds.items())


def layer_page_ms(page: Path) -> dict[str, float]:
    """The best of three loads of a layer page in headless Chromium: DOMContentLoaded, load, and a re-sort."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
        runs = []
        for _ in range(3):
            tab = browser.new_page()
            tab.goto(page.as_uri())
            timing = tab.evaluate(
                """() => { const n = performance.getEntriesByType('navigation')[0];
                           return {ready: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"""
            )
            timing["sort"] = tab.evaluate(
                """() => { const t0 = performance.now(); const sort = document.getElementById('sort');
                           sort.value = 'max'; sort.dispatchEvent(new Event('change')); document.body.offsetHeight;
                           return performance.now() - t0; }"""
            )
            runs.append(timing)
            tab.close()
        browser.close()
    return min(runs, key=lambda t: t["load"] + t["sort"])


def digests(site: Path) -> dict[str, str]:
    """Every data file and page of a site with a hash of its bytes (the status file, which holds times, aside)."""
    return {
        path.relative_to(site).as_posix(): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in site.rglob("*")
        if path.is_file() and path.name != MARKER
    }


def linked_photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    for path in sorted((SHARED / "imagenet-samples").glob("*.JPEG"))[:count]:
        (folder / path.name).symlink_to(path)
    return folder


def quick_and_default(temporary: Path, parts: set[str]) -> str:
    photos, site = linked_photos(temporary / "photos", 100), temporary / "site"
    body = ""
    if "quick" in parts:
        wall = explore(photos, site, "--layers", "all", "--quick")
        timing = layer_page_ms(site / "layers" / "features.18.html")
        body += (
            "### Whole mobilenet_v2, quick preset\n\n"
            "`fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers all --quick --device cpu` "
            f"(100 photos, features.0 … features.18): **{wall / 60:.1f} min** wall clock; stages (s): "
            f"{stages(site)}.\n\nLayer page of features.18 (1,280 tiles) in headless Chromium, best of 3: "
            f"DOMContentLoaded {timing['ready']:.0f} ms, load {timing['load']:.0f} ms, re-sort by max "
            f"{timing['sort']:.0f} ms.\n\n" + markdown_table(["what", "size", "files"], size_rows(site)) + "\n\n"
        )
    if "default" in parts:
        wall = explore(photos, site, "--layers", "all", "--force")
        body += (
            "### Whole mobilenet_v2, default settings\n\n"
            "`fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers all --force --device cpu` "
            "(reuses the quick run's scan, photo and channel data, whose settings are the same): "
            f"{wall / 60:.1f} min; stages (s): {stages(site)}.\n\n"
            + markdown_table(["what", "size", "files"], size_rows(site))
            + "\n\n"
        )
    return body


def shards(temporary: Path) -> str:
    photos = linked_photos(temporary / "shard-photos", 20)
    options = ["--layers", "features.7", "features.14", "--quick"]
    runs = {  # (processes, threads each): the same 2 cores
        (1, 2): explore(photos, temporary / "one-2", *options),
        (1, 1): explore(photos, temporary / "one-1", *options, threads=1),
        (2, 1): explore(photos, temporary / "two-1", *options, processes=2, threads=1),
    }
    found = {setup: digests(temporary / f"{'one' if setup[0] == 1 else 'two'}-{setup[1]}") for setup in runs}
    reference = found[(1, 1)]
    rows, differ = [], {}
    for setup, wall in runs.items():
        same = sum(1 for name, digest in reference.items() if found[setup].get(name) == digest)
        kinds: dict[str, int] = defaultdict(int)
        for name, digest in reference.items():
            if found[setup].get(name) != digest:
                parts = name.split("/")
                kinds[parts[1].rsplit("-", 1)[0] if parts[0] == "data" else parts[0]] += 1
        differ[setup] = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none"
        label = "–" if setup == (1, 1) else f"{same} of {len(reference)}"
        rows.append(
            [setup[0], setup[1], f"{wall:.0f} s", len(found[setup]), label, "–" if setup == (1, 1) else differ[setup]]
        )
    return (
        "### 1 vs 2 processes (torchrun, gloo, CPU)\n\n"
        "`fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 PHOTOS --layers features.7 features.14 --quick` on 20 "
        "photos, as one process and under `torchrun --standalone --nproc-per-node 2`, on the same 2 cores:\n\n"
        + markdown_table(
            ["processes", "threads each", "wall clock", "files", "identical to 1 process, 1 thread", "differ"], rows
        )
        + "\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["quick", "default", "shards"], action="append")
    parts = set(parser.parse_args().part or ["quick", "default", "shards"])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder)
        body = quick_and_default(temporary, parts) if parts & {"quick", "default"} else ""
        if "shards" in parts:
            body += shards(temporary)
    body += f"Load average at the start: {load:.1f} on {os.cpu_count()} cores.\n"
    print(body)
    command = "python benchmarks/explore_model.py" + "".join(f" --part {p}" for p in sorted(parts) if len(parts) < 3)
    write_section("explore_model", "The whole model in the explorer: mobilenet_v2 (issue 26)", command, body)


if __name__ == "__main__":
    main()
