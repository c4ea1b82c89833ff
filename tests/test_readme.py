"""The README stays true: its counts match the code, its pictures and links exist, its Python example runs.

The README is the PyPI page and the source of the command CI runs, so a new saliency method or subcommand,
a moved picture or a renamed document fails here, not on a reader.
"""

from __future__ import annotations

import argparse
import os
import re
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

from conftest import ROOT, real_weights

README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def blocks(language: str) -> list[str]:
    return [textwrap.dedent(code) for lang, code in FENCE.findall(TEXT) if lang == language]


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    return TEXT.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def subcommands() -> list[str]:
    from fmapviz.cli import build_parser

    (choices,) = [
        action.choices for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    return list(choices)


def local_links(text: str) -> list[str]:
    """Every image and link target of a Markdown text that is a path (no URL, no bare ``#anchor``)."""
    targets = [first or second for first, second in LINK.findall(text)]
    return [target for target in targets if not urlsplit(target).scheme and not target.startswith("#")]


def test_the_first_block_is_the_set_up_and_the_test_command_ci_runs():
    first = FENCE.search(TEXT)
    assert first.start() < TEXT.index("\n## "), "the set-up commands come before the first section"
    assert re.search(r"^make demo\b", first.group(2), re.M) and re.search(r"^make test\b", first.group(2), re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M), "CI runs the README's make test"


def test_every_count_in_the_readme_matches_the_code():
    from fmapviz.engines.saliency import METHODS

    truth = {"saliency methods": len(METHODS), "subcommands": len(subcommands())}
    counted = [
        (int(n), phrase) for n, phrase in re.findall(r"\b(\d+) ((?:\w+ )?(?:methods|subcommands|commands))\b", TEXT)
    ]
    assert {phrase for _, phrase in counted} == set(truth), f"counts this test does not check: {counted}"
    wrong = [f"README says {n} {phrase}, the code has {truth[phrase]}" for n, phrase in counted if n != truth[phrase]]
    assert not wrong, wrong


def test_the_command_table_has_one_row_per_subcommand():
    rows = re.findall(r"^\| `fmapviz (\w+)", section("Command line"), re.M)
    assert rows == subcommands()


def test_every_picture_and_local_link_exists():
    targets = local_links(TEXT)
    missing = [target for target in targets if not (ROOT / urlsplit(target).path).exists()]
    assert len(targets) >= 15 and not missing, f"README.md names files that do not exist: {missing}"


def test_the_link_finder_sees_pictures_links_and_html_images():
    text = '![a](assets/a.png) [b](docs/b.md#part) [c](https://example.org) [d](#anchor) <img src="e.png">'
    assert local_links(text) == ["assets/a.png", "docs/b.md#part", "e.png"]


def test_the_methods_page_names_every_saliency_method():
    from fmapviz.engines.saliency import METHODS

    page = (ROOT / "docs" / "saliency_methods.md").read_text(encoding="utf-8")
    missing = [name for name in METHODS if f"`{name}`" not in page]
    assert not missing, f"docs/saliency_methods.md does not name: {missing}"


@real_weights
def test_the_python_example_runs(tmp_path, monkeypatch):
    (code,) = blocks("python")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    written = re.findall(r'\.save\("([^"]+)"\)', code)
    assert written and all(Path(name).stat().st_size > 1000 for name in written), os.listdir(tmp_path)
