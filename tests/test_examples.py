"""The Python examples of the README and docs use names that exist: every ``fmapviz.…(...)`` call in a
code block resolves to a real function or class and passes keywords it takes.

The examples need real weights and minutes of work to run, so this reads them instead (the notebooks,
which do run, are in test_notebooks.py). A renamed function or argument fails here the day it changes.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap

import pytest
from conftest import ROOT

import fmapviz

BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(path.read_text())):
            blocks.append((f"{path.name}#{number}", textwrap.dedent(match.group(2))))
    return blocks


def fmapviz_calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) for every call of an attribute chain that starts at ``fmapviz``."""
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, target = [], node.func
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name) and target.id == "fmapviz" and parts:
            calls.append((".".join(["fmapviz", *reversed(parts)]), node))
    return calls


BLOCKS = code_blocks()


def test_the_documents_hold_python_examples():
    assert len(BLOCKS) >= 5 and any(name.startswith("README") for name, _ in BLOCKS)


@pytest.mark.parametrize("name, code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_every_fmapviz_call_in_an_example_names_a_real_function_and_its_keywords(name, code):
    calls = fmapviz_calls(ast.parse(code))
    for dotted, call in calls:
        target = fmapviz
        for attribute in dotted.split(".")[1:]:
            assert hasattr(target, attribute), f"{name}: {dotted} does not exist"
            target = getattr(target, attribute)
        positional = [None] * sum(not isinstance(arg, ast.Starred) for arg in call.args)
        keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg is not None}
        try:
            inspect.signature(target).bind_partial(*positional, **keywords)
        except TypeError as error:
            pytest.fail(f"{name}: {ast.unparse(call)[:100]} does not fit {dotted}{inspect.signature(target)}: {error}")


def test_the_checker_catches_a_renamed_keyword():
    (dotted, call), *_ = fmapviz_calls(ast.parse("fmapviz.show_hierarchy(maps, image, channels=6)"))
    assert dotted == "fmapviz.show_hierarchy"
    keywords = {keyword.arg: None for keyword in call.keywords}
    with pytest.raises(TypeError, match="channels"):
        inspect.signature(fmapviz.show_hierarchy).bind_partial(None, None, **keywords)
