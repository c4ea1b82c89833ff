"""Saliency quality on mobilenet_v2 (real weights) over the labelled ImageNet samples: one row per method.

For every method of the registry, target = the true class:

1. Deletion and insertion AUC (Petsiuk et al., 2018), ROAD (Rong et al., 2022; MoRF/LeRF with noisy linear
   imputation), Average Drop and Increase in Confidence (Chattopadhyay et al., 2018), seconds per image
   (the method only), and a random map as the floor row.
2. Cascading model-parameter randomization (Adebayo et al., 2018): Spearman rank correlation between each
   method's map on the trained model and on copies with blocks re-initialized from the top; the table says
   which methods stay similar. Writes benchmarks/results/saliency_randomization.png.
3. The table as a picture, for the README: benchmarks/results/saliency_quality_table.png.

    python benchmarks/saliency_quality.py [--images 100] [--subset 16] [--steps 16] [--random-images 4]
        [--device cuda]

Expensive methods (see EXPENSIVE) run with reduced settings on the first --subset images; the table says which.
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
from fmapviz.engines.saliency import METHODS, make_baseline

SHARED = Path(os.environ.get("FMAPVIZ_SHARED", SHARED))
SAMPLES = SHARED / "imagenet-samples"
LAYER = "features.18"
EXPENSIVE = {
    "integrated_gradients": {"steps": 16},
    "smoothgrad": {"samples": 10},
    "scorecam": {},
    "smoothgrad_campp": {},
    "occlusion": {"patch": 32, "stride": 32},
    "feature_ablation": {"patch": 32},
    "kernel_shap": {"patch": 32, "samples": 50},
    "gradient_shap": {"samples": 5},
}
"""Methods run on the first --subset images only, with these settings (the rest keep their defaults)."""
# randomized together per step, top first
CASCADE = ["classifier.1", ["features.1[4-8]"], ["features.[7-9]", "features.1[0-3]"]]
ROAD_FRACTIONS = [0.2, 0.5, 0.8]  # reset from the command line
UNSUPPORTED: dict[str, str] = {}  # method -> why it cannot run on mobilenet_v2 (said under the table)
SIMILAR = 0.5  # mean Spearman correlation after the last cascade step above which a method "stays similar"


def load_samples(count: int, loaded: fmapviz.models.LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    with open(SAMPLES / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))[:count]
    image = fmapviz.load_image([str(SAMPLES / row["file"]) for row in rows], loaded.transform)
    return image.tensor, torch.tensor([int(row["class_index"]) for row in rows])


def method_options(method: str, loaded: fmapviz.models.LoadedModel) -> dict:
    options = dict(EXPENSIVE.get(method, {}))
    entry = METHODS[method]
    if entry.takes_layer:
        options["layers"] = LAYER
    if "mean" in entry.options:
        options.update(mean=loaded.mean, std=loaded.std)  # "black" baselines = true black pixels
    return options


def score_maps(loaded, images, maps, targets, steps: int, black: torch.Tensor) -> dict[str, torch.Tensor]:
    model = loaded.model
    road = fmapviz.evaluate.road(model, images, maps, targets, fractions=ROAD_FRACTIONS, iterations=30)
    change = fmapviz.evaluate.average_drop_increase(model, images, maps, targets)
    return {
        "deletion": fmapviz.evaluate.deletion(model, images, maps, targets, steps=steps, baseline=black).auc,
        "insertion": fmapviz.evaluate.insertion(model, images, maps, targets, steps=steps).auc,
        "road": road.score,
        "drop": change.drop,
        "increase": change.increase.float(),
    }


def mean_error(values: torch.Tensor) -> str:
    return f"{values.mean():.3f} ± {values.std() / len(values) ** 0.5:.3f}"


def quality_rows(loaded, x, classes, subset: int, steps: int, chunk: int = 8) -> tuple[list[list], dict]:
    black = make_baseline(x, "black", loaded.mean, loaded.std)
    rows, summaries = [], {}
    methods = [*METHODS, "(random map)"]
    for method in methods:
        count = subset if method in EXPENSIVE else len(x)
        scores: dict[str, list[torch.Tensor]] = {}
        seconds = 0.0
        try:
            for first in range(0, count, chunk):
                images, targets = x[first : min(first + chunk, count)], classes[first : min(first + chunk, count)]
                began = time.perf_counter()
                if method == "(random map)":
                    generator = torch.Generator().manual_seed(first)
                    maps = torch.rand(len(images), *x.shape[-2:], generator=generator).to(x.device)
                else:
                    result = fmapviz.saliency(
                        loaded.model, images, method, target=targets, **method_options(method, loaded)
                    )
                    maps = result.view_maps()[:, 0]
                seconds += time.perf_counter() - began
                for name, values in score_maps(
                    loaded, images, maps, targets, steps, black[first : first + len(images)]
                ).items():
                    scores.setdefault(name, []).append(values.cpu())
        except ValueError as error:  # a method captum cannot run on this model (LRP and ReLU6)
            rows.append([method, 0, "—", "—", "—", "—", "—", "unsupported"])
            UNSUPPORTED[method] = str(error).split(";")[0]
            print(rows[-1], flush=True)
            continue
        merged = {name: torch.cat(values) for name, values in scores.items()}
        summaries[method] = merged
        rows.append(
            [
                method,
                count,
                mean_error(merged["deletion"]),
                mean_error(merged["insertion"]),
                mean_error(merged["road"]),
                f"{100 * merged['drop'].mean():.1f}",
                f"{100 * merged['increase'].mean():.0f}",
                f"{seconds / count:.3f}" if method != "(random map)" else "",
            ]
        )
        print(rows[-1], flush=True)
    return rows, summaries


def randomization(loaded, x, classes) -> dict[str, fmapviz.evaluate.RandomizationResult | str]:
    checks: dict[str, fmapviz.evaluate.RandomizationResult | str] = {}
    for method in METHODS:
        try:
            checks[method] = fmapviz.evaluate.randomization_check(
                loaded.model, x, method, target=classes, blocks=CASCADE, **method_options(method, loaded)
            )
            print(method, checks[method].correlations.mean(1).tolist(), flush=True)
        except ValueError as error:
            checks[method] = str(error).split(";")[0][:60]
    return checks


def plot_randomization(checks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = {method: check for method, check in checks.items() if not isinstance(check, str)}
    figure, axis = plt.subplots(figsize=(10, 5.5), dpi=110)
    blocks = next(iter(checks.values())).blocks
    positions = list(range(len(blocks) + 1))
    colors = plt.get_cmap("tab20")
    for index, (method, check) in enumerate(checks.items()):
        mean = torch.cat([torch.ones(1), check.correlations.mean(1).float().cpu()])
        axis.plot(positions, mean, marker="o", markersize=3, color=colors(index % 20), label=f"{method} ({check.view})")
    axis.set_xticks(positions, ["trained"] + blocks, rotation=30, ha="right", fontsize=8)
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.axhline(SIMILAR, color="gray", linewidth=0.8, linestyle=":")
    axis.set_ylim(-0.3, 1.05)
    axis.set_ylabel("Spearman rank correlation with trained map")
    axis.set_xlabel("blocks re-initialized, cumulatively from the top")
    images = next(iter(checks.values())).correlations.shape[1]
    axis.set_title(f"Cascading randomization, mobilenet_v2, mean over {images} images")
    axis.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_table(header: list[str], rows: list[list], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(13, 0.32 * (len(rows) + 2)), dpi=110)
    axis.axis("off")
    table = axis.table(cellText=[[str(cell) for cell in row] for row in rows], colLabels=header, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1, 1.25)
    for (row, _column), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
        elif rows[row - 1][0] == "(random map)":
            cell.set_facecolor("#fbe9e7")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--subset", type=int, default=16, help="images for the EXPENSIVE methods")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--random-images", type=int, default=4, help="images for the randomization check")
    parser.add_argument("--road-fractions", nargs="+", type=float, default=list(ROAD_FRACTIONS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    ROAD_FRACTIONS[:] = args.road_fractions
    setup(threads=2)
    os.environ.setdefault("TORCH_HOME", str(SHARED / "torch-home"))
    started = time.perf_counter()
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1", device=args.device)
    x, classes = load_samples(args.images, loaded)
    x, classes = x.to(args.device), classes.to(args.device)
    rows, _ = quality_rows(loaded, x, classes, args.subset, args.steps)
    checks = randomization(loaded, x[: args.random_images], classes[: args.random_images])
    plot_randomization(checks, RESULTS_DIR / "saliency_randomization.png")
    for row in rows:
        check = checks.get(row[0])
        if check is None:
            row.append("")
        elif isinstance(check, str):
            row.append("—")
        else:
            final = float(check.correlations[-1].mean())
            row.append(f"{final:.2f} {'similar' if final > SIMILAR else 'changes'}")
    header = [
        "method",
        "images",
        "deletion AUC ↓",
        "insertion AUC ↑",
        "ROAD ↑",
        "Avg Drop % ↓",
        "Incr. Conf. % ↑",
        "s / image",
        "randomized ρ",
    ]
    settings = "; ".join(f"{name} {value}" for name, value in EXPENSIVE.items() if value)
    title = (
        f"mobilenet_v2 (IMAGENET1K_V1), {len(x)} ImageNet photos, true class; CAM layer {LAYER}; "
        f"{args.steps} deletion/insertion steps; ρ after {len(CASCADE)} randomization steps, "
        f"{args.random_images} images"
    )
    plot_table(header, rows, RESULTS_DIR / "saliency_quality_table.png", title)
    body = f"""mobilenet_v2 IMAGENET1K_V1, the first {len(x)} photos of ../shared/imagenet-samples, target = true class,
