"""The ``fmapviz`` command: argparse subcommands over the public API, nothing else.

``main(argv) -> int`` returns 0 on success, 1 on a runtime error, 2 on a usage error.
Errors are one line on stderr; ``--debug`` shows the traceback. Output files that exist
are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXAMPLES = {
    "layers": "fmapviz layers mobilenet_v2   (architecture only: no weights needed)\n"
    "  fmapviz layers mnist_net.py:build --mean 0.1307 --std 0.3081   (a grayscale model; its size is found)",
    "maps": "fmapviz maps mobilenet_v2 --weights IMAGENET1K_V1 cat.png --layer features.1 features.7 -o maps/\n"
    "  fmapviz maps resnet18 --weights IMAGENET1K_V1 cat.png --layer 'layer3.*.conv2' --channels top:32 --overlay",
    "saliency": "fmapviz saliency mobilenet_v2 --weights IMAGENET1K_V1 cat.png --method gradcam smoothgrad\n"
    "  fmapviz saliency my_net.py:build --checkpoint best.pt cat.png --method integrated_gradients --target 3\n"
    "  fmapviz saliency resnet18 --weights IMAGENET1K_V1 cat.png --method gradcam --layers layer4.1.relu#2 "
    "--target 'layer3.1.relu[7]'",
    "actmax": "fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --layer features.10 --channels 0-15\n"
    "  fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --class banana --steps 256",
    "report": "fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 cat.png dog.jpg -o report/\n"
    "  fmapviz report my_net.py:build --checkpoint best.pt photos/ -o report/ --actmax",
    "scan": "fmapviz scan mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layer features.7 features.14 -o scan/",
    "channel": "fmapviz channel mobilenet_v2 --weights IMAGENET1K_V1 scan/ --layer features.7 --channel 12 "
    "-o channel.png",
    "compare": "fmapviz compare mobilenet_v2 pruned.py:build photos/ --weights IMAGENET1K_V1 -o compare/\n"
    "  fmapviz compare runs/ckpt_*.pt --factory net.py:build photos/ -o curves/",
    "init": "fmapviz init net.py:build --size 64 -o init/\n  fmapviz init resnet18 --data photos/ --batch-size 16",
    "explore": "fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layers features.7 features.14 -o site/\n"
    "  torchrun --nproc-per-node 2 -m fmapviz.explore resnet18 --weights IMAGENET1K_V1 photos/ --layers layer3 layer4 "
    "-o site/",
}


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, instead of argparse's usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _IntermixedParser(_Parser):
    """Positionals may follow options (``compare ckpt_*.pt --factory net.py:build photos/``)."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:  # parse_known_intermixed_args calls back here (Python < 3.12)
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def channel_list(text: str) -> list[int] | str:
    """``--channels`` of actmax: indices (``"0-15"``, ``"3,7,9"``, ``"0-3,8"``) or ``"all"``."""
    from .vocabulary import parse_channels

    try:
        choice = parse_channels(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad channel list: {error}") from None
    if choice.kind in ("top", "bottom"):
        raise argparse.ArgumentTypeError(f"bad channel list '{text}': actmax takes indices such as 0-15, or all")
    return "all" if choice.kind == "all" else list(choice.indices)


def channel_choice(text: str) -> str:
    """``--channels`` of maps: which channels, checked before torch loads (see fmapviz.vocabulary)."""
    from .vocabulary import parse_channels

    try:
        parse_channels(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad channel list: {error}") from None
    return text


def normalization(text: str) -> tuple[float, ...]:
    """Parse ``--mean``/``--std``: one value (grayscale model) or three comma-separated (RGB)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(
            f"'{text[:40]}' is not 1 or 3 comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406"
        )
    return values


def build_parser() -> _Parser:
    """The argument parser of every subcommand (exposed for tests and docs)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights: DEFAULT, an enum name (IMAGENET1K_V1) or none (default DEFAULT)",
    )
    common.add_argument("--checkpoint", help="state dict to load into the model")
    common.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in --checkpoint")
    common.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu)")
    common.add_argument("--seed", type=int, default=0, help="seed for noise and optimization (default 0)")
    common.add_argument("--size", type=int, help="input size in pixels (default: the model's own transform)")
    common.add_argument(
        "--mean", type=normalization, help="input normalization mean, 1 value (grayscale model) or 3 "
        "(default: the weights' own, else ImageNet's 0.485,0.456,0.406)",
    )  # fmt: skip
    common.add_argument("--std", type=normalization, help="input normalization std, as --mean (default: ImageNet's)")
    common.add_argument(
        "--output", metavar="KEY", help="key of the model's output to explain when it returns a dict "
        "(default: 'logits', else 'out', else its only tensor)",
    )  # fmt: skip
    common.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    common.add_argument("--force", action="store_true", help="overwrite existing output files")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = _Parser(prog="fmapviz", description="See what a convolutional network sees.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> _Parser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog="examples:\n  " + EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    model_help = "torchvision name, file.py:factory, package.module:factory or a TorchScript file"
    layers = command("layers", "Print every layer: output shape, parameters, stride and receptive field.")
    layers.add_argument("model", help=model_help)

    maps = command("maps", "Write feature-map grids of the chosen layers for each image.")
    maps.add_argument("model", help=model_help)
    maps.add_argument("images", nargs="+", help="image files, folders or globs")
    maps.add_argument("--layer", nargs="+", required=True, help="layer selectors: names, globs, types")
    maps.add_argument("--channels", type=channel_choice, default="top:16",
                      help="which channels: all, top:K, bottom:K, 0-15 or 3,7 (default top:16)")  # fmt: skip
    maps.add_argument("--rank", default="mean", help="mean, max or std (default mean)")
    maps.add_argument("--normalize", default="layer", help="layer, channel or global (default layer)")
    maps.add_argument("--overlay", action="store_true", help="draw each map over the photo")
    maps.add_argument("--cmap", default="viridis", help="matplotlib colormap (default viridis)")
    maps.add_argument("-o", "--out", default="fmapviz-maps", help="output folder (default fmapviz-maps)")

    sal = command("saliency", "Write saliency maps (Grad-CAM, SmoothGrad, IG, ...) for each image.")
    sal.add_argument("model", help=model_help)
    sal.add_argument("images", nargs="+", help="image files, folders or globs")
    sal.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        help="saliency methods (default gradcam); --method alone lists every method with a line on each",
    )
    sal.add_argument(
        "--target", default="top", help="top, top:3, a class index, a class name or a unit layer[c] (default top)"
    )
    sal.add_argument("--layers", nargs="+", help="layers of the CAM methods, e.g. layer4.1.relu#2 (default: searched)")
    sal.add_argument("-o", "--out", default="fmapviz-saliency", help="output folder (default fmapviz-saliency)")

    act = command("actmax", "Synthesize images that maximize channels of a layer, or a class.")
    act.add_argument("model", help=model_help)
    goal = act.add_mutually_exclusive_group(required=True)
    goal.add_argument("--layer", help="layer whose channels to visualize (with --channels)")
    goal.add_argument("--class", dest="class_name", nargs="+", help="class names or indices to visualize")
    act.add_argument("--channels", type=channel_list, default=list(range(8)), help="e.g. 0-15 (default 0-7)")
    act.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    act.add_argument("-o", "--out", default="actmax.png", help="output PNG (default actmax.png)")

    rep = command("report", "Write a full PNG report per image, manifest.json and index.html.")
    rep.add_argument("model", help=model_help)
    rep.add_argument("images", nargs="+", help="image files, folders or globs")
    rep.add_argument("--layer", nargs="+", help="hierarchy layers (default: the deepest block per resolution)")
    rep.add_argument("--actmax", action="store_true", help="add activation maximization of the top channels")
    rep.add_argument("-o", "--out", default="fmapviz-report", help="output folder (default fmapviz-report)")

    scn = command("scan", "Scan a dataset: channel statistics, dead channels and top-k images per channel.")
    scn.add_argument("model", help=model_help)
    scn.add_argument("data", help="a folder of images")
    scn.add_argument("--layer", nargs="+", required=True, help="layer selectors")
    scn.add_argument("--topk", type=int, default=16, help="top images kept per channel (default 16)")
    scn.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    scn.add_argument("--shard", help="i/n: scan every n-th image from i")
    scn.add_argument("-o", "--out", default="fmapviz-scan", help="output folder (default fmapviz-scan)")

    chan = command("channel", "Draw one channel's page from a scan: actmax image, top-k crops, histogram.")
    chan.add_argument("model", help=model_help)
    chan.add_argument("scan", help="folder written by fmapviz scan")
    chan.add_argument("--layer", required=True)
    chan.add_argument("--channel", type=int, required=True)
    chan.add_argument("--no-actmax", action="store_true", help="skip the activation-maximization image")
    chan.add_argument("--steps", type=int, default=128, help="actmax optimization steps (default 128)")
    chan.add_argument("-o", "--out", default="channel.png", help="output PNG (default channel.png)")

    exp = command("explore", "Build a browsable site of model, layer, channel and photo pages (opens from file://).")
    exp.add_argument("model", help=model_help)
    exp.add_argument("data", nargs="+", help="folders of photos (searched recursively) or photo files")
    exp.add_argument("--layers", "--layer", nargs="+", required=True, help="layers with (N,C,H,W) outputs")
    exp.add_argument("--top", type=int, default=5, help="channels explained per layer and photo (default 5)")
    exp.add_argument(
        "--method", default="activation_x_gradient", help="channel attribution method (default activation_x_gradient)"
    )
    exp.add_argument("--crops", type=int, default=8, help="dataset examples per channel page (default 8)")
    exp.add_argument("--actmax-top", type=int, default=8, help="channels per layer with actmax images (default 8)")
    exp.add_argument("--actmax-copies", type=int, default=3, help="actmax images per such channel (default 3)")
    exp.add_argument("--actmax-steps", type=int, default=128, help="actmax optimization steps (default 128)")
    exp.add_argument("--actmax-size", type=int, default=128, help="actmax image size (default 128)")
    exp.add_argument("--batch-size", type=int, default=16, help="photos per forward pass (default 16)")
    exp.add_argument("-o", "--out", default="fmapviz-site", help="site folder (default fmapviz-site)")
    cmp = command("compare", "Compare two models layer by layer (CKA, dead channels, predictions), or checkpoints.")
    cmp.__class__ = _IntermixedParser
    cmp.add_argument("inputs", nargs="+", metavar="MODEL_OR_CHECKPOINT", help="MODEL_A MODEL_B DATA, or CKPT... DATA")
    cmp.add_argument("--factory", help="file.py:build: the inputs are checkpoints of this model, in training order")
    cmp.add_argument("--layers", "--layer", nargs="+", help="layers (of model A); default: every block")
    cmp.add_argument("--layers-b", nargs="+", help="layers of model B (default: --layers, else every block)")
    cmp.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    cmp.add_argument("-o", "--out", default="fmapviz-compare", help="output folder (default fmapviz-compare)")

    ini = command("init", "Initialization report: activation mean/std/zeros and gradient RMS per layer, flagged.")
    ini.add_argument("model", help=model_help)
    ini.add_argument("--data", help="images to run (default: standard-normal noise)")
    ini.add_argument("--layers", "--layer", nargs="+", help="layers (default: every activation module)")
    ini.add_argument("--batch-size", type=int, default=8, help="inputs in the pass (default 8)")
    ini.add_argument("-o", "--out", default="fmapviz-init", help="output folder (default fmapviz-init)")
    ini.set_defaults(weights="none")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fmapviz command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _lists_methods(argv):
        return _print_methods()
    try:
        args = build_parser().parse_args(argv)
        _check_early(args)
    except UsageError as error:
        print(f"error: {_capped(str(error))}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return RUNNERS[args.command](args)
    except UsageError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the one place errors become exit codes
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {_capped(message)}", file=sys.stderr)
        return 1


def _lists_methods(argv: list[str]) -> bool:
    """``fmapviz saliency --method`` with no method after it: list the methods instead of running."""
    if not argv or argv[0] != "saliency" or "--method" not in argv:
        return False
    after = argv[argv.index("--method") + 1 : argv.index("--method") + 2]
    return not after or after[0].startswith("-")


def _print_methods() -> int:
    from fmapviz.engines.saliency import METHODS

    width = max(map(len, METHODS))
    for name, entry in METHODS.items():
        print(f"{name:<{width}}  {entry.space:<5}  {entry.description}")
    return 0


def _capped(message: str, limit: int = 300) -> str:
    """One error line of at most ``limit`` characters (an echoed 5000-channel list is not read by anyone)."""
    return message if len(message) <= limit else f"{message[: limit - 1]}… ({len(message)} characters; --debug)"


def _one_line_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {_capped(str(message))}", file=sys.stderr)


def _check_early(args: argparse.Namespace) -> None:
    """Checks that need no model, before torch loads (UsageError, exit 2)."""
    if (args.mean is None) != (args.std is None) or (args.mean and len(args.mean) != len(args.std)):
        raise UsageError("pass --mean and --std together, with one value each (grayscale) or three (RGB)")
    for name in getattr(args, "class_name", None) or []:
        if name.strip().startswith("-") and name.strip()[1:].isdigit():
            raise UsageError(f"--class {name}: class indices start at 0")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _model(args: argparse.Namespace, architecture_only: bool = False, use_size: bool = True) -> Any:
    import fmapviz

    weights = None if architecture_only or str(args.weights).lower() == "none" else args.weights
    return fmapviz.load_model(
        args.model,
        weights=weights,
        checkpoint=None if architecture_only else args.checkpoint,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
        mean=args.mean,
        std=args.std,
        size=args.size if use_size else None,
        output=args.output,
    )


def _images(args: argparse.Namespace, loaded: Any) -> Any:
    import fmapviz

    return fmapviz.load_image(args.images, loaded.transform, mean=loaded.mean, std=loaded.std)


def _free(path: Path, args: argparse.Namespace) -> Path:
    """``path`` if it may be written: its folder is created and writable, and it does not exist unless --force."""
    from fmapviz.errors import FmapvizError
    from fmapviz.files import writable_folder

    if path.exists() and not args.force:
        raise FmapvizError(f"{path} already exists; pass --force to overwrite it.")
    writable_folder(path.parent)
    return path


def _safe(text: str) -> str:
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in text)


