"""Feature-map capture: plain forward vs fmapviz.capture vs captum, torchvision FX and torchlens.

    .venv/bin/python benchmarks/capture.py

resnet50 and mobilenet_v2 (random weights, seed 0, eval), batch 8, 224×224, 2 threads,
torch.no_grad; also batch 1 with 4 and 8 layers. Times are medians of round-robin rounds, divided by the plain forward.
Peak memory: increase of the resident high-water mark (VmHWM) in a fresh process for one call, captured maps held.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision
from common import markdown_table, peak_rss_delta_mb, setup, time_interleaved, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402
from fmapviz.hooks import resolve_layers  # noqa: E402
from fmapviz.hooks.copy_guard import storage_key  # noqa: E402

LAYERS = {
    "resnet50": (["layer1", "layer2", "layer3", "layer4"], ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]),
    "mobilenet_v2": (
        ["features.3", "features.6", "features.13", "features.17"],
        ["features.1", "features.5", "features.10", "features.15"],
    ),
}


def captured_mb(maps: dict[str, torch.Tensor]) -> float:
    storages = {storage_key(t): t.untyped_storage().nbytes() for t in maps.values()}
    return sum(storages.values()) / 2**20


def run_once(model, x, names):
    with torch.no_grad(), fmapviz.capture(model, names) as maps:
        model(x)
    return maps


def time_model(name: str, x: torch.Tensor) -> list[list[object]]:
    from captum.attr import LayerActivation
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = torchvision.models.get_model(name, weights=None).eval()
    four, extra = LAYERS[name]
    modules = dict(model.named_modules())
    # captum cannot hook a module called twice (ResNet's shared ReLU): leave those out, as in PEERS.md
    called: dict[str, int] = {}
    with torch.no_grad(), fmapviz.capture(model, "all") as probe:
        model(x[:1])
    for key in probe:
        base = key.split("#")[0]
        called[base] = called.get(base, 0) + 1
    leaves = [n for n in resolve_layers(model, "all") if not list(modules[n].children()) and called.get(n) == 1]
    fx_all = get_graph_node_names(model)[1][1:]
    fx4 = create_feature_extractor(model, return_nodes=four)
    fxall = create_feature_extractor(model, return_nodes=fx_all)
    captum4 = LayerActivation(model, [modules[n] for n in four])
    captum_leaves = LayerActivation(model, [modules[n] for n in leaves])
    methods = {
        "plain forward": lambda: model(x),
        "fmapviz capture, 4 layers": lambda: run_once(model, x, four),
        "fmapviz capture, 8 layers": lambda: run_once(model, x, four + extra),
        "fmapviz capture, every module (correct values)": lambda: run_once(model, x, "all"),
        "fmapviz capture, 4 layers, float16": lambda: fmapviz.feature_maps(
            model, x, four, dtype=torch.float16, stop_early=False
        ),
        "captum LayerActivation, 4 layers": lambda: captum4.attribute(x),
        "captum LayerActivation, every leaf called once": lambda: captum_leaves.attribute(x),
        "torchvision create_feature_extractor, 4 nodes": lambda: fx4(x),
        "torchvision create_feature_extractor, all nodes": lambda: fxall(x),
    }
    try:
        import torchlens

        methods["torchlens trace, save all (default)"] = lambda: torchlens.trace(model, x)
    except Exception as error:  # an optional peer: report, do not fail
        print(f"torchlens skipped: {error}")
    with torch.no_grad():
        times = time_interleaved(methods, rounds=10 if name == "resnet50" else 20)
    base = times["plain forward"]
    return [[name, method, f"{seconds / base:.2f}", f"{seconds:.3f}"] for method, seconds in times.items()]


def time_one_image(name: str) -> list[list[object]]:
    """The common interactive case: one image, a few layers (maps small enough to be copied as captured)."""
    from captum.attr import LayerActivation

    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    four, extra = LAYERS[name]
    modules = dict(model.named_modules())
    captum4 = LayerActivation(model, [modules[n] for n in four])
    methods = {
        "plain forward": lambda: model(x),
        "fmapviz capture, 4 layers": lambda: run_once(model, x, four),
        "fmapviz capture, 8 layers": lambda: run_once(model, x, four + extra),
        "captum LayerActivation, 4 layers": lambda: captum4.attribute(x),
    }
    with torch.no_grad():
        times = time_interleaved(methods, rounds=30 if name == "resnet50" else 60)
    base = times["plain forward"]
    return [[name, method, f"{seconds / base:.2f}", f"{seconds:.4f}"] for method, seconds in times.items()]


def memory_rows(name: str) -> list[list[object]]:
    four, _ = LAYERS[name]
    setup_code = (
        "import sys, torchvision; sys.path.insert(0, '.'); sys.path.insert(0, 'benchmarks')\n"
        "import fmapviz\nfrom capture import captured_mb\n"
        f"torch.manual_seed(0); model = torchvision.models.get_model('{name}', weights=None).eval()\n"
        "x = torch.randn(8, 3, 224, 224)\nmaps = {}"
    )
    cases = {
        "plain forward": "with torch.no_grad(): out = model(x)",
        "fmapviz, 4 layers": f"maps = fmapviz.feature_maps(model, x, {four!r}, stop_early=False)",
        "fmapviz, 4 layers, float16": f"maps = fmapviz.feature_maps(model, x, {four!r}, dtype=torch.float16)",
        "fmapviz, every module": "maps = fmapviz.feature_maps(model, x, 'all', stop_early=False)",
        "fmapviz, every module, float16": "maps = fmapviz.feature_maps(model, x, 'all', dtype=torch.float16)",
    }
    measured = {case: peak_rss_delta_mb(code, setup_code, "captured_mb(maps)") for case, code in cases.items()}
    plain = measured["plain forward"][0]
    rows = []
    for case, (delta, captured) in measured.items():
        extra = delta - plain
        ratio = f"{extra / captured:.2f}" if captured else "–"
        rows.append([name, case, f"{delta:.0f}", f"{captured:.0f}", f"{extra:.0f}", ratio])
    return rows


def main() -> None:
    setup()
    x = torch.randn(8, 3, 224, 224)
    time_table = []
    memory_table = []
    one_image_table = []
    for name in LAYERS:
        time_table += time_model(name, x)
        one_image_table += time_one_image(name)
        memory_table += memory_rows(name)
        print(markdown_table(["model", "method", "× plain", "s"], time_table), flush=True)
    body = (
        "resnet50 and mobilenet_v2, random weights (seed 0), eval, batch 8, 224×224, torch.no_grad, 2 threads. "
        "Methods timed round-robin in one process; medians of 10 (resnet50) or 20 (mobilenet_v2) rounds, "
        "each round starting one method later.\n\n"
        + markdown_table(["model", "method", "time × plain forward", "median s"], time_table)
        + "\n\nOne image (batch 1), the interactive case: medians of 30 (resnet50) or 60 (mobilenet_v2) rounds.\n\n"
        + markdown_table(["model", "method", "time × plain forward", "median s"], one_image_table)
        + "\n\nPeak memory: VmHWM increase in a fresh process for one call with the maps held (median of 3 processes). "
        "Extra = peak Δ − plain forward's peak Δ. Target: extra ≤ 1.15 × captured bytes; float16 halves it."
        " The peak of the plain forward itself moves by ±25 MB between runs (glibc's heap), so captures of a few MB"
        " (the 4-layer rows) read as noise around zero; the ratio means something for the large captures.\n\n"
        + markdown_table(["model", "case", "peak Δ MB", "captured MB", "extra MB", "extra / captured"], memory_table)
    )
    write_section("capture", "Capture overhead and memory (issue 2)", "python benchmarks/run.py capture", body)


if __name__ == "__main__":
    main()
