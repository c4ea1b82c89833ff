"""``fmapviz report``: a PNG report per image, ``manifest.json`` and ``index.html`` (:func:`fmapviz.report`)."""

from __future__ import annotations

import argparse

from .common import load_images_from, load_model_from, say
from .options import IMAGES_HELP, MODEL_HELP, Command


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("images", nargs="+", help=IMAGES_HELP)
    parser.add_argument(
        "--layers",
        "--layer",
        nargs="+",
        action="extend",
        help="hierarchy layers (default: the deepest block per resolution)",
    )
    parser.add_argument("--actmax", action="store_true", help="add activation maximization of the top channels")
    parser.add_argument("-o", "--out", default="fmapviz-report", help="output folder (default fmapviz-report)")


def run(args: argparse.Namespace) -> int:
    import fmapviz

    loaded = load_model_from(args)
    image = load_images_from(args, loaded, skip_unreadable=True)  # report warns of each file it skips
    spec = fmapviz.ReportSpec(layers=tuple(args.layers) if args.layers else None, actmax=args.actmax, seed=args.seed)
    result = fmapviz.report(loaded, image, args.out, spec=spec, force=args.force, progress=not args.quiet)
    for page in result.pages:
        say(args, f"{'kept' if page in result.kept else 'wrote'} {page}")
    say(args, f"wrote {result.index} and {result.manifest}")
    return 0


COMMAND = Command(
    "report",
    "Write a full PNG report per image, manifest.json and index.html.",
    add_options,
    run,
    "fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 cat.png dog.jpg -o report/\n"
    "  fmapviz report my_net.py:build --checkpoint best.pt photos/ -o report/ --actmax",
)
