"""``fmapviz maps``: a feature-map grid of each chosen layer for each image, one PNG each."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import free_path, load_images_from, load_model_from, safe_name, say
from .options import IMAGES_HELP, MODEL_HELP, Command, channels_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("images", nargs="+", help=IMAGES_HELP)
    parser.add_argument(
        "--layers", "--layer", nargs="+", action="extend", required=True, help="layer selectors: names, globs, types"
    )
    parser.add_argument(
        "--channels", type=channels_value, default="top:16", help="all, top:K, bottom:K, 0-15 or 3,7 (default top:16)"
    )
    parser.add_argument("--rank", default="mean", help="how top:K ranks channels: mean, max or std (default mean)")
    parser.add_argument("--normalize", default="layer", help="layer, channel or global (default layer)")
    parser.add_argument("--overlay", action="store_true", help="draw each map over the photo")
    parser.add_argument("--cmap", default="viridis", help="matplotlib colormap (default viridis)")
    parser.add_argument("-o", "--out", default="fmapviz-maps", help="output folder (default fmapviz-maps)")


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure, writable_folder

    writable_folder(Path(args.out))  # before the work, not after it
    loaded = load_model_from(args)
    image = load_images_from(args, loaded)
    out = Path(args.out)
    jobs = []
    for index, name in enumerate(image.names):
        x = image.tensor[index : index + 1].to(loaded.device)
        maps = fmapviz.feature_maps(loaded.model, x, args.layers)
        for layer in maps:
            path = free_path(out / f"{safe_name(Path(name).stem)}_{safe_name(layer)}.png", args)
            jobs.append((path, maps, layer, index))
    for path, maps, layer, index in jobs:
        figure = fmapviz.show_maps(
            maps,
            channels=args.channels,
            rank=args.rank,
            normalize=args.normalize,
            image=image.display[index],
            overlay=args.overlay,
            cmap=args.cmap,
            layer=layer,
        )
        save_figure(figure, path)
        say(args, f"wrote {path}")
    return 0


COMMAND = Command(
    "maps",
    "Write feature-map grids of the chosen layers for each image.",
    add_options,
    run,
    "fmapviz maps mobilenet_v2 --weights IMAGENET1K_V1 cat.png --layers features.1 features.7 -o maps/\n"
    "  fmapviz maps resnet18 --weights IMAGENET1K_V1 cat.png --layers 'layer3.*.conv2' --channels top:32 --overlay",
)
