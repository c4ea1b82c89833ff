"""``fmapviz scan``: a dataset's channel statistics, dead channels and top-k images per channel, in one folder.

The folder is :func:`fmapviz.save_scan`'s; under ``torchrun`` the processes share the images and rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import free_path, load_model_from, say
from .options import MODEL_HELP, Command, count_value, shard_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", help="a folder of images (sub-folders included), a file or a glob")
    parser.add_argument(
        "--layers", "--layer", nargs="+", action="extend", required=True, help="layer selectors (repeatable)"
    )
    parser.add_argument("--topk", type=count_value(1), default=16, help="top images kept per channel (default 16)")
    parser.add_argument(
        "--batch-size", type=count_value(1), help="images per forward pass (default 32, fewer if memory is short)"
    )
    parser.add_argument("--num-workers", type=count_value(0), default=0, help="image-reading processes (default 0)")
    parser.add_argument(
        "--shard",
        type=shard_value,
        help="i/n: scan shard i of n, blocks of whole batches in turn (default: all; per rank under torchrun)",
    )
    parser.add_argument("-o", "--out", default="fmapviz-scan", help="output folder (default fmapviz-scan)")


def run(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.distributed import torchrun_group

    out = Path(args.out)
    free_path(out / "scan.json", args)
    with torchrun_group(args.device) as (rank, device):
        loaded = load_model_from(args, device)
        result = fmapviz.scan(
            loaded,
            args.data,
            args.layers,
            topk=args.topk,
            batch_size=args.batch_size or "auto",
            num_workers=args.num_workers,
            shard=args.shard,
            progress=not args.quiet and rank == 0,
        )
        if rank == 0:
            fmapviz.save_scan(result, out)
            for path, reason in result.skipped:
                print(f"skipped {path}: {reason}", file=sys.stderr)
            say(
                args,
                f"Scanned {result.images} images ({len(result.skipped)} skipped) into {out} "
                "(scan.json, scan.pt, channels.txt, channels.png)",
            )
    return 0


COMMAND = Command(
    "scan",
    "Scan a dataset: channel statistics, dead channels and top-k images per channel.",
    add_options,
    run,
    "fmapviz scan mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layers features.7 features.14 -o scan/\n"
    "  torchrun --nproc-per-node 2 -m fmapviz scan mobilenet_v2 --weights IMAGENET1K_V1 photos/ "
    "--layers features.7 -o scan/",
)
