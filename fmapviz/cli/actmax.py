"""``fmapviz actmax``: one PNG gallery of images synthesized to maximize channels of a layer, or classes."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import free_path, load_model_from, say
from .options import MODEL_HELP, Command, UsageError, channels_value, class_value, count_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--layers", "--layer", dest="layer", metavar="LAYER", help="layer whose channels to visualize (with --channels)"
    )
    goal.add_argument(
        "--class", dest="class_name", nargs="+", type=class_value, help="class names or indices to visualize"
    )
    parser.add_argument("--channels", type=channels_value, default="0-7", help="indices, 0-15 or all (default 0-7)")
    parser.add_argument("--steps", type=count_value(1), default=256, help="optimization steps (default 256)")
    parser.add_argument(
        "--batch-size", type=count_value(1), help="images optimized together (default: 16 on CPU, a GPU's free memory)"
    )
    parser.add_argument("-o", "--out", default="actmax.png", help="output PNG (default actmax.png)")


def check(args: argparse.Namespace) -> None:
    """Ranked channels need images to rank by: actmax takes indices or all."""
    if args.channels.strip().startswith(("top:", "bottom:")):
        raise UsageError(f"actmax --channels takes indices or all, not '{args.channels}' (no images to rank by)")


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure
    from fmapviz.vocabulary import parse_channels

    choice = parse_channels(args.channels)
    channels = list(choice.indices) if choice.kind == "indices" else "all"
    out = Path(args.out)
    path = free_path(out if out.suffix else out.with_name(out.name + ".png"), args)
    loaded = load_model_from(args)
    options = dict(
        size=loaded.input_size,
        model_size=loaded.size if loaded.fixed_size else None,  # padding and jitter change the size it needs
        steps=args.steps,
        batch_size=args.batch_size or "auto",
        seed=args.seed,
        progress=not args.quiet,
        mean=loaded.mean,
        std=loaded.std,
    )
    if args.class_name:
        goals = [f"class:{name}" for name in args.class_name]
        result = fmapviz.maximize(loaded.model, goals, categories=loaded.categories, **options)
        title = f"{loaded.name}: class visualizations"
    else:
        result = fmapviz.maximize(loaded.model, args.layer, channels=channels, **options)
        title = f"{loaded.name} {args.layer}: channel visualizations"
    save_figure(fmapviz.show_gallery(result, title=title), path)
    say(args, f"wrote {path}")
    return 0


COMMAND = Command(
    "actmax",
    "Synthesize images that maximize channels of a layer, or a class.",
    add_options,
    run,
    "fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --layers features.10 --channels 0-15\n"
    "  fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --class banana --steps 256",
    size="224",
    check=check,
)
