"""``.. fmapviz-cli::``: the command-line reference, generated from ``fmapviz.cli.build_parser()``.

A renamed flag, a new subcommand or a changed help text changes the page; nothing is copied by hand.
Help texts are shown exactly as written: never read as markup, no URL in them made a link.
"""

from __future__ import annotations

import argparse
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _plain(text: str) -> str:
    """``text`` as reStructuredText that shows it as written: every mark is escaped, so help text is never
    read as markup (``*``, backquotes) and no URL in it (``file://``) becomes a link."""
    return re.sub(r"([^\w\s])", r"\\\1", text)


def _literal(text: str, indent: str = "   ") -> list[str]:
    return ["::", ""] + [indent + line if line.strip() else "" for line in text.rstrip().splitlines()] + [""]


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "", "   * - argument", "     - meaning"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            if action.nargs in ("+", "*"):
                value += " …"
            name = ", ".join(f"``{option}{value}``" for option in action.option_strings)
        else:
            name = f"``{action.metavar or action.dest}``" + (" …" if action.nargs in ("+", "*") else "")
        meaning = _plain(action.help or "")
        if action.required and action.option_strings:
            meaning += " (required)"
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            meaning += " Choices: " + ", ".join(f"``{choice}``" for choice in action.choices) + "."
        rows += [f"   * - {name}", f"     - {meaning or ' '}"]
    return rows + [""]


class FmapvizCli(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        from fmapviz.cli import build_parser

        parser = build_parser()
        lines = [_plain(parser.description or ""), ""]
        lines += _literal(parser.format_usage().replace("usage: ", ""))
        for name, sub in _subcommands(parser).items():
            anchor = f"cli-{name}"
            lines += [f".. _{anchor}:", "", f"fmapviz {name}", "-" * (len(name) + 8), ""]
            lines += [_plain(sub.description or ""), ""]
            lines += _literal(sub.format_usage().replace("usage: ", ""))
            lines += _option_rows(sub)
            if sub.epilog:
                lines += ["**Examples**", ""] + _literal(sub.epilog.split(":", 1)[-1].strip("\n"))
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="fmapviz.cli.build_parser()"), container)
        return container.children


def setup(app):
    app.add_directive("fmapviz-cli", FmapvizCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
