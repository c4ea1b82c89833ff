"""A full report (without --actmax) vs the model computations it needs.

    TORCH_HOME=../shared/torch-home .venv/bin/python benchmarks/report.py

mobilenet_v2 with real weights (IMAGENET1K_V1) on assets/chelsea.png, 2 threads. "Model
computations" runs the same engine calls the report makes (summary, capture, forward,
multi-layer Grad-CAM, SmoothGrad, Integrated Gradients, deletion and insertion for each map)
and nothing else; "report" is ``fmapviz.report`` end to end, PNG, manifest and index included.
Both are timed round-robin in one process. Target: report ≤ 3× the computations.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from common import markdown_table, setup, time_interleaved, write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fmapviz  # noqa: E402
from fmapviz.pages.report import ReportSpec, hierarchy_layers  # noqa: E402


def computations(loaded: fmapviz.models.LoadedModel, image: fmapviz.inputs.LoadedImage, spec: ReportSpec) -> None:
    model, x = loaded.model, image.tensor
    rows = fmapviz.summary(model, (1, *x.shape[1:]))
    layers = hierarchy_layers(rows)
    fmapviz.feature_maps(model, x, layers, stop_early=False)
    with torch.no_grad():
        target = int(model(x).argmax())
    cam = fmapviz.saliency(model, x, "gradcam", target=target, layers=layers[-spec.gradcam_layers :])
    maps = [cam.layer_maps[name][:, 0] for name in cam.layer_maps]
    for method in spec.methods:
        maps.append(fmapviz.saliency(model, x, method, target=target, seed=spec.seed).maps[:, 0])
    for saliency_map in maps:
        fmapviz.evaluate.deletion(model, x, saliency_map, target=target, steps=spec.metric_steps)
        fmapviz.evaluate.insertion(model, x, saliency_map, target=target, steps=spec.metric_steps)


def main() -> None:
    setup()
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    image = fmapviz.load_image(ROOT / "assets" / "chelsea.png", loaded.transform)
    spec = ReportSpec()
    with tempfile.TemporaryDirectory() as folder:
        times = time_interleaved(
            {
                "model computations only": lambda: computations(loaded, image, spec),
                "full report (PNG, manifest, index)": lambda: fmapviz.report(
                    loaded, image, folder, spec=spec, force=True
                ),
            },
            rounds=3,
        )
    base = times["model computations only"]
    rows = [[name, f"{seconds:.2f}", f"{seconds / base:.2f}"] for name, seconds in times.items()]
    body = (
        "mobilenet_v2 (IMAGENET1K_V1), assets/chelsea.png, default ReportSpec (5 hierarchy layers, "
        "Grad-CAM at 3 depths, SmoothGrad, Integrated Gradients, deletion/insertion with 20 steps), no actmax. "
        "Median of 3 round-robin rounds. "
        "Target ≤ 3×.\n\n" + markdown_table(["run", "median s", "× computations"], rows)
    )
    write_section("report", "Report cost vs its model computations (issue 6)", "python benchmarks/run.py report", body)
    print(body)


if __name__ == "__main__":
    main()