def run_layers(args: argparse.Namespace) -> int:
    import fmapviz

    loaded = _model(args, architecture_only=True)  # the layers need no weights
    print(fmapviz.summary(loaded.model, (1, loaded.channels, *loaded.input_size)))
    return 0


def run_maps(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure, writable_folder

    writable_folder(Path(args.out))  # before the work, not after it
    loaded = _model(args)
    image = _images(args, loaded)
    out = Path(args.out)
    jobs = []
    for index, name in enumerate(image.names):
        x = image.tensor[index : index + 1].to(loaded.device)
        maps = fmapviz.feature_maps(loaded.model, x, args.layer)
        for layer in maps:
            jobs.append((_free(out / f"{_safe(Path(name).stem)}_{_safe(layer)}.png", args), maps, layer, index))
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
        _say(args, f"wrote {path}")
    return 0


def run_saliency(args: argparse.Namespace) -> int:
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
    loaded = _model(args)
    image = _images(args, loaded)
    target = int(args.target) if args.target.isdigit() else args.target
    out = Path(args.out)
    searches = LayerSearchCache()  # layers=None searches once per run, not once per image and method
    for index, name in enumerate(image.names):
        path = _free(out / f"{_safe(Path(name).stem)}_saliency.png", args)
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
        _say(args, f"wrote {path}")
    return 0


def run_actmax(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure

    out = Path(args.out)
    path = _free(out if out.suffix else out.with_name(out.name + ".png"), args)
    loaded = _model(args)
    options = dict(
        size=loaded.input_size,
        model_size=loaded.size if loaded.fixed_size else None,  # padding and jitter change the size it needs
        steps=args.steps,
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
        result = fmapviz.maximize(loaded.model, args.layer, channels=args.channels, **options)
        title = f"{loaded.name} {args.layer}: channel visualizations"
    save_figure(fmapviz.show_gallery(result, title=title), path)
    _say(args, f"wrote {path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.report import ReportSpec

    loaded = _model(args)
    image = _images(args, loaded)
    spec = ReportSpec(layers=tuple(args.layer) if args.layer else None, actmax=args.actmax, seed=args.seed)
    result = fmapviz.report(loaded, image, args.out, spec=spec, force=args.force, progress=not args.quiet)
    for page in result.pages:
        _say(args, f"wrote {page}")
    _say(args, f"wrote {result.index} and {result.manifest}")
    return 0


def run_scan(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import FolderLock, save_figure, write_text

    shard = None
    if args.shard:
        try:
            index, count = (int(part) for part in args.shard.split("/"))
        except ValueError:
            raise UsageError(f"--shard must look like i/n (e.g. 0/4), not '{args.shard}'") from None
        shard = (index, count)
    out = Path(args.out)
    _free(out / "scan.json", args)
    loaded = _model(args)
    with FolderLock(out):
        options = dict(topk=args.topk, batch_size=args.batch_size, shard=shard, progress=not args.quiet)
        result = fmapviz.scan(loaded, args.data, args.layer, **options)
        result.save(out)
        health = result.dead_channels()  # the short answer to "which channels never fire?", beside the data
        write_text(out / "channels.txt", "".join(f"{stats}\n" for stats in health.values()))
        save_figure(fmapviz.show_dead_channels(result), out / "channels.png")
    for path, reason in getattr(result, "skipped", []) or []:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    _say(args, f"wrote {out} (scan.json, scan.pt, channels.txt, channels.png)")
    return 0


def run_channel(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure
    from fmapviz.scan import channel_page

    path = _free(Path(args.out), args)
    result = fmapviz.load_scan(args.scan)
    loaded = _model(args, use_size=False)  # crops are read with the preprocessing the scan used
    figure = channel_page(
        loaded, result, args.layer, args.channel, with_actmax=not args.no_actmax, steps=args.steps, seed=args.seed
    )
    save_figure(figure, path)
    _say(args, f"wrote {path}")
    return 0


def run_explore(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.explore import ExploreSettings

    settings = ExploreSettings(
        crops=args.crops,
        explain_top=args.top,
        method=args.method,
        actmax_top=args.actmax_top,
        actmax_copies=args.actmax_copies,
        actmax_steps=args.actmax_steps,
        actmax_size=args.actmax_size,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    loaded = _model(args)
    if args.size:
        from torchvision.transforms._presets import ImageClassification

        loaded.transform = ImageClassification(
            crop_size=args.size, resize_size=round(args.size * 256 / 224), mean=loaded.mean, std=loaded.std
        )
    index = fmapviz.explore(
        loaded, args.data, args.layers, args.out, settings=settings, force=args.force, progress=not args.quiet
    )
    _say(args, f"wrote {index}")
    return 0


def _outputs(args: argparse.Namespace, names: Sequence[str]) -> list[Path]:
    return [_free(Path(args.out) / name, args) for name in names]


def run_compare(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure, write_json

    *models, data = args.inputs
    if args.factory is None and len(models) != 2:
        raise UsageError("compare takes MODEL_A MODEL_B DATA, or checkpoints with --factory file.py:build")
    if args.factory is not None:
        figure_path, json_path = _outputs(args, ["checkpoints.png", "checkpoints.json"])
        loaded = fmapviz.load_model(args.factory, mean=args.mean, std=args.std, size=args.size)
        series = fmapviz.compare_checkpoints(
            models, args.factory, data, args.layers, transform=loaded.transform, batch_size=args.batch_size,
            trust_checkpoint=args.trust_checkpoint,
        )  # fmt: skip
        save_figure(fmapviz.show_checkpoints(series), figure_path)
        write_json(json_path, series.to_dict())
        _say(
            args, f"wrote {figure_path} and {json_path} ({len(series.checkpoints)} checkpoints, {series.count} images)"
        )
        return 0
    paths = _outputs(args, ["cka.png", "side_by_side.png", "health.png", "disagreements.png", "compare.json"])
    loaded = [_model(argparse.Namespace(**{**vars(args), "model": spec})) for spec in models]
    result = fmapviz.compare(*loaded, data, args.layers, args.layers_b or args.layers, batch_size=args.batch_size)
    figures = [fmapviz.show_cka(result), fmapviz.show_side_by_side(result), fmapviz.show_compare_health(result)]
    figures.append(fmapviz.show_disagreements(result) if result.shown else None)
    for figure, path in zip(figures, paths):
        if figure is not None:
            save_figure(figure, path)
    write_json(paths[-1], result.to_dict())
    agreement = "" if result.agreement is None else f", top-1 agreement {result.agreement:.1%}"
    _say(args, f"wrote {args.out}/ ({result.count} images{agreement})")
    return 0


def run_init(args: argparse.Namespace) -> int:
    import torch

    import fmapviz
    from fmapviz.files import save_figure, write_json

    curves, histograms, json_path = _outputs(args, ["init.png", "histograms.png", "init.json"])
    loaded = _model(args)
    if args.data:
        from fmapviz.scan import list_image_files

        x = fmapviz.load_image(list_image_files(args.data)[: args.batch_size], loaded.transform).tensor
    else:
        generator = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch_size, loaded.channels, *loaded.input_size, generator=generator)
    report = fmapviz.init_report(loaded.model, x.to(loaded.device), args.layers, seed=args.seed)
    save_figure(fmapviz.show_init_report(report), curves)
    save_figure(fmapviz.show_init_histograms(report), histograms)
    rows = [
        {key: value for key, value in vars(row).items() if key not in ("histogram", "edges")} for row in report.layers
    ]
    write_json(json_path, {"input_std": report.input_std, "layers": rows})
    _say(args, str(report))
    flagged = report.flagged
    _say(args, f"{len(flagged)} flagged layer(s): {', '.join(flagged) if flagged else 'none'}; wrote {args.out}/")
    return 0


RUNNERS = {
    "layers": run_layers,
    "maps": run_maps,
    "saliency": run_saliency,
    "actmax": run_actmax,
    "report": run_report,
    "scan": run_scan,
    "channel": run_channel,
    "explore": run_explore,
    "compare": run_compare,
    "init": run_init,
}


if __name__ == "__main__":
    raise SystemExit(main())
