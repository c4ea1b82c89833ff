"""The ``fmapviz`` command: argparse subcommands over the public API, nothing else.

``main(argv) -> int`` returns 0 on success, 1 on a runtime error, 2 on a usage error (an option's value, a
``--device`` this machine lacks, weights not on disk offline: :attr:`fmapviz.errors.FmapvizError.exit_code`).
Errors are one line on stderr; ``--debug`` shows the traceback. Output files that exist
are never overwritten without ``--force``. Each subcommand lives in its own module (its
options, the function that runs it and its :class:`~fmapviz.cli.options.Command` entry);
:data:`COMMANDS` lists them in the order ``fmapviz --help`` shows them.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import FmapvizError
from ..progress import interrupts_are_kept
from . import actmax, channel, compare, explore, init, layers, maps, report, saliency, scan
from .options import Command, IntermixedParser, Parser, UsageError, check_mean_std, common_options

COMMANDS: dict[str, Command] = {
    module.COMMAND.name: module.COMMAND
    for module in (layers, maps, saliency, actmax, report, scan, channel, explore, compare, init)
}
"""Every subcommand by name."""


def build_parser() -> Parser:
    """The argument parser of every subcommand in :data:`COMMANDS` (exposed for tests and docs)."""
    parser = Parser(prog="fmapviz", description="See what a convolutional network sees.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog="examples:\n  " + command.examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.intermixed:
            sub.__class__ = IntermixedParser
        command.options(sub)
        common_options(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fmapviz command line; returns the exit code.

    Everything that can be checked without a model (option values, ``--shard``, ``--channels``)
    is checked before torch is imported: ``--help`` and usage errors answer at once.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if saliency.lists_methods(argv):
        return saliency.print_methods()
    try:
        args = build_parser().parse_args(argv)
        _check_early(args)
    except UsageError as error:
        print(f"error: {_capped(str(error))}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(), interrupts_are_kept():
            warnings.showwarning = _one_line_warning
            _check_device(args)
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
        return error.exit_code if isinstance(error, FmapvizError) else 1  # 2: a device or weights to change


def _check_early(args: argparse.Namespace) -> None:
    """Checks across options that need no model, before torch loads (UsageError, exit 2)."""
    check_mean_std(args)
    command = COMMANDS[args.command]
    if command.check is not None:
        command.check(args)


def _check_device(args: argparse.Namespace) -> None:
    """A ``--device`` this machine lacks fails before the command creates its output folder (DeviceError, exit 2)."""
    if getattr(args, "device", None) is not None:
        from ..devices import resolve_device

        resolve_device(args.device)


def _capped(message: str, limit: int = 300) -> str:
    """One error line of about ``limit`` characters (an echoed 5000-channel list is not read by anyone).

    A path or URL the cut would fall in is kept whole: it is what the line exists to show.
    """
    if len(message) <= limit:
        return message
    end = limit - 1
    start = message.rfind(" ", 0, end) + 1
    stop = message.find(" ", end)
    stop = len(message) if stop < 0 else stop
    if "/" in message[start:stop] or "\\" in message[start:stop]:
        end = max(end, min(stop, start + 400))
    return message if end >= len(message) else f"{message[:end]}… ({len(message)} characters; --debug)"


def _one_line_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {_capped(str(message))}", file=sys.stderr)
