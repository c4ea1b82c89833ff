"""fmapviz.maximize against torch-lucent's render_vis at equal work, in one process (resnet18 random weights, seed 0).

Equal work (the main rows): `layer3` channel objective, 16 channels, 128 px Fourier + decorrelated image, the
standard transforms, upsampled to a 224 px view before the model (`model_size=224`, lucent's default), Adam
lr 0.05, the same number of steps, frozen parameters, the network truncated after `layer3` on both sides
(lucent gets a ResNet whose forward stops there; fmapviz stops the forward itself), 16 images in one batch
on both sides (lucent: the sum of 16 per-image channel objectives). Runs alternate ours/lucent after a
warm-up. The objective each reaches is measured by one independent forward pass of the final images.
A second lucent row renders one channel at a time (how lucent is usually called), extrapolated from
LUCENT_SINGLE channels.

Run from the repo root: .venv/bin/python benchmarks/actmax.py
ACTMAX_STEPS (default 256), ACTMAX_ROUNDS (default 2), LUCENT_SINGLE (default 2).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import ResNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import markdown_table, setup, write_section  # noqa: E402
from lucent_shim import import_lucent  # noqa: E402

import fmapviz  # noqa: E402

STEPS = int(os.environ.get("ACTMAX_STEPS", 256))
ROUNDS = int(os.environ.get("ACTMAX_ROUNDS", 2))
LUCENT_SINGLE = int(os.environ.get("LUCENT_SINGLE", 2))
SIZE, VIEW, CHANNELS, LAYER = 128, 224, 16, "layer3"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class StopAfterLayer3(ResNet):
    """torchvision's resnet18 with the same module names, whose forward ends after layer3 (lucent's truncation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def reached(model: torch.nn.Module, images: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """(16,) channel c of image c at layer3, images upsampled to the 224 view, no random transforms."""
    view = F.interpolate(images, size=VIEW, mode="bilinear", align_corners=align_corners)
    means = fmapviz.feature_maps(model, (view - MEAN) / STD, LAYER)[LAYER].mean((-2, -1))
    picks = torch.arange(images.shape[0])
    return means[picks, picks]


def main() -> None:
    setup()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    render, param, objectives = import_lucent()
    lucent_model = StopAfterLayer3(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]).eval()
    lucent_model.load_state_dict(copy.deepcopy(model.state_dict()))
    lucent_model.requires_grad_(False)  # frozen, like fmapviz

    def ours(steps: int) -> torch.Tensor:
        result = fmapviz.maximize(
            model, LAYER, channels=range(CHANNELS), size=SIZE, steps=steps, model_size=VIEW, progress=False
        )
        return result.images

    def lucent(steps: int, channels: list[int]) -> torch.Tensor:
        torch.manual_seed(0)
        batch = len(channels)
        objective = sum(objectives.channel(LAYER, c, batch=i) for i, c in enumerate(channels))
        images = render.render_vis(
            lucent_model,
            objective,
            param_f=lambda: param.image(SIZE, batch=batch, fft=True, decorrelate=True),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
        return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float()

    ours(4), lucent(4, list(range(CHANNELS)))  # warm-up
    times: dict[str, list[float]] = {"ours": [], "lucent": []}
    finals: dict[str, torch.Tensor] = {}
    for _ in range(ROUNDS):
        for name, run in (("ours", lambda: ours(STEPS)), ("lucent", lambda: lucent(STEPS, list(range(CHANNELS))))):
            start = time.perf_counter()
            finals[name] = run()
            times[name].append(time.perf_counter() - start)
    single = []
    for channel in range(LUCENT_SINGLE):
        start = time.perf_counter()
        lucent(STEPS, [channel])
        single.append(time.perf_counter() - start)
    single_total = statistics.mean(single) * CHANNELS

    ours_s, lucent_s = statistics.median(times["ours"]), statistics.median(times["lucent"])
    rows = [
        ["lucent render_vis, 16 channels in one batch", f"{lucent_s:.1f}", "1.00"],
        ["fmapviz.maximize, 16 channels in one batch", f"{ours_s:.1f}", f"**{lucent_s / ours_s:.2f}x faster**"],
        [
            f"lucent render_vis, one channel at a time (x16, from {LUCENT_SINGLE})",
            f"{single_total:.1f}",
            f"{lucent_s / single_total:.2f}",
        ],
    ]
    values = []
    for align in (True, False):
        ours_v, lucent_v = reached(model, finals["ours"], align), reached(model, finals["lucent"], align)
        wins = int((ours_v >= lucent_v).sum())
        values.append(
            [
                f"224 view, bilinear align_corners={align}",
                f"{lucent_v.mean():.2f}",
                f"{ours_v.mean():.2f}",
                f"{wins}/16",
            ]
        )
    body = f"""Equal work: resnet18 (random weights, seed 0), `{LAYER}` channel objectives for channels 0-15, one 128 px
image each, Fourier + decorrelated, standard transforms (pad 12, jitter 8, scale, rotate, jitter 4), upsampled to a
224 px view before the model, Adam lr 0.05, {STEPS} steps, parameters frozen, network truncated after `{LAYER}` on
both sides, 16 images per batch on both sides. Median of {ROUNDS} alternating rounds after a 4-step warm-up.
lucent 0.1.8 (kornia shim in benchmarks/lucent_shim.py). The machine was shared with other work during this run;
alternating rounds spread that load over both sides.

{markdown_table(["run", "seconds", "vs lucent batched"], rows)}

Objective reached: mean over the 16 images of channel c of image c at `{LAYER}`, measured by one independent
forward pass of the final images (no random transforms, ImageNet normalization), upsampled to the 224 view
(lucent optimizes with align_corners=True, fmapviz with False: both are shown):

{markdown_table(["evaluated at", "lucent", "fmapviz", "images where fmapviz >= lucent"], values)}
"""
    write_section(
        "actmax",
        "Activation maximization vs lucent at equal work (resnet18 layer3)",
        "python benchmarks/actmax.py",
        body,
    )
    print(body)


if __name__ == "__main__":
    main()
