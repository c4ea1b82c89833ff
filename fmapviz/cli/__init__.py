"""The ``fmapviz`` command: argparse subcommands over the public API, nothing else.

``main(argv) -> int`` returns 0 on success, 1 on a runtime error, 2 on a usage error.
Errors are one line on stderr; ``--debug`` shows the traceback. Output files that exist
are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import interrupts_are_kept


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


# ---------------------------------------------------------------- option values checked before anything loads


def _value_error(text: str) -> argparse.ArgumentTypeError:
    from fmapviz.vocabulary import shorten

    return argparse.ArgumentTypeError(shorten(text))


def channels_value(text: str) -> str:
    """A ``--channels`` value checked with :func:`fmapviz.vocabulary.parse_channels` (kept as text)."""
    from fmapviz.vocabulary import parse_channels

    try:
        parse_channels(text)
    except ValueError as error:
        raise _value_error(f"bad channel list: {error}") from None
    return text


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _value_error(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise _value_error(f"{value} is too small; use {minimum} or more")
        return value

    parse.__name__ = "number"  # what argparse names in "invalid number value"
    return parse


def _count_or_all(minimum: int) -> Callable[[str], int | None]:
    """A whole number, or ``all`` (None)."""
    count = _count(minimum)

    def parse(text: str) -> int | None:
        if text.lower() == "all":
            return None
        try:
            int(text)
        except ValueError:
            raise _value_error(f"'{text}' is neither a whole number nor all") from None
        return count(text)

    parse.__name__ = "number"
    return parse


def shard_value(text: str) -> tuple[int, int]:
    """``"i/n"``: scan every n-th image from i."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit() and int(index) < int(count)):
        raise _value_error(f"'{text}' is not i/n with 0 <= i < n (e.g. 0/4)")
    return int(index), int(count)


