"""The default Grad-CAM call (layers=None) against the explicit last layer, as × forward + input gradient (issue 25).

Real mobilenet_v2 (IMAGENET1K_V1) on a photo and resnet50 with random weights, batch 1, 224 px, 2 threads;
the three calls are timed round-robin (``time_interleaved``), medians after a warm-up. The floor is one forward and
one backward to the input, what every gradient method pays at least.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from common import markdown_table, setup, time_interleaved, write_section

import fmapviz


def floor(model: torch.nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    model(x)[0].max().backward()


def rows_for(name: str, model: torch.nn.Module, x: torch.Tensor, last: str) -> list[object]:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    times = time_interleaved(
        {
            "floor": lambda: floor(model, x),
            "default": lambda: fmapviz.saliency(model, x, "gradcam"),
            "explicit": lambda: fmapviz.saliency(model, x, "gradcam", layers=last),
        },
        rounds=15,
        warmup=2,
    )
    base = times["floor"]
    return [name, f"{base * 1e3:.1f} ms", f"{times['default'] / base:.2f}×", f"{times['explicit'] / base:.2f}×"]


def main() -> None:
    setup(threads=2)
    mobilenet = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()
    photo = fmapviz.load_image(
        Path(__file__).resolve().parents[1] / "assets" / "chelsea.png", fmapviz.load_model(mobilenet).transform
    ).tensor
    resnet = torchvision.models.resnet50().eval()
    rows = [
        rows_for("mobilenet_v2 (real weights, chelsea.png)", mobilenet, photo, "features.18"),
        rows_for("resnet50 (random weights)", resnet, torch.randn(1, 3, 224, 224), "layer4"),
    ]
    body = markdown_table(
        ["model, batch 1, 224 px", "forward + input gradient", "default call", "explicit last layer"], rows
    )
    body += "\n\nTarget (issue 25 item 7): the default call at or below 0.6× the floor."
    print(body)
    write_section("default_gradcam", "Default Grad-CAM call", ".venv/bin/python benchmarks/default_gradcam.py", body)


if __name__ == "__main__":
    main()
