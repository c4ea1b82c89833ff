"""Quality of fmapviz.maximize on mobilenet_v2 with real ImageNet weights.

(a) class visualizations (224 px, 256 steps, Fourier + decorrelation + standard transforms) are
    classified as their class with softmax >= 0.9, evaluated on the final image without random
    transforms, through the model's normalization;
(b) 16 channels of features.10 reach at least 2x the highest channel mean over 100 ImageNet photos;
(c) Fourier + decorrelated images hold less high-frequency energy than pixel ones at equal steps;
(d) channel and class galleries under assets/figures/.

Run from the repo root: TORCH_HOME=../shared/torch-home .venv/bin/python benchmarks/actmax_quality.py
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import SHARED, markdown_table, setup, write_section  # noqa: E402

import fmapviz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "assets" / "figures"
CLASSES = [1, 9, 130, 207, 291, 417, 530, 850, 954, 980]  # goldfish ... volcano
LAYER = "features.10"
STEPS = int(os.environ.get("ACTMAX_STEPS", 256))


def high_frequency_fraction(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Share of each image's spectral energy (mean removed) above ``cutoff`` cycles per pixel."""
    gray = images.mean(1)
    gray = gray - gray.mean((-2, -1), keepdim=True)
    power = torch.fft.rfft2(gray).abs().pow(2)
    rows = torch.fft.fftfreq(gray.shape[-2])[:, None]
    cols = torch.fft.rfftfreq(gray.shape[-1])[None, :]
    high = (rows**2 + cols**2).sqrt() > cutoff
    return (power * high).sum((-2, -1)) / power.sum((-2, -1))


def shrunk(result, size: int = 112):
    """The result with images downsampled (antialiased) so a gallery PNG stays under ~400 KB."""
    images = torch.nn.functional.interpolate(result.images, size=size, mode="bilinear", antialias=True)
    return dataclasses.replace(result, images=images.clamp(0, 1))


def photo_channel_max(model: torch.nn.Module, transform) -> torch.Tensor:
    """Highest channel mean of LAYER over the 100 ImageNet sample photos."""
    folder = SHARED / "imagenet-samples"
    with open(folder / "labels.csv") as handle:
        files = [row[0] for row in csv.reader(handle) if row and row[0].lower().endswith((".jpg", ".jpeg", ".png"))]
    best = None
    for start in range(0, len(files), 20):
        batch = fmapviz.load_image([str(folder / name) for name in files[start : start + 20]], transform=transform)
        means = fmapviz.feature_maps(model, batch.tensor, LAYER)[LAYER].mean((-2, -1)).amax(0)
        best = means if best is None else torch.maximum(best, means)
    return best, len(files)


def main() -> None:
    setup()
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    model, names = loaded.model, loaded.categories
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    sections = []

    # (a) classes, batched in one optimization
    start = time.perf_counter()
    classes = fmapviz.maximize(model, "class", channels=CLASSES, size=224, steps=STEPS, batch_size=len(CLASSES))
    class_seconds = time.perf_counter() - start
    with torch.no_grad():
        probabilities = model((classes.images - mean) / std).softmax(1)
    rows, hits = [], 0
    for position, index in enumerate(CLASSES):
        probability = probabilities[position, index].item()
        top = probabilities[position].argmax().item()
        hits += probability >= 0.9
        rows.append(
            [index, names[index], f"{probability:.3f}", names[top], f"{classes.final_activation[position]:.1f}"]
        )
    sections.append(
        f"### (a) class visualizations: {hits}/{len(CLASSES)} classified as their class with softmax >= 0.9\n\n"
        f"224 px, {STEPS} steps, fft + decorrelate + standard transforms, 10 classes in one batch: "
        f"{class_seconds:.0f} s. Evaluated on the final image, no random transforms, ImageNet normalization.\n\n"
        + markdown_table(["class", "name", "softmax", "top-1", "logit"], rows)
    )
    torch.save(classes, "/tmp/actmax_quality_classes.pt")
    fmapviz.show_gallery(shrunk(classes), names=[names[i] for i in CLASSES], ncols=5, title="mobilenet_v2 classes",
                         tile_pixels=128).save(FIGURES / "actmax_classes.png")  # fmt: skip

    # (b) 16 channels of features.10 vs. the best of 100 photos
    start = time.perf_counter()
    channels = fmapviz.maximize(model, LAYER, channels=range(16), size=128, steps=STEPS)
    channel_seconds = time.perf_counter() - start
    photo_max, photo_count = photo_channel_max(model, loaded.transform)
    ratio = channels.final_activation / photo_max[:16]
    rows = [[c, f"{channels.final_activation[c]:.2f}", f"{photo_max[c]:.2f}", f"{ratio[c]:.1f}"] for c in range(16)]
    sections.append(
        f"### (b) {LAYER} channels 0-15: {int((ratio >= 2).sum())}/16 reach >= 2x the best of {photo_count} photos\n\n"
        f"128 px, {STEPS} steps, batch 16: {channel_seconds:.0f} s. Reached = channel mean on the final image "
        f"without random transforms; photos: channel mean at 224 px (weights' transforms), max over photos. "
        f"Median ratio {ratio.median():.1f}x, lowest {ratio.min():.1f}x.\n\n"
        + markdown_table(["channel", "reached", "best photo", "ratio"], rows)
    )
    torch.save(channels, "/tmp/actmax_quality_channels.pt")
    fmapviz.show_gallery(shrunk(channels, 96), title=f"mobilenet_v2 {LAYER}, channels 0-15 (final channel mean)",
                         ncols=8, tile_pixels=128).save(FIGURES / "actmax_features10.png")  # fmt: skip

    # (c) high-frequency energy, fft + decorrelate vs pixels, equal steps
    steps_c = STEPS // 2
    probe = dict(channels=range(4), size=128, steps=steps_c, progress=False)
    fourier = fmapviz.maximize(model, LAYER, param="fft", decorrelate=True, **probe)
    pixels = fmapviz.maximize(model, LAYER, param="pixels", decorrelate=False, **probe)
    high_fourier, high_pixels = high_frequency_fraction(fourier.images), high_frequency_fraction(pixels.images)
    sections.append(
        f"### (c) high-frequency energy: pixels / fft+decorrelate = "
        f"{high_pixels.mean() / high_fourier.mean():.1f}x\n\n"
        f"{LAYER} channels 0-3, 128 px, {steps_c} steps each. Share of spectral energy (gray, mean removed) above "
        f"0.25 cycles/pixel: fft+decorrelate {high_fourier.mean():.4f}, pixels {high_pixels.mean():.4f}. "
        f"Objective reached: fft {fourier.final_activation.mean():.2f}, pixels {pixels.final_activation.mean():.2f}."
    )
    body = "\n\n".join(sections)
    body += "\n\nFigures: assets/figures/actmax_classes.png, assets/figures/actmax_features10.png."
    write_section("actmax_quality", "Activation maximization quality (mobilenet_v2, real weights)",
                  "TORCH_HOME=../shared/torch-home python benchmarks/actmax_quality.py", body)  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