def mean_std_value(text: str) -> tuple[float, ...]:
    """``--mean``/``--std``: one value (grayscale model) or three comma-separated (RGB)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise _value_error(f"'{text[:40]}' is not 1 or 3 comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406")
    return values


def class_value(text: str) -> str:
    """A class name or a class index >= 0 (names are checked once the model's classes are known)."""
    if text.strip().startswith("-") and text.strip()[1:].isdigit():
        raise _value_error(f"class {text} is negative; class indices start at 0")
    return text


# ---------------------------------------------------------------- subcommands: options + run, registered in COMMANDS


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, its own options, the function that runs it, examples.

    ``weights`` is the default of ``--weights`` for this command (``"none"``: architecture only),
    ``size`` what ``--size`` defaults to, as its help says it; ``intermixed``: positionals may follow options.
    """

    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    examples: str
    weights: str = "DEFAULT"
    size: str = "the model's own transform, 224 for ImageNet weights"
    intermixed: bool = False


MODEL_HELP = "torchvision name, file.py:factory, package.module:factory or a TorchScript file"
IMAGES_HELP = "image files, folders or globs"


def _layers_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)


def _maps_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("images", nargs="+", help=IMAGES_HELP)
    parser.add_argument("--layer", nargs="+", required=True, help="layer selectors: names, globs, types")
    parser.add_argument(
        "--channels", type=channels_value, default="top:16", help="all, top:K, bottom:K, 0-15 or 3,7 (default top:16)"
    )
    parser.add_argument("--rank", default="mean", help="how top:K ranks channels: mean, max or std (default mean)")
    parser.add_argument("--normalize", default="layer", help="layer, channel or global (default layer)")
    parser.add_argument("--overlay", action="store_true", help="draw each map over the photo")
    parser.add_argument("--cmap", default="viridis", help="matplotlib colormap (default viridis)")
    parser.add_argument("-o", "--out", default="fmapviz-maps", help="output folder (default fmapviz-maps)")


def _saliency_options(parser: argparse.ArgumentParser) -> None:
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
        "--layers", nargs="+", help="layers of the CAM methods, e.g. layer4.1.relu#2 (default: searched)"
    )
    parser.add_argument("-o", "--out", default="fmapviz-saliency", help="output folder (default fmapviz-saliency)")


def _actmax_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--layer", help="layer whose channels to visualize (with --channels)")
    goal.add_argument(
        "--class", dest="class_name", nargs="+", type=class_value, help="class names or indices to visualize"
    )
    parser.add_argument("--channels", type=channels_value, default="0-7", help="indices, 0-15 or all (default 0-7)")
    parser.add_argument("--steps", type=_count(0), default=256, help="optimization steps (default 256)")
    parser.add_argument("-o", "--out", default="actmax.png", help="output PNG (default actmax.png)")


def _report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("images", nargs="+", help=IMAGES_HELP)
    parser.add_argument("--layer", nargs="+", help="hierarchy layers (default: the deepest block per resolution)")
    parser.add_argument("--actmax", action="store_true", help="add activation maximization of the top channels")
    parser.add_argument("-o", "--out", default="fmapviz-report", help="output folder (default fmapviz-report)")


def _scan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", help="a folder of images (sub-folders included), a file or a glob")
    parser.add_argument("--layer", "-l", nargs="+", action="extend", required=True, help="layer selectors (repeatable)")
    parser.add_argument("--topk", type=_count(1), default=16, help="top images kept per channel (default 16)")
    parser.add_argument("--batch-size", type=_count(1), default=32, help="images per forward pass (default 32)")
    parser.add_argument("--num-workers", type=_count(0), default=0, help="image-reading processes (default 0)")
    parser.add_argument(
        "--shard", type=shard_value, help="i/n: scan every n-th image from i (default: all; per rank under torchrun)"
    )
    parser.add_argument("-o", "--out", default="fmapviz-scan", help="output folder (default fmapviz-scan)")


def _channel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("scan", help="folder written by fmapviz scan")
    parser.add_argument("--layer", required=True, help="a scanned layer")
    parser.add_argument("--channel", type=_count(0), required=True, help="channel index")
    parser.add_argument("--no-actmax", action="store_true", help="skip the activation-maximization image")
    parser.add_argument("--steps", type=_count(0), default=128, help="optimization steps (default 128)")
    parser.add_argument("-o", "--out", default="channel.png", help="output PNG (default channel.png)")


def _explore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", nargs="+", help="folders of photos (searched recursively) or photo files")
    parser.add_argument(
        "--layers", "--layer", nargs="+", action="extend", required=True, help="layers with (N,C,H,W) outputs"
    )
    parser.add_argument("--top", type=_count(1), default=5, help="channels explained per layer and photo (default 5)")
    parser.add_argument(
        "--method", default="activation_x_gradient", help="channel attribution method (default activation_x_gradient)"
    )
    parser.add_argument("--crops", type=_count(1), default=8, help="dataset examples per channel page (default 8)")
    parser.add_argument(
        "--actmax-top",
        type=_count_or_all(0),
        default=None,
        help="channels per layer (firing hardest) with an actmax image, or all (default all)",
    )
    parser.add_argument(
        "--actmax-copies", type=_count(1), default=3, help="actmax images (seeds) per alternatives channel (default 3)"
    )
    parser.add_argument(
        "--alternatives-top",
        type=_count(0),
        default=16,
        help="channels per layer (firing hardest) whose pages show all the actmax copies (default 16)",
    )
    parser.add_argument("--actmax-steps", type=_count(0), default=128, help="actmax optimization steps (default 128)")
    parser.add_argument("--actmax-size", type=_count(1), default=128, help="actmax image size (default 128)")
    parser.add_argument("--batch-size", type=_count(1), default=16, help="photos per forward pass (default 16)")
    parser.add_argument("-o", "--out", default="fmapviz-site", help="site folder (default fmapviz-site)")


def _compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="MODEL_OR_CHECKPOINT", help="MODEL_A MODEL_B DATA, or CKPT... DATA"
    )
    parser.add_argument("--factory", help="file.py:build: the inputs are checkpoints of this model, in training order")
    parser.add_argument("--layers", "--layer", nargs="+", help="layers (of model A); default: every block")
    parser.add_argument("--layers-b", nargs="+", help="layers of model B (default: --layers, else every block)")
    parser.add_argument("--batch-size", type=_count(1), default=32, help="images per forward pass (default 32)")
    parser.add_argument("-o", "--out", default="fmapviz-compare", help="output folder (default fmapviz-compare)")


def _init_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--data", help="images to run (default: standard-normal noise)")
    parser.add_argument("--layers", "--layer", nargs="+", help="layers (default: every activation module)")
    parser.add_argument("--batch-size", type=_count(1), default=8, help="inputs in the pass (default 8)")
    parser.add_argument("-o", "--out", default="fmapviz-init", help="output folder (default fmapviz-init)")


def _common_options(parser: argparse.ArgumentParser, command: Command) -> None:
    weights = "none: the architecture only" if command.weights == "none" else command.weights
    parser.add_argument(
        "--weights",
        default=command.weights,
        help=f"torchvision weights: DEFAULT, an enum name or none (default {weights})",
    )
    parser.add_argument("--checkpoint", help="state dict to load into the model (default: none)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in --checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: where the model is built, cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and optimization (default 0)")
    parser.add_argument("--size", type=_count(1), help=f"input size in pixels (default: {command.size})")
    parser.add_argument(
        "--mean",
        type=mean_std_value,
        help="input normalization mean, 1 value (grayscale model) or 3 "
        "(default: the weights' own, else ImageNet's 0.485,0.456,0.406)",
    )
    parser.add_argument("--std", type=mean_std_value, help="input normalization std, as --mean (default: ImageNet's)")
    parser.add_argument(
        "--output",
        metavar="KEY",
        help="key of the model's output to explain when it returns a dict (default: 'logits', else 'out', "
        "else its only tensor)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> _Parser:
    """The argument parser of every subcommand in :data:`COMMANDS` (exposed for tests and docs)."""
    parser = _Parser(prog="fmapviz", description="See what a convolutional network sees.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog="examples:\n  " + command.examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.intermixed:
            sub.__class__ = _IntermixedParser
        command.options(sub)
        _common_options(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fmapviz command line; returns the exit code.

    Everything that can be checked without a model (option values, ``--shard``, ``--channels``)
    is checked before torch is imported: ``--help`` and usage errors answer at once.
    """
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
        with warnings.catch_warnings(), interrupts_are_kept():
            warnings.showwarning = _one_line_warning
            return COMMANDS[args.command].run(args)
    except UsageError as error:
        if args.debug:
            raise
        print(f"error: {_capped(str(error))}", file=sys.stderr)
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
    """Checks across options that need no model, before torch loads (UsageError, exit 2)."""
    if (args.mean is None) != (args.std is None) or (args.mean and len(args.mean) != len(args.std)):
        raise UsageError("pass --mean and --std together, with one value each (grayscale) or three (RGB)")
    channels = getattr(args, "channels", "") if args.command == "actmax" else ""
    if channels.strip().startswith(("top:", "bottom:")):
        raise UsageError(f"actmax --channels takes indices or all, not '{channels}' (no images to rank by)")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _model(args: argparse.Namespace, device: str | None = None, use_size: bool = True) -> Any:
    import fmapviz

    weights = None if str(args.weights).lower() == "none" else args.weights
    return fmapviz.load_model(
        args.model,
        weights=weights,
        checkpoint=args.checkpoint,
        device=device or args.device,
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

    loaded = _model(args)
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
    from fmapviz.vocabulary import parse_channels

    choice = parse_channels(args.channels)
    channels = list(choice.indices) if choice.kind == "indices" else "all"
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
        result = fmapviz.maximize(loaded.model, args.layer, channels=channels, **options)
        title = f"{loaded.name} {args.layer}: channel visualizations"
    save_figure(fmapviz.show_gallery(result, title=title), path)
    _say(args, f"wrote {path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.pages.report import ReportSpec

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
    from fmapviz.engines.scan import torchrun_group
    from fmapviz.files import FolderLock, save_figure, write_text

    out = Path(args.out)
    _free(out / "scan.json", args)
    with torchrun_group(args.device) as (rank, device):
        loaded = _model(args, device)
        result = fmapviz.scan(
            loaded,
            args.data,
            args.layer,
            topk=args.topk,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            shard=args.shard,
            progress=not args.quiet and rank == 0,
        )
        if rank == 0:
            with FolderLock(out):
                result.save(out)
                health = result.dead_channels()  # the short answer to "which channels never fire?", beside the data
                write_text(out / "channels.txt", "".join(f"{stats}\n" for stats in health.values()))
                save_figure(fmapviz.show_dead_channels(result), out / "channels.png")
            for path, reason in result.skipped:
                print(f"skipped {path}: {reason}", file=sys.stderr)
            _say(
                args,
                f"Scanned {result.images} images ({len(result.skipped)} skipped) into {out} "
                "(scan.json, scan.pt, channels.txt, channels.png)",
            )
    return 0


def run_channel(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.files import save_figure

    path = _free(Path(args.out), args)
    result = fmapviz.load_scan(args.scan)
    loaded = _model(args, use_size=False)  # --size is the actmax image's; crops are read as the scan read
    if result.input_size and tuple(result.input_size) != tuple(loaded.input_size):  # the scan ran at --size N
        loaded = _model(argparse.Namespace(**{**vars(args), "size": list(result.input_size)}))
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
    _say(args, f"wrote {path}")
    return 0


def run_explore(args: argparse.Namespace) -> int:
    import fmapviz
    from fmapviz.engines.scan import torchrun_group
    from fmapviz.explorer import ExploreSettings

    settings = ExploreSettings(
        crops=args.crops,
        explain_top=args.top,
        method=args.method,
        actmax_top=args.actmax_top,
        actmax_copies=args.actmax_copies,
        alternatives_top=args.alternatives_top,
        actmax_steps=args.actmax_steps,
        actmax_size=args.actmax_size,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    with torchrun_group(args.device) as (_, device):  # under torchrun the processes share the work
        loaded = _model(args, device)
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
    from fmapviz.inputs import list_images

    curves, histograms, json_path = _outputs(args, ["init.png", "histograms.png", "init.json"])
    loaded = _model(args)
    if args.data:
        x = fmapviz.load_image(list_images(args.data, recursive=True)[: args.batch_size], loaded.transform).tensor
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


COMMANDS: dict[str, Command] = {
    "layers": Command(
        "Print every layer: output shape, parameters, stride and receptive field.",
        _layers_options,
        run_layers,
        "fmapviz layers mobilenet_v2   (architecture only: no weights needed)\n"
        "  fmapviz layers mnist_net.py:build --mean 0.1307 --std 0.3081   (a grayscale model; its size is found)",
        weights="none",
        size="224",
    ),
    "maps": Command(
        "Write feature-map grids of the chosen layers for each image.",
        _maps_options,
        run_maps,
        "fmapviz maps mobilenet_v2 --weights IMAGENET1K_V1 cat.png --layer features.1 features.7 -o maps/\n"
        "  fmapviz maps resnet18 --weights IMAGENET1K_V1 cat.png --layer 'layer3.*.conv2' --channels top:32 --overlay",
    ),
    "saliency": Command(
        "Write saliency maps (Grad-CAM, SmoothGrad, IG, ...) for each image.",
        _saliency_options,
        run_saliency,
        "fmapviz saliency mobilenet_v2 --weights IMAGENET1K_V1 cat.png --method gradcam smoothgrad\n"
        "  fmapviz saliency my_net.py:build --checkpoint best.pt cat.png --method integrated_gradients --target 3\n"
        "  fmapviz saliency resnet18 --weights IMAGENET1K_V1 cat.png --method gradcam --layers layer4.1.relu#2 "
        "--target 'layer3.1.relu[7]'",
    ),
    "actmax": Command(
        "Synthesize images that maximize channels of a layer, or a class.",
        _actmax_options,
        run_actmax,
        "fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --layer features.10 --channels 0-15\n"
        "  fmapviz actmax mobilenet_v2 --weights IMAGENET1K_V1 --class banana --steps 256",
        size="224",
    ),
    "report": Command(
        "Write a full PNG report per image, manifest.json and index.html.",
        _report_options,
        run_report,
        "fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 cat.png dog.jpg -o report/\n"
        "  fmapviz report my_net.py:build --checkpoint best.pt photos/ -o report/ --actmax",
    ),
    "scan": Command(
        "Scan a dataset: channel statistics, dead channels and top-k images per channel.",
        _scan_options,
        run_scan,
        "fmapviz scan mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layer features.7 features.14 -o scan/\n"
        "  torchrun --nproc-per-node 2 -m fmapviz scan mobilenet_v2 --weights IMAGENET1K_V1 photos/ "
        "--layer features.7 -o scan/",
    ),
    "channel": Command(
        "Draw one channel's page from a scan: actmax image, top-k crops, histogram.",
        _channel_options,
        run_channel,
        "fmapviz channel mobilenet_v2 --weights IMAGENET1K_V1 scan/ --layer features.7 --channel 12 -o channel.png",
        size="128, the actmax image; the top-k crops are read at the scan's own size",
    ),
    "explore": Command(
        "Build a browsable site of model, layer, channel and photo pages (opens from file://).",
        _explore_options,
        run_explore,
        "fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 photos/ --layers features.7 features.14 -o site/\n"
        "  torchrun --nproc-per-node 2 -m fmapviz explore resnet18 --weights IMAGENET1K_V1 photos/ --layers layer3 "
        "layer4 -o site/",
    ),
    "compare": Command(
        "Compare two models layer by layer (CKA, dead channels, predictions), or checkpoints.",
        _compare_options,
        run_compare,
        "fmapviz compare mobilenet_v2 --weights IMAGENET1K_V1 pruned.py:build photos/ -o compare/\n"
        "  fmapviz compare runs/ckpt_*.pt --factory net.py:build photos/ -o curves/",
        intermixed=True,
    ),
    "init": Command(
        "Initialization report: activation mean/std/zeros and gradient RMS per layer, flagged.",
        _init_options,
        run_init,
        "fmapviz init net.py:build --size 64 -o init/\n  fmapviz init resnet18 --data photos/ --batch-size 16",
        weights="none",
    ),
}


if __name__ == "__main__":
    raise SystemExit(main())
