"""``fmapviz explore``: a browsable static site of model, layer, channel and photo pages (:func:`fmapviz.explore`)."""

from __future__ import annotations

import argparse

from .common import load_model_from, say
from .options import MODEL_HELP, Command, UsageError, count_or_all_value, count_value, stop_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", nargs="+", help="folders of photos (searched recursively) or photo files")
    parser.add_argument(
        "--layers",
        "--layer",
        nargs="+",
        action="extend",
        required=True,
        help="layers with (N,C,H,W) outputs (names, globs, types), or all (every block with spatial maps)",
    )
    parser.add_argument(
        "--top", type=count_value(1), default=5, help="channels explained per layer and photo (default 5)"
    )
    parser.add_argument(
        "--method", default="activation_x_gradient", help="channel attribution method (default activation_x_gradient)"
    )
    parser.add_argument("--crops", type=count_value(1), default=8, help="dataset examples per channel page (default 8)")
    parser.add_argument(
        "--actmax-top",
        type=count_or_all_value(0),
        default=None,
        help="channels per layer (firing hardest) with an actmax image, or all (default all)",
    )
    parser.add_argument(
        "--actmax-copies",
        type=count_value(1),
        default=None,
        help="actmax images (seeds) per alternatives channel (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--alternatives-top",
        type=count_value(0),
        default=16,
        help="channels per layer (firing hardest) whose pages show all the actmax copies (default 16)",
    )
    parser.add_argument(
        "--actmax-steps", type=count_value(0), default=None, help="actmax optimization steps (default 128; --quick: 48)"
    )
    parser.add_argument(
        "--actmax-size", type=count_value(1), default=None, help="actmax image size (default 128; --quick: 64)"
    )
    parser.add_argument(
        "--actmax-stop",
        type=stop_value,
        default=None,
        help="stop an actmax image once its objective gains less than this fraction over a window of steps; "
        "0: run every step (default 0.01)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset for a whole model on a CPU: actmax at 48 steps, 64 px, one image per channel "
        "(the --actmax-* options still override it)",
    )
    parser.add_argument("--batch-size", type=count_value(1), default=16, help="photos per forward pass (default 16)")
    parser.add_argument("-o", "--out", default="fmapviz-site", help="site folder (default fmapviz-site)")


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.distributed import torchrun_group
    from fmapviz.explorer import ExploreSettings
    from fmapviz.explorer.layers import NoSpatialLayersError

    preset = ExploreSettings.quick if args.quick else ExploreSettings
    given = {"actmax_copies": args.actmax_copies, "actmax_steps": args.actmax_steps, "actmax_size": args.actmax_size}
    given = {name: value for name, value in given.items() if value is not None}
    if args.actmax_stop is not None:
        given["actmax_stop"] = args.actmax_stop or None  # 0: every image runs every step
    settings = preset(
        crops=args.crops,
        explain_top=args.top,
        method=args.method,
        actmax_top=args.actmax_top,
        alternatives_top=args.alternatives_top,
        seed=args.seed,
        batch_size=args.batch_size,
        **given,
    )
    with torchrun_group(args.device) as (_, device):  # under torchrun the processes share the work
        loaded = load_model_from(args, device)
        try:
            index = fmapviz.explore(
                loaded, args.data, args.layers, args.out, settings=settings, force=args.force, progress=not args.quiet
            )
        except NoSpatialLayersError as error:
            raise UsageError(str(error)) from None
    say(args, f"wrote {index}")
    return 0


COMMAND = Command(
    "explore",
    "Build a browsable site of model, layer, channel and photo pages (opens from file://).",
    add_options,
    run,
    "fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layers features.7 features.14 -o site/\n"
    "  fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layers all --quick -o site/\n"
    "  torchrun --nproc-per-node 2 -m fmapviz explore resnet18 --weights IMAGENET1K_V1 photos/ --layers layer3 "
    "layer4 -o site/",
)
