"""Saliency quality on mobilenet_v2 (real weights) over the labelled ImageNet samples.

1. Deletion and insertion AUC (Petsiuk et al., 2018) per method, target = the true class; deletion onto
   black pixels, insertion from two named blur substrates: fmapviz's ``"blur"`` (sigma 11 px, 45-px kernel at
   224 px) and RISE's ``"rise_blur"`` (sigma 5 px, 11-px kernel).
2. Cascading model-parameter randomization (Adebayo et al., 2018): Spearman rank correlation between
   each method's map on the trained model and on copies with blocks re-initialized from the top.
   Writes benchmarks/results/saliency_randomization.png.

    python benchmarks/saliency_quality.py [--images 100] [--subset 24] [--steps 16] [--random-images 8]
        [--ig-steps 16] [--samples 10] [--device cuda]

The photos and weights are read from ../shared (or from $FMAPVIZ_SHARED, for a copy taken to another machine).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, SHARED, markdown_table, setup, write_section

import fmapviz
from fmapviz.engines.saliency import METHODS

SHARED = Path(os.environ.get("FMAPVIZ_SHARED", SHARED))
SAMPLES = SHARED / "imagenet-samples"
EXPENSIVE = {"integrated_gradients": {"steps": 16}, "smoothgrad": {"samples": 10}}  # reset from the command line
RANDOMIZED_METHODS = ["gradient", "guided_backprop", "gradcam", "input_x_gradient"]
# randomized together per step, top first (fewer steps than one per block, for time)
CASCADE = [
    "classifier.1",
    "features.18",
    "features.17",
    ["features.15", "features.16"],
    ["features.1[1-4]"],
    ["features.[7-9]", "features.10"],
    ["features.[3-6]"],
    ["features.[0-2]"],
]
LAYER = "features.18"


def load_samples(count: int, loaded: fmapviz.models.LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    with open(SAMPLES / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))[:count]
    image = fmapviz.load_image([str(SAMPLES / row["file"]) for row in rows], loaded.transform)
    return image.tensor, torch.tensor([int(row["class_index"]) for row in rows])


def method_options(method: str, loaded: fmapviz.models.LoadedModel) -> dict:
    options = dict(EXPENSIVE.get(method, {}))
    if METHODS[method].takes_layer:
        options["layers"] = LAYER
    if method == "integrated_gradients":
        options.update(mean=loaded.mean, std=loaded.std)  # baseline "black" = true black pixels
    return options


PERTURBATION_HEADER = [
    "method",
    "images",
    "deletion AUC ↓ (black)",
    "insertion AUC ↑ (blur)",
    "insertion AUC ↑ (rise_blur)",
    "seconds",
]


def perturbation_table(loaded, x, classes, subset: int, steps: int, chunk: int = 8) -> tuple[list[list], float]:
    model, rows, start = loaded.model, [], time.perf_counter()
    black = fmapviz.engines.saliency.make_baseline(x, "black", loaded.mean, loaded.std)
    for method in METHODS:
        count = subset if method in EXPENSIVE else len(x)
        deletion, insertion, rise = [], [], []
        began = time.perf_counter()
        for first in range(0, count, chunk):
            images, targets = x[first : min(first + chunk, count)], classes[first : min(first + chunk, count)]
            result = fmapviz.saliency(model, images, method, target=targets, **method_options(method, loaded))
            baseline = black[first : first + len(images)]
            deletion.append(fmapviz.metrics.deletion(model, images, result, steps=steps, baseline=baseline).auc)
            insertion.append(fmapviz.metrics.insertion(model, images, result, steps=steps).auc)
            rise.append(fmapviz.metrics.insertion(model, images, result, steps=steps, baseline="rise_blur").auc)
        deletion_auc, insertion_auc, rise_auc = torch.cat(deletion), torch.cat(insertion), torch.cat(rise)
        rows.append(
            [
                method,
                count,
                f"{deletion_auc.mean():.3f} ± {deletion_auc.std() / count**0.5:.3f}",
                f"{insertion_auc.mean():.3f} ± {insertion_auc.std() / count**0.5:.3f}",
                f"{rise_auc.mean():.3f} ± {rise_auc.std() / count**0.5:.3f}",
                f"{time.perf_counter() - began:.0f}",
            ]
        )
        print(rows[-1], flush=True)
    # reference: a random map, same protocol
    generator = torch.Generator().manual_seed(0)
    random_maps = torch.rand(len(x), *x.shape[-2:], generator=generator).to(x.device)
    deletion = fmapviz.metrics.deletion(model, x, random_maps, classes, steps=steps, baseline=black).auc
    insertion = fmapviz.metrics.insertion(model, x, random_maps, classes, steps=steps).auc
    rise = fmapviz.metrics.insertion(model, x, random_maps, classes, steps=steps, baseline="rise_blur").auc
    rows.append(["(random map)", len(x), f"{deletion.mean():.3f}", f"{insertion.mean():.3f}", f"{rise.mean():.3f}", ""])
    return rows, time.perf_counter() - start


def randomization(loaded, x, classes) -> tuple[dict[str, fmapviz.metrics.RandomizationResult], float]:
    start = time.perf_counter()
    checks = {}
    for method in RANDOMIZED_METHODS:
        options = method_options(method, loaded)
        checks[method] = fmapviz.metrics.randomization_check(
            loaded.model, x, method, target=classes, blocks=CASCADE, **options
        )
        print(method, checks[method].correlations.mean(1).tolist(), flush=True)
    return checks, time.perf_counter() - start


def plot_randomization(checks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.8), dpi=110)
    blocks = next(iter(checks.values())).blocks
    positions = list(range(len(blocks) + 1))
    for method, check in checks.items():
        mean = torch.cat([torch.ones(1), check.correlations.mean(1).float().cpu()])
        spread = torch.cat([torch.zeros(1), check.correlations.std(1).float().cpu()])
        axis.plot(positions, mean, marker="o", markersize=3, label=f"{method} ({check.view})")
        axis.fill_between(positions, mean - spread, mean + spread, alpha=0.12)
    axis.set_xticks(positions, ["trained"] + blocks, rotation=60, ha="right", fontsize=8)
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.set_ylim(-0.3, 1.05)
    axis.set_ylabel("Spearman rank correlation with trained map")
    axis.set_xlabel("blocks re-initialized, cumulatively from the top")
    axis.set_title(f"Cascading randomization, mobilenet_v2, mean ± std over {check.correlations.shape[1]} images")
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--subset", type=int, default=24, help="images for integrated_gradients and smoothgrad")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--random-images", type=int, default=8, help="images for the randomization check")
    parser.add_argument("--ig-steps", type=int, default=16, help="integrated_gradients steps")
    parser.add_argument("--samples", type=int, default=10, help="smoothgrad samples")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    EXPENSIVE.update(integrated_gradients={"steps": args.ig_steps}, smoothgrad={"samples": args.samples})
    setup(threads=2)
    os.environ.setdefault("TORCH_HOME", str(SHARED / "torch-home"))
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1", device=args.device)
    x, classes = load_samples(args.images, loaded)
    x, classes = x.to(args.device), classes.to(args.device)
    rows, perturbation_seconds = perturbation_table(loaded, x, classes, args.subset, args.steps)
    checks, randomization_seconds = randomization(loaded, x[: args.random_images], classes[: args.random_images])
    figure = RESULTS_DIR / "saliency_randomization.png"
    plot_randomization(checks, figure)
    picks = list(range(len(checks["gradient"].blocks)))
    blocks = checks["gradient"].blocks
    curve_rows = [[method] + [f"{check.correlations[i].mean():.2f}" for i in picks] for method, check in checks.items()]
    settings = ", ".join(f"{name} {value}" for name, value in EXPENSIVE.items())
    body = f"""mobilenet_v2 IMAGENET1K_V1, the first {len(x)} photos of ../shared/imagenet-samples, target = true class.