each method in its default view, CAM methods on {LAYER}. Device: {args.device}; load average {os.getloadavg()[0]:.1f}
at the end (other jobs on the machine make the seconds upper bounds).

* Deletion / insertion AUC: {args.steps} pixel steps; deletion replaces pixels by true black, insertion starts
  from the blurred image (fmapviz's 'blur' substrate); score = softmax probability. Lower deletion and higher
  insertion are better.
* ROAD: (mean LeRF - mean MoRF) / 2 over {", ".join(f"{f:.0%}" for f in ROAD_FRACTIONS)} of pixels removed, noisy
  linear imputation (noise 0.01; the solver capped at 30 conjugate-gradient steps per resolution level, so the
  fill is close to, not exactly, the linear solution), softmax probability; higher is better.
* Average Drop (lower is better) and Increase in Confidence (higher is better): the model sees only map x input.
* s / image: the method alone, mean over the images (metrics excluded).
* randomized ρ: mean Spearman correlation with the trained model's map after re-initializing
  {", ".join(str(b) for b in CASCADE)} (top first, cumulative) on the first {args.random_images} images;
  "similar" above {SIMILAR}: such a map changes little when the model's learned weights are destroyed
  (Adebayo et al., 2018), so it mostly reflects the input.
* Reduced settings (first {args.subset} images only): {settings}; smoothgrad_campp on the subset with its defaults.
  The rest run on all {len(x)} images with their defaults. Mean ± standard error.

![quality table](results/saliency_quality_table.png)

{markdown_table(header, rows)}

{"".join(f"{method}: {reason}. " for method, reason in UNSUPPORTED.items())}Randomization curves:
`benchmarks/results/saliency_randomization.png`. Total time {time.perf_counter() - started:.0f} s."""
    write_section(
        "saliency_quality",
        "Saliency quality, every method (mobilenet_v2, real weights)",
        "python benchmarks/saliency_quality.py " + " ".join(sys.argv[1:]),
        body,
    )


if __name__ == "__main__":
    main()
