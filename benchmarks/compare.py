"""fmapviz.compare of two mobilenet_v2 copies against running both models, and its memory as images grow.

    .venv/bin/python benchmarks/compare.py [--rounds 2]

Two copies of mobilenet_v2 (IMAGENET1K_V1 when $TORCH_HOME has it, else random weights); the
second has 10% of the weights of every convolution pruned by L1 magnitude (torch.nn.utils.prune),
so the two models really differ. Data: 1000 random-crop views (random scale 0.35-1, aspect
3/4-4/3, horizontal flip, resized to 112 px; torch.Generator seed 0) of the 100 photos in
../shared/imagenet-samples, generated batch by batch (32) in memory, so the same views reach both
sides and no file decoding is timed. Floor: both models over the views under ``torch.no_grad``.
fmapviz.compare: its default layers (features.0-18 and the classifier: 20 per model, 400 CKA
pairs), channel statistics, top-1 agreement. Each side runs in a fresh process (sides alternate
between rounds); memory is that process's VmHWM increase, for compare over 100 and 1000 views.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import SHARED, markdown_table, setup, write_section
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402
from fmapviz.inputs import read_image_file  # noqa: E402

SIZE = 112
BATCH = 32
IMAGES = 1000
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def photos() -> list[torch.Tensor]:
    """The sample photos as (3, 160, 160) float tensors (shrunk once, so cropping is cheap)."""
    paths = sorted(p for p in (SHARED / "imagenet-samples").iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    tensors = []
    for path in paths:
        image = read_image_file(path).resize((160, 160))
        tensors.append(
            torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(160, 160, 3).permute(2, 0, 1)
        )
    return [tensor.float() / 255 for tensor in tensors]


def views(bases: list[torch.Tensor], count: int, seed: int = 0):
    """``count`` random-crop views in batches of BATCH, the same for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, BATCH):
        batch = []
        for index in range(start, min(count, start + BATCH)):
            base = bases[index % len(bases)]
            scale = 0.35 + 0.65 * float(torch.rand((), generator=generator))
            aspect = 0.75 + 0.58 * float(torch.rand((), generator=generator))
            height = min(160, max(16, round(160 * (scale / aspect) ** 0.5)))
            width = min(160, max(16, round(160 * (scale * aspect) ** 0.5)))
            top = int(torch.randint(0, 161 - height, (), generator=generator))
            left = int(torch.randint(0, 161 - width, (), generator=generator))
            crop = base[:, top : top + height, left : left + width]
            if float(torch.rand((), generator=generator)) < 0.5:
                crop = crop.flip(-1)
            batch.append(F.interpolate(crop[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0])
        yield (torch.stack(batch) - MEAN) / STD


def models() -> tuple[torch.nn.Module, torch.nn.Module, str]:
    try:
        model, weights = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1").model, "IMAGENET1K_V1"
    except fmapviz.FmapvizError:
        model, weights = fmapviz.load_model("mobilenet_v2", weights=None).model, "random"
    pruned = copy.deepcopy(model)
    for module in pruned.modules():
        if isinstance(module, torch.nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=0.1)
    return model.eval(), pruned.eval(), weights


def worker(kind: str, count: int) -> None:
    """Run one side in this (fresh) process; print seconds and peak memory increase (VmHWM) as JSON."""
    setup()
    model, pruned, weights = models()
    bases = photos()
    fmapviz.compare(model, pruned, views(bases, 64, seed=1))  # warm-up
    with torch.no_grad():
        for x in views(bases, 64, seed=1):
            model(x), pruned(x)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    start = time.perf_counter()
    summary = {}
    if kind == "floor":
        with torch.no_grad():
            for x in views(bases, count):
                model(x)
                pruned(x)
    else:
        result = fmapviz.compare(model, pruned, views(bases, count), names=("float", "pruned"))
        diagonal = result.cka.diagonal()
        summary = {"agreement": result.agreement, "first": float(diagonal[0]), "last": float(diagonal[-2])}
        summary["classifier"] = float(diagonal[-1])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": (_status("VmHWM") - base) / 1024, "weights": weights, **summary}))


def growth_check(batches: int = 120) -> None:
    """RSS every 20 batches while compare runs over small random batches (no per-image state may grow).

    Run as ``python benchmarks/compare.py --growth`` and as
    ``MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/compare.py --growth`` (glibc's fixed mmap threshold).
    """
    setup(threads=1)
    from fmapviz.engines import similarity

    def net() -> torch.nn.Module:
        conv = torch.nn.Conv2d
        return torch.nn.Sequential(
            conv(3, 64, 3, padding=1), torch.nn.ReLU(), conv(64, 128, 3, padding=1), torch.nn.ReLU(),
            conv(128, 256, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(256, 1000),
        ).eval()  # fmt: skip

    update, seen = similarity.StreamingCKA.update, []

    def counted(self, features):
        seen.append(1)
        if len(seen) % 20 == 0:
            print(f"batch {len(seen)}: RSS {_status('VmRSS') // 1024} MB", flush=True)
        return update(self, features)

    similarity.StreamingCKA.update = counted
    generator = torch.Generator().manual_seed(0)
    fmapviz.compare(net(), net(), (torch.randn(16, 3, 32, 32, generator=generator) for _ in range(batches)))


def _status(field: str) -> int:
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1])


