"""Make the README figures from real mobilenet_v2 weights and assets/chelsea.png.

    TORCH_HOME=../shared/torch-home python assets/make_figures.py

Writes PNGs into assets/figures/: feature maps, the hierarchy, channel health, saliency and a report page.
The activation-maximization galleries come from benchmarks/actmax_quality.py, which also measures them.
"""

from __future__ import annotations

import tempfile
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


def save(figure: fmapviz.plot.Figure | Image.Image, name: str) -> Path:
    """Write with full PNG compression (these files are committed, each < 400 KB) and report the size."""
    path = OUT / name
    picture = figure if isinstance(figure, Image.Image) else Image.fromarray(figure.image)
    picture.save(path, optimize=True)
    if path.stat().st_size > 400 * 1024:  # noisy early-layer maps: a 256-colour palette keeps the file small
        picture.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path.relative_to(HERE.parent)}: {picture.width}×{picture.height} px, {path.stat().st_size / 1024:.0f} KB")
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
    save(fmapviz.show_hierarchy(relu_maps, image, model=loaded.model, top=6, cmap="inferno"), "hierarchy.png")
    photos = [HERE / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    stats = fmapviz.channel_stats(
        photos, loaded.model, ["features.2.conv.0.2", "features.7.conv.0.2"], transform=loaded.transform
    )
    for layer in stats.values():
        print(layer)
    save(fmapviz.show_channel_stats(stats), "channel_health.png")
    save_saliency(loaded, image)
    save_report(loaded, image)


def save_saliency(loaded: fmapviz.models.LoadedModel, image: fmapviz.inputs.LoadedImage) -> None:
    """Grad-CAM at three depths (one forward and backward), SmoothGrad and Integrated Gradients."""
    model, x = loaded.model, image.tensor
    results = {}
    cams = fmapviz.saliency(model, x, "gradcam", layers=["features.7", "features.14", "features.18"])
    for layer in cams.layer_maps:
        results[f"Grad-CAM {layer}"] = cams.for_layer(layer)
    results["SmoothGrad"] = fmapviz.saliency(model, x, "smoothgrad", samples=25)
    results["Integrated Gradients"] = fmapviz.saliency(model, x, "integrated_gradients", baseline="blur")
    title = f"mobilenet_v2 on chelsea.png, target: {loaded.categories[int(cams.target[0, 0])]}"
    save(fmapviz.show_saliency(results, image.display, view="abs", title=title), "saliency.png")


def save_report(loaded: fmapviz.models.LoadedModel, image: fmapviz.inputs.LoadedImage) -> None:
    """The page `fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 assets/chelsea.png --actmax` writes."""
    with tempfile.TemporaryDirectory() as folder:
        written = fmapviz.report(loaded, image, folder, spec=fmapviz.ReportSpec(actmax=True))
        page = Image.open(written.pages[0])
        page.load()
    save(page.convert("RGB"), "report_chelsea.png")


if __name__ == "__main__":
    main()
