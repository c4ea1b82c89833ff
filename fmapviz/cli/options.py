"""What the command line accepts: the parser classes, option values checked before anything loads, the options
every command shares, and :class:`Command`, one subcommand's entry.

Nothing here imports torch: ``fmapviz --help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL_HELP = "torchvision name, file.py:factory, package.module:factory or a TorchScript file"
IMAGES_HELP = "image files, folders or globs"


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2 (a :class:`UsageError`)."""

    def error(self, message: str) -> None:  # one line, exit 2, instead of argparse's usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class IntermixedParser(Parser):
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


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, what it does, its own options, the function that runs it, examples.

    ``weights`` is the default of ``--weights`` for this command (``"none"``: architecture only),
    ``size`` what ``--size`` defaults to, as its help says it; ``intermixed``: positionals may follow options;
    ``check``: checks of its options that need no model, run before torch loads (raise :class:`UsageError`).
    """

    name: str
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    examples: str
    weights: str = "DEFAULT"
    size: str = "the model's own transform, 224 for ImageNet weights"
    intermixed: bool = False
    check: Callable[[argparse.Namespace], None] | None = None


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


def count_value(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers of at least ``minimum``."""

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


def stop_value(text: str) -> float:
    """An early-stopping tolerance: a fraction from 0 (off) to below 1."""
    try:
        value = float(text)
    except ValueError:
        raise _value_error(f"'{text}' is not a number") from None
    if not 0 <= value < 1:
        raise _value_error(f"{value} is not a fraction from 0 (no early stopping) to below 1, e.g. 0.01")
    return value


stop_value.__name__ = "fraction"


def count_or_all_value(minimum: int) -> Callable[[str], int | None]:
    """A parser of whole numbers of at least ``minimum``, or ``all`` (None)."""
    count = count_value(minimum)

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
    """``"i/n"``: scan shard i of n."""
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


class _Renamed(argparse.Action):
    """A spelling that was renamed: refused with one line naming the new ones (exact, so not an abbreviation)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise UsageError(
            f"{parser.prog}: --output is gone: -o/--out names the output folder, --output-key KEY "
            "the output of a model returning a dict"
        )


# ---------------------------------------------------------------- the options every command has


def common_options(parser: argparse.ArgumentParser, command: Command) -> None:
    """Add the options every command shares (model loading, seed, size, normalization, output control)."""
    weights = "none: the architecture only" if command.weights == "none" else command.weights
    parser.add_argument(
        "--weights",
        default=command.weights,
        help=f"torchvision weights: DEFAULT, an enum name or none (default {weights})",
    )
    parser.add_argument("--checkpoint", help="state dict to load into the model (default: none)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in --checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (default auto: CUDA, then MPS, then cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and optimization (default 0)")
    parser.add_argument("--size", type=count_value(1), help=f"input size in pixels (default: {command.size})")
    parser.add_argument(
        "--mean",
        type=mean_std_value,
        help="input normalization mean, 1 value (grayscale model) or 3 "
        "(default: the weights' own, else ImageNet's 0.485,0.456,0.406)",
    )
    parser.add_argument("--std", type=mean_std_value, help="input normalization std, as --mean (default: ImageNet's)")
    parser.add_argument(
        "--output-key",
        metavar="KEY",
        help="key of the model's output to explain when it returns a dict (default: 'logits', else 'out', "
        "else its only tensor)",
    )
    parser.add_argument("--output", action=_Renamed, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def check_mean_std(args: argparse.Namespace) -> None:
    """``--mean`` and ``--std`` come together, with as many values each (UsageError otherwise)."""
    if (args.mean is None) != (args.std is None) or (args.mean and len(args.mean) != len(args.std)):
        raise UsageError("pass --mean and --std together, with one value each (grayscale) or three (RGB)")