def run(kind: str, count: int, env: dict[str, str] | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, str(count)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(output.stdout.strip().splitlines()[-1])


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc: no dynamic threshold, large blocks go back to the OS


def memory_rows(repeats: int = 3) -> list[list[str]]:
    """Median peak memory increase of compare over 100, 300 and 1000 views, with glibc's default allocator
    settings and with a fixed mmap threshold (which takes allocator fragmentation out of the peak)."""
    rows = []
    for label, env in (("default glibc malloc", None), ("MALLOC_MMAP_THRESHOLD_=131072", FIXED_MMAP)):
        peaks = {count: [run("compare", count, env)["peak_mb"] for _ in range(repeats)] for count in (100, 300, 1000)}
        rows.append(
            [label]
            + [f"{statistics.median(values):.0f} MB ({min(values):.0f}-{max(values):.0f})" for values in peaks.values()]
        )
    return rows


def main(rounds: int) -> int:
    samples: dict[str, list[dict]] = {"floor": [], "compare": []}
    for round_index in range(rounds):  # alternate which side goes first
        for kind in ("floor", "compare") if round_index % 2 == 0 else ("compare", "floor"):
            samples[kind].append(run(kind, IMAGES))
            print(kind, samples[kind][-1], flush=True)
    memory = memory_rows()
    floor = statistics.median(sample["seconds"] for sample in samples["floor"])
    compared = statistics.median(sample["seconds"] for sample in samples["compare"])
    result = samples["compare"][-1]
    rows = [
        ["both models, no_grad (floor)", f"{floor:.0f} s", "1.00x"],
        ["fmapviz.compare (20 + 20 layers, 400 CKA pairs)", f"{compared:.0f} s", f"{compared / floor:.2f}x"],
    ]
    body = (
        f"mobilenet_v2 ({result['weights']}) against a copy with 10% of every convolution's weights L1-pruned, "
        f"{IMAGES} random-crop views ({SIZE} px) of the 100 ImageNet samples, batch {BATCH}, 2 threads. "
        f"Each side runs in a fresh process after a 64-view warm-up; {rounds} round(s), sides alternating, "
        f"medians; load average {os.getloadavg()[0]:.1f} at the end.\n\n"
        + markdown_table(["", "time", "x floor"], rows)
        + "\n\nPeak memory increase of compare (VmHWM over the process after warm-up), median (range) of 3 fresh "
        "processes each. compare holds no per-image state (sums of O(features²), the top-1 predictions, at most 8 "
        "images); with glibc's default settings the peak varies from run to run with heap fragmentation from "
        "temporaries of varying size, whatever the number of views; with a fixed mmap threshold it is the same "
        "for 300 and 1000 views.\n\n"
        + markdown_table(["allocator", "100 views", "300 views", "1000 views"], memory)
        + "\n\n"
        f"Result: top-1 agreement {result['agreement']:.1%}; CKA of matched layers {result['first']:.3f} "
        f"(features.0), {result['last']:.3f} (features.18), {result['classifier']:.3f} (classifier).\n"
    )
    title = "Comparing two models layer by layer (issue 16)"
    path = write_section("compare", title, "python benchmarks/compare.py", body)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--growth"]:
        growth_check()
        raise SystemExit(0)
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]))
        raise SystemExit(0)
    raise SystemExit(main(int(sys.argv[2]) if sys.argv[1:2] == ["--rounds"] else 2))
