"""The package's layers, read from the source of every module: capture → engines → views → report / CLI.

The modules are found by walking the package (``pkgutil``), so a new module is checked the day it
is added. Imports under ``if TYPE_CHECKING:`` are annotations only and do not count; imports inside
functions do.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import fmapviz

PACKAGE = Path(fmapviz.__file__).parent

# (modules whose name starts with ..., what they must never import)
RULES = [
    (
        "fmapviz.hooks",
        ("fmapviz.engines", "fmapviz.plot", "fmapviz.views", "fmapviz.pages", "fmapviz.explorer", "fmapviz.cli"),
    ),
    ("fmapviz.engines", ("fmapviz.plot", "fmapviz.views", "fmapviz.pages", "fmapviz.explorer", "fmapviz.cli")),
    (
        "fmapviz.plot",
        (
            "fmapviz.hooks",
            "fmapviz.engines",
            "fmapviz.models",
            "fmapviz.views",
            "fmapviz.pages",
            "fmapviz.explorer",
            "fmapviz.cli",
        ),
    ),
    ("fmapviz.views", ("fmapviz.pages", "fmapviz.explorer", "fmapviz.cli")),
    ("fmapviz.pages", ("fmapviz.cli",)),
    ("fmapviz.explorer", ("fmapviz.cli",)),
]


def all_modules() -> dict[str, Path]:
    """Every module of the package: dotted name → source file, found by walking the folders."""
    modules = {"fmapviz": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="fmapviz."):
        spec = info.module_finder.find_spec(info.name, None)  # type: ignore[call-arg]
        modules[info.name] = Path(spec.origin)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports at run time (``from . import x`` counts as importing ``x``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fmapviz")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fmapviz"):
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {module for module in found if module in modules and module != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_walk_finds_every_module_file(graph):
    files = {path for path in PACKAGE.rglob("*.py")}
    assert files == set(all_modules().values())
    assert {"fmapviz.views.maps", "fmapviz.plot.scan", "fmapviz.engines.actmax.objectives"} <= set(graph)


@pytest.mark.parametrize("layer, forbidden", RULES, ids=[rule[0] for rule in RULES])
def test_lower_layers_never_import_higher_ones(graph, layer, forbidden):
    broken = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name == layer or name.startswith(layer + ".")
        for target in targets
        if target.startswith(forbidden)
    ]
    assert not broken, broken


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles found by a depth-first walk, each as a path that returns to its start."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_between_modules(graph):
    # the root package is the public facade: it imports everything, and `from . import __version__` is no cycle
    edges = {name: {t for t in targets if t != "fmapviz"} for name, targets in graph.items() if name != "fmapviz"}
    cycles = find_cycles(edges)
    assert not cycles, " ; ".join(" → ".join(cycle) for cycle in cycles)


def test_the_checker_sees_a_forbidden_import_and_a_cycle(tmp_path):
    engine = tmp_path / "engine.py"
    engine.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..views import x\n"
        "def f():\n    from ..plot import figures\n"
    )
    modules = {"fmapviz.engines.engine": engine, "fmapviz.plot.figures": engine, "fmapviz.views": engine}
    assert imports_of("fmapviz.engines.engine", engine, modules) == {"fmapviz.plot.figures"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
