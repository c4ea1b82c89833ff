"""Plotting many feature maps into one PNG: fmapviz vs one subplot per channel vs torchvision make_grid.

Case 1: resnet18 layer4 (random weights), 512×7×7, nearest-upsampled to 56 px tiles.
Case 2: resnet50 layer1 (random weights), 256×56×56.
Every method normalizes, builds the picture and writes a PNG; all run interleaved in one process.
The like-for-like pair does the same work on both sides: one value range for the whole layer, gray
tiles, 2 px padding, one PNG (torchvision ``make_grid(normalize=True)`` + ``save_image`` against
``show_maps(annotate=False, cmap="gray")``).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402
from benchmarks.common import markdown_table, setup, time_interleaved, write_section  # noqa: E402
from fmapviz.engines.channels import upsample  # noqa: E402

LIKE_TORCHVISION = "torchvision make_grid + save_image (gray, one range) *same work*"
LIKE_FMAPVIZ = "fmapviz show_maps(annotate=False, cmap='gray') *same work*"


def subplot_per_channel(maps: torch.Tensor, path: Path) -> None:
    count = maps.shape[1]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6))
    for index, axis in enumerate(axes.flat):
        if index < count:
            axis.imshow(maps[0, index].numpy(), cmap="viridis")
        axis.axis("off")
    figure.savefig(path)
    plt.close(figure)


def torchvision_grid(maps: torch.Tensor, path: Path, scale_each: bool = True) -> None:
    tiles = maps[0].unsqueeze(1)
    columns = math.ceil(math.sqrt(tiles.shape[0]))
    save_image(make_grid(tiles, nrow=columns, normalize=True, scale_each=scale_each, pad_value=1.0), path)


def fmapviz_raw(maps: torch.Tensor, path: Path, cmap: str = "viridis") -> None:
    fmapviz.show_maps(maps, "all", normalize="layer", cmap=cmap, annotate=False).save(path)


def fmapviz_annotated(maps: torch.Tensor, path: Path, channels: str) -> None:
    figure = fmapviz.show_maps(maps, channels, normalize="layer", cmap="viridis")
    figure.save(path)
    figure.close()


def main() -> None:
    setup()
    image = fmapviz.load_image("assets/chelsea.png").tensor
    resnet18 = torchvision.models.resnet18(weights=None).eval()
    resnet50 = torchvision.models.resnet50(weights=None).eval()
    layer4 = fmapviz.feature_maps(resnet18, image, "layer4")["layer4"]
    layer1 = fmapviz.feature_maps(resnet50, image, "layer1")["layer1"]
    layer4_56 = upsample(layer4, (56, 56), "nearest")
    out = Path(tempfile.mkdtemp())
    cases = {
        "512 maps 7×7 → 56 px": layer4_56,
        "256 maps 56×56": layer1,
    }
    rows = []
    for case, maps in cases.items():
        methods = {
            "matplotlib, one subplot per channel": lambda m=maps: subplot_per_channel(m, out / "a.png"),
            "torchvision make_grid + save_image (gray, each channel scaled)": lambda m=maps: torchvision_grid(
                m, out / "b.png"
            ),
            LIKE_TORCHVISION: lambda m=maps: torchvision_grid(m, out / "g.png", scale_each=False),
            LIKE_FMAPVIZ: lambda m=maps: fmapviz_raw(m, out / "h.png", "gray"),
            "fmapviz show_maps(annotate=False) (viridis, PIL)": lambda m=maps: fmapviz_raw(m, out / "c.png"),
            "fmapviz show_maps top:16, annotated matplotlib": lambda m=maps: fmapviz_annotated(
                m, out / "d.png", "top:16"
            ),
            "fmapviz show_maps top:64, annotated matplotlib": lambda m=maps: fmapviz_annotated(
                m, out / "e.png", "top:64"
            ),
        }
        if case.startswith("512"):  # the upsampling is part of the work in the 7×7 case
            methods["fmapviz show_maps(annotate=False) (viridis, PIL)"] = lambda: fmapviz_raw(
                upsample(layer4, (56, 56), "nearest"), out / "c.png"
            )
            methods[LIKE_FMAPVIZ] = lambda: fmapviz_raw(upsample(layer4, (56, 56), "nearest"), out / "h.png", "gray")
            methods[LIKE_TORCHVISION] = lambda: torchvision_grid(
                upsample(layer4, (56, 56), "nearest"), out / "g.png", scale_each=False
            )
        times = time_interleaved(methods, rounds=3, warmup=1)
        slowest = times["matplotlib, one subplot per channel"]
        for name, seconds in times.items():
            rows.append([case, name, f"{seconds:.3f}", f"{slowest / seconds:.1f}×"])
        print(case, {name: round(value, 3) for name, value in times.items()}, flush=True)
    body = (
        "Random-weight resnet18 `layer4` (512×7×7, nearest-upsampled to 56 px inside the timed call) and "
        "resnet50 `layer1` (256×56×56) on assets/chelsea.png. Each call normalizes, draws and writes one PNG. "
        "Median of 3 interleaved rounds after a warm-up, on a machine shared with other jobs (compare rows of one "
        "case, not runs). Targets: raw mosaic ≤ 0.1 s (512 maps) and ≤ 0.15 s (256 maps); annotated figure ≤ 0.25 s."
        "\n\nLike for like: the two rows marked *same work* both scale the whole layer to one value range, draw gray "
        "tiles with 2 px white padding and write one PNG (`make_grid(normalize=True, scale_each=False)` + "
        "`save_image`, against `show_maps(annotate=False, cmap='gray')`). The other rows do different work: "
        "one subplot per channel colours each channel on its own scale with matplotlib, the viridis mosaic adds "
        "a colour map, the annotated figures draw captions and a colour bar for 16 or 64 channels.\n\n"
        + markdown_table(["case", "method", "seconds", "speed-up vs subplots"], rows)
    )
    write_section("plot", "Plotting many feature maps into one PNG", "python benchmarks/plot.py", body)


if __name__ == "__main__":
    main()
