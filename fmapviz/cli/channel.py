"""``fmapviz channel``: one channel's page from a scan folder (:func:`fmapviz.channel_page`), as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import free_path, load_model_from, say
from .options import MODEL_HELP, Command, count_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("scan", help="folder written by fmapviz scan")
    parser.add_argument("--layers", "--layer", dest="layer", metavar="LAYER", required=True, help="a scanned layer")
    parser.add_argument("--channel", type=count_value(0), required=True, help="channel index")
    parser.add_argument("--no-actmax", action="store_true", help="skip the activation-maximization image")
    parser.add_argument("--steps", type=count_value(0), default=128, help="optimization steps (default 128)")
    parser.add_argument("-o", "--out", default="channel.png", help="output PNG (default channel.png)")


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure

    path = free_path(Path(args.out), args)
    result = fmapviz.load_scan(args.scan)
    loaded = load_model_from(args, use_size=False)  # --size is the actmax image's; crops are read as the scan read
    if result.input_size and tuple(result.input_size) != tuple(loaded.input_size):  # the scan ran at --size N
        loaded = load_model_from(argparse.Namespace(**{**vars(args), "size": list(result.input_size)}))
    figure = fmapviz.channel_page(
        loaded,
        result,
        args.layer,
        args.channel,
        with_actmax=not args.no_actmax,
        steps=args.steps,
        progress=not args.quiet,
        size=args.size or 128,
        seed=args.seed,
    )
    save_figure(figure, path)
    say(args, f"wrote {path}")
    return 0


COMMAND = Command(
    "channel",
    "Draw one channel's page from a scan: actmax image, top-k crops, histogram.",
    add_options,
    run,
    "fmapviz channel mobilenet_v2 --weights IMAGENET1K_V1 scan/ --layer features.7 --channel 12 -o channel.png",
    size="128, the actmax image; the top-k crops are read at the scan's own size",
)
