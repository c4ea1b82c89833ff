"""Make the README feature-map figures from real mobilenet_v2 weights and assets/chelsea.png.

    TORCH_HOME=../shared/torch-home python assets/make_figures.py

Writes PNGs into assets/figures/.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from PIL import Image

import fmapviz

HERE = Path(__file__).resolve().parent
OUT = HERE / "figures"
LAYERS = ["features.1", "features.7", "features.14"]
# Inside each block, conv.0.2 is the ReLU6 after the first convolution: what fires (>= 0), not the signed bottleneck.
RELUS = ["features.1.conv.0.2", "features.4.conv.0.2", "features.7.conv.0.2", "features.14.conv.0.2"]


def shrink(display, size: int):
    """The display image resized as a whole (so maps still line up), to keep tiles and files small."""
    return F.interpolate(display, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def save(figure: fmapviz.plot.Figure, name: str) -> Path:
    """Write with full PNG compression (these files are committed, each < 400 KB) and report the size."""
    path = OUT / name
    Image.fromarray(figure.image).save(path, optimize=True)
    if path.stat().st_size > 400 * 1024:  # noisy early-layer maps: a 256-colour palette keeps the file small
        Image.fromarray(figure.image).quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(
        f"{path.relative_to(HERE.parent)}: {figure.image.shape[1]}×{figure.image.shape[0]} px, "
        f"{path.stat().st_size / 1024:.0f} KB"
    )
    return path


def main() -> None:
    OUT.mkdir(exist_ok=True)
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    image = fmapviz.load_image(HERE / "chelsea.png", loaded.transform)
    maps = fmapviz.feature_maps(loaded.model, image.tensor, LAYERS + RELUS)
    # features.1: first block, 16 channels at half resolution: edges and colour blobs; each channel stretched.
    save(
        fmapviz.show_maps(
            maps,
            "all",
            normalize="channel",
            clip=(1, 99),
            image=shrink(image.display, 112),
            layer="features.1",
            cmap="magma",
            title="mobilenet_v2 features.1: all 16 channels (edges, colours), each stretched",
        ),
        "features_1.png",
    )
    # features.7: 14×14 maps; the strongest channels of the block's ReLU6 over the photo show what they respond to.
    save(
        fmapviz.show_maps(
            maps,
            "top:14",
            rank="max",
            image=shrink(image.display, 120),
            overlay=True,
            alpha=0.65,
            layer="features.7.conv.0.2",
            clip=(0, 99.5),
            cmap="inferno",
            ncols=5,
            title="mobilenet_v2 features.7 (ReLU6 in the block, 14×14): top 14 channels by max, on the photo",
        ),
        "features_7.png",
    )
    # features.14: 7×7 maps, one scale for the layer so channels can be compared.
    save(
        fmapviz.show_maps(
            maps,
            "top:16",
            rank="mean",
            layer="features.14",
            image=shrink(image.display, 112),
            cmap="viridis",
            clip=(0, 99.5),
            title="mobilenet_v2 features.14 (7×7): top 16 channels by mean, layer scale",
        ),
        "features_14.png",
    )
    relu_maps = {name: maps[name] for name in RELUS}
    save(fmapviz.show_hierarchy(relu_maps, image, model=loaded.model, channels=6, cmap="inferno"), "hierarchy.png")
    photos = [HERE / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    stats = fmapviz.channel_stats(
        photos, loaded.model, ["features.2.conv.0.2", "features.7.conv.0.2"], transform=loaded.transform
    )
    for layer in stats.values():
        print(layer)
    save(fmapviz.show_channel_stats(stats), "channel_health.png")


if __name__ == "__main__":
    main()
