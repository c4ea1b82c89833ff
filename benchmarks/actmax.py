"""fmapviz.maximize against torch-lucent's render_vis, in one process (resnet18 random weights, seed 0).

Both: layer3 channel objective, 128 px, Fourier + decorrelated parameterization, standard transforms,
Adam lr 0.05, torch seed 0. lucent upsamples to 224 px and hooks every module (its defaults); fmapviz
shows the model the image at its own size, freezes parameters, stops after layer3 and batches 16 channels.

Run from the repo root: .venv/bin/python benchmarks/actmax.py
ACTMAX_STEPS (default 256) sets the steps of both full runs; LUCENT_CHANNELS (default 1) how many channels
lucent renders at full length; its 16-channel time is the mean per channel times 16 (each channel
costs the same: same model, size and steps).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import markdown_table, setup, time_interleaved, write_section  # noqa: E402
from lucent_shim import import_lucent  # noqa: E402

import fmapviz  # noqa: E402

STEPS = int(os.environ.get("ACTMAX_STEPS", 256))
LUCENT_CHANNELS = int(os.environ.get("LUCENT_CHANNELS", 1))
SIZE, CHANNELS, LAYER = 128, 16, "layer3"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def channel_means(model: torch.nn.Module, images: torch.Tensor, upsample: int | None) -> torch.Tensor:
    """(N, C) layer3 channel means of images in [0, 1], optionally upsampled like lucent, no random transforms."""
    if upsample:
        images = F.interpolate(images, size=upsample, mode="bilinear", align_corners=True)
    return fmapviz.feature_maps(model, (images - MEAN) / STD, LAYER)[LAYER].mean((-2, -1))


def main() -> None:
    setup()
    model = torchvision.models.resnet18(weights=None).eval()
    render, param, _ = import_lucent()

    # per-step cost vs. the floor: fwd + bwd to the input of resnet18 cut after layer3, same batch and input size
    cut = torch.nn.Sequential(*list(model.children())[:7])
    seen = SIZE + 2 * 12 - 8 - 4  # pad 12, jitter 8, jitter 4: the size the model sees
    floor_input = torch.rand(CHANNELS, 3, seen, seen)
    picks = torch.arange(CHANNELS)

    def floor() -> None:
        x = floor_input.clone().requires_grad_(True)
        out = cut(x)
        out[picks, picks].mean((-2, -1)).sum().backward()

    def ours(steps: int):
        return lambda: fmapviz.maximize(model, LAYER, channels=range(CHANNELS), size=SIZE, steps=steps, progress=False)

    probe = 6
    with fmapviz.model_guard(cut):
        timings = time_interleaved({"floor": floor, "zero": ours(0), "probe": ours(probe)}, rounds=3)
    per_step = (timings["probe"] - timings["zero"]) / probe

    # full runs: ours 16 channels batched; lucent one channel at a time (extrapolated to 16)
    start = time.perf_counter()
    result = fmapviz.maximize(model, LAYER, channels=range(CHANNELS), size=SIZE, steps=STEPS, progress=False)
    ours_seconds = time.perf_counter() - start
    lucent_model = copy.deepcopy(model)  # lucent leaves hooks on every module
    lucent_images, lucent_seconds = [], []
    for channel in range(LUCENT_CHANNELS):
        torch.manual_seed(0)
        start = time.perf_counter()
        images = render.render_vis(
            lucent_model,
            f"{LAYER}[{channel}]",
            param_f=lambda: param.image(SIZE, fft=True, decorrelate=True),
            thresholds=(STEPS,),
            show_image=False,
            progress=False,
        )
        lucent_seconds.append(time.perf_counter() - start)
        lucent_images.append(torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float())
    lucent_total = sum(lucent_seconds) / LUCENT_CHANNELS * CHANNELS
    lucent_images = torch.cat(lucent_images)

    rows = []
    for upsample in (None, 224):
        ours_values = channel_means(model, result.images, upsample)[picks, picks]
        lucent_values = channel_means(model, lucent_images, upsample)
        lucent_values = lucent_values[torch.arange(LUCENT_CHANNELS), torch.arange(LUCENT_CHANNELS)]
        shared = ours_values[:LUCENT_CHANNELS]
        rows.append(
            [
                f"{SIZE} px as optimized" if upsample is None else "upsampled to 224 (lucent's view)",
                ", ".join(f"{v:.2f}" for v in lucent_values),
                ", ".join(f"{v:.2f}" for v in shared),
                f"{ours_values.mean():.2f}",
            ]
        )
    speedup = lucent_total / ours_seconds
    body = f"""resnet18 (random weights, seed 0), `{LAYER}` channel objective, {SIZE} px, {
        STEPS
    } steps, fft + decorrelate,
standard transforms, Adam lr 0.05, seed 0. fmapviz: 16 channels in one batch, frozen parameters, forward stopped
after {LAYER}, model sees {seen} px (no upsample). lucent 0.1.8 (kornia shim in benchmarks/lucent_shim.py):
`render_vis` one channel at a time, its defaults (upsample to 224, all modules hooked, parameter grads);
{LUCENT_CHANNELS} channel(s) run in full, 16-channel time = mean per channel x 16.

{
        markdown_table(
            ["run", "seconds", "vs lucent"],
            [
                ["lucent render_vis, 16 channels one at a time (extrapolated)", f"{lucent_total:.1f}", "1.00"],
                ["fmapviz.maximize, 16 channels batched", f"{ours_seconds:.1f}", f"**{speedup:.2f}x faster**"],
            ],
        )
    }

Per-step cost (interleaved, 3 rounds, ({probe}-step run - 0-step run) / {probe}): {per_step:.3f} s for 16 images;
floor = one forward + backward to the input of resnet18 cut after {LAYER}, batch 16 at {seen} px:
{timings["floor"]:.3f} s. Ratio **{per_step / timings["floor"]:.2f}x** the floor.

Objective reached (mean of {LAYER} channel c on the final image, no random transforms, ImageNet normalization),
same evaluation for both:

{markdown_table(["evaluated at", "lucent ch 0..", "fmapviz same channels", "fmapviz mean of 16"], rows)}
"""
    write_section("actmax", "Activation maximization vs lucent (resnet18 layer3)", "python benchmarks/actmax.py", body)
    print(body)


if __name__ == "__main__":
    main()
