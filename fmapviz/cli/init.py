"""``fmapviz init``: an initialization report (:func:`fmapviz.init_report`), two PNGs and ``init.json``."""

from __future__ import annotations

import argparse

from .common import free_outputs, load_model_from, say
from .options import MODEL_HELP, Command, count_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--data", help="images to run (default: standard-normal noise)")
    parser.add_argument(
        "--layers", "--layer", nargs="+", action="extend", help="layers (default: every activation module)"
    )
    parser.add_argument("--batch-size", type=count_value(1), default=8, help="inputs in the pass (default 8)")
    parser.add_argument("-o", "--out", default="fmapviz-init", help="output folder (default fmapviz-init)")


def run(args: argparse.Namespace) -> int:
    import torch

    import fmapviz
    from fmapviz.files import save_figure
    from fmapviz.inputs import list_images

    curves, histograms, json_path = free_outputs(args, ["init.png", "histograms.png", "init.json"])
    loaded = load_model_from(args)
    if args.data:
        x = fmapviz.load_image(list_images(args.data, recursive=True)[: args.batch_size], loaded.transform).tensor
    else:
        generator = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch_size, loaded.channels, *loaded.input_size, generator=generator)
    report = fmapviz.init_report(loaded.model, x.to(loaded.device), args.layers, seed=args.seed)
    save_figure(fmapviz.show_init_report(report), curves)
    save_figure(fmapviz.show_init_histograms(report), histograms)
    report.save(json_path)
    say(args, str(report))
    flagged = report.flagged
    say(args, f"{len(flagged)} flagged layer(s): {', '.join(flagged) if flagged else 'none'}; wrote {args.out}/")
    return 0


COMMAND = Command(
    "init",
    "Initialization report: activation mean/std/zeros and gradient RMS per layer, flagged.",
    add_options,
    run,
    "fmapviz init net.py:build --size 64 -o init/\n  fmapviz init resnet18 --data photos/ --batch-size 16",
    weights="none",
)
