"""``fmapviz saliency``: one PNG per image of the chosen saliency methods; ``--method`` alone lists the methods."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .common import free_path, load_images_from, load_model_from, safe_name, say
from .options import IMAGES_HELP, MODEL_HELP, Command, UsageError


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("images", nargs="+", help=IMAGES_HELP)
    parser.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        help="saliency methods (default gradcam); --method alone lists every method with a line on each",
    )
    parser.add_argument(
        "--target", default="top", help="top, top:3, a class index, a class name or a unit layer[c] (default top)"
    )
    parser.add_argument(
        "--layers",
        "--layer",
        nargs="+",
        action="extend",
        help="layers of the CAM methods, e.g. layer4.1.relu#2 (default: searched)",
    )
    parser.add_argument("-o", "--out", default="fmapviz-saliency", help="output folder (default fmapviz-saliency)")


def lists_methods(argv: Sequence[str]) -> bool:
    """``fmapviz saliency --method`` with no method after it: list the methods instead of running."""
    if not argv or argv[0] != "saliency" or "--method" not in argv:
        return False
    after = argv[argv.index("--method") + 1 : argv.index("--method") + 2]
    return not after or after[0].startswith("-")


def print_methods() -> int:
    """Print every saliency method with its space and a line on it; returns the exit code."""
    from fmapviz.engines.saliency import METHODS

    width = max(map(len, METHODS))
    for name, entry in METHODS.items():
        print(f"{name:<{width}}  {entry.space:<5}  {entry.description}")
    return 0


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.engines.saliency import METHODS, LayerSearchCache
    from fmapviz.files import save_figure, writable_folder

    unknown = [method for method in args.method if method not in METHODS]
    if unknown:
        from fmapviz.errors import closest_names

        close = ", ".join(closest_names(unknown[0], METHODS)) or "none"
        raise UsageError(
            f"unknown saliency method '{unknown[0]}'; closest: {close} (fmapviz saliency --method lists them all)"
        )
    writable_folder(Path(args.out))  # before the work, not after it
    loaded = load_model_from(args)
    image = load_images_from(args, loaded)
    target = int(args.target) if args.target.isdigit() else args.target
    out = Path(args.out)
    searches = LayerSearchCache()  # layers=None searches once per run, not once per image and method
    for index, name in enumerate(image.names):
        path = free_path(out / f"{safe_name(Path(name).stem)}_saliency.png", args)
        x = image.tensor[index : index + 1].to(loaded.device)
        results = [
            fmapviz.saliency(
                loaded.model,
                x,
                method,
                target=target,
                layers=args.layers if METHODS[method].takes_layer else None,
                categories=loaded.categories,
                layer_search=searches,
                **({"seed": args.seed} if METHODS[method].seeded else {}),
            )
            for method in args.method
        ]
        save_figure(fmapviz.show_saliency(results, image.display[index]), path)
        say(args, f"wrote {path}")
    return 0


COMMAND = Command(
    "saliency",
    "Write saliency maps (Grad-CAM, SmoothGrad, IG, ...) for each image.",
    add_options,
    run,
    "fmapviz saliency mobilenet_v2 --weights IMAGENET1K_V1 cat.png --method gradcam smoothgrad\n"
    "  fmapviz saliency my_net.py:build --checkpoint best.pt cat.png --method integrated_gradients --target 3\n"
    "  fmapviz saliency resnet18 --weights IMAGENET1K_V1 cat.png --method gradcam --layers layer4.1.relu#2 "
    "--target 'layer3.1.relu[7]'",
)
