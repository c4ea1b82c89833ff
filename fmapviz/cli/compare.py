"""``fmapviz compare``: two models layer by layer (CKA, dead channels, predictions), or a model's checkpoints."""

from __future__ import annotations

import argparse

from .common import free_outputs, load_model_from, say
from .options import Command, UsageError, count_value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="MODEL_OR_CHECKPOINT", help="MODEL_A MODEL_B DATA, or CKPT... DATA"
    )
    parser.add_argument("--factory", help="file.py:build: the inputs are checkpoints of this model, in training order")
    parser.add_argument(
        "--layers", "--layer", nargs="+", action="extend", help="layers (of model A); default: every block"
    )
    parser.add_argument("--layers-b", nargs="+", help="layers of model B (default: --layers, else every block)")
    parser.add_argument("--batch-size", type=count_value(1), default=32, help="images per forward pass (default 32)")
    parser.add_argument("-o", "--out", default="fmapviz-compare", help="output folder (default fmapviz-compare)")


def run(args: argparse.Namespace) -> int:
    *models, data = args.inputs
    if args.factory is None and len(models) != 2:
        raise UsageError("compare takes MODEL_A MODEL_B DATA, or checkpoints with --factory file.py:build")
    if args.factory is not None:
        return _run_checkpoints(args, models, data)
    import fmapviz
    from fmapviz.files import save_figure, write_json

    paths = free_outputs(args, ["cka.png", "side_by_side.png", "health.png", "disagreements.png", "compare.json"])
    loaded = []
    for spec in models:  # a copy of args per model; the device is said once
        copy = argparse.Namespace(**{**vars(args), "model": spec, "device_said": bool(loaded)})
        loaded.append(load_model_from(copy))
    result = fmapviz.compare(*loaded, data, args.layers, args.layers_b or args.layers, batch_size=args.batch_size)
    figures = [fmapviz.show_cka(result), fmapviz.show_side_by_side(result), fmapviz.show_compare_health(result)]
    figures.append(fmapviz.show_disagreements(result) if result.shown else None)
    for figure, path in zip(figures, paths):
        if figure is not None:
            save_figure(figure, path)
    write_json(paths[-1], result.to_dict())
    agreement = "" if result.agreement is None else f", top-1 agreement {result.agreement:.1%}"
    say(args, f"wrote {args.out}/ ({result.count} images{agreement})")
    return 0


def _run_checkpoints(args: argparse.Namespace, checkpoints: list[str], data: str) -> int:
    import fmapviz
    from fmapviz.files import save_figure, write_json

    figure_path, json_path = free_outputs(args, ["checkpoints.png", "checkpoints.json"])
    loaded = fmapviz.load_model(args.factory, mean=args.mean, std=args.std, size=args.size)
    series = fmapviz.compare_checkpoints(
        checkpoints, args.factory, data, args.layers, transform=loaded.transform, batch_size=args.batch_size,
        trust_checkpoint=args.trust_checkpoint,
    )  # fmt: skip
    save_figure(fmapviz.show_checkpoints(series), figure_path)
    write_json(json_path, series.to_dict())
    say(args, f"wrote {figure_path} and {json_path} ({len(series.checkpoints)} checkpoints, {series.count} images)")
    return 0


COMMAND = Command(
    "compare",
    "Compare two models layer by layer (CKA, dead channels, predictions), or checkpoints.",
    add_options,
    run,
    "fmapviz compare mobilenet_v2 --weights IMAGENET1K_V1 pruned.py:build photos/ -o compare/\n"
    "  fmapviz compare runs/ckpt_*.pt --factory net.py:build photos/ -o curves/",
    intermixed=True,
)