### Deletion / insertion AUC

{args.steps} pixel steps (RISE uses 224); deletion replaces pixels by black; insertion starts from a
blurred image, with two substrates: `blur` (fmapviz's default, sigma = 224/20 = 11 px, 45-px kernel) and
`rise_blur` (RISE's, sigma 5 px, 11-px kernel); score = softmax probability of the true class.
Mean ± standard error. Layer methods use
{LAYER}. Settings: {settings}, on the first {args.subset} images. Lower deletion and higher insertion are better.
Device: {args.device}.

{markdown_table(PERTURBATION_HEADER, rows)}

### Cascading randomization (Adebayo et al., 2018)

Blocks re-initialized cumulatively from the top ({", ".join(blocks[:3])}, ... {blocks[-1]}), on a deep copy; mean
Spearman rank correlation with the trained model's map over the first {args.random_images} images, each method in
its display view (max_abs for the gradient, abs for guided backprop, signed for input×gradient, positive for
Grad-CAM); BatchNorm running statistics are kept (only weights are re-initialized). Curves:
`benchmarks/results/saliency_randomization.png`.

{markdown_table(["method"] + [f"after {blocks[i]}" for i in picks], curve_rows)}

Time: perturbation metrics {perturbation_seconds:.0f} s, randomization {randomization_seconds:.0f} s."""
    write_section(
        "saliency_quality",
        "Saliency quality (mobilenet_v2, real weights)",
        "python benchmarks/saliency_quality.py " + " ".join(sys.argv[1:]),
        body,
    )


if __name__ == "__main__":
    main()
