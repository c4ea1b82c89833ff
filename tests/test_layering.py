"""The package's layers, read from the source of every module.

Each module sits on one layer; a module imports only from its own layer or the ones below it:

    base (errors, files, outputs, tokens, vocabulary, progress, _torch_internals, devices, memory)
    → plot (draws arrays; imports base only)
    → inputs, data, distributed, models
    → hooks, layers
    → engines
    → views
    → pages, explorer, integrations
    → cli, __main__ (imported by nothing in the package)

The modules are found by walking the package (``pkgutil``), so a new module is checked the day it
is added, and a module on no layer fails. Imports inside functions count; imports under
``if TYPE_CHECKING:`` count for cycles (a type-only circle is still a circle) but not for layers.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import fmapviz

PACKAGE = Path(fmapviz.__file__).parent

# module name prefix -> layer; the longest matching prefix wins
LAYERS = {
    "fmapviz.errors": 0,
    "fmapviz.files": 0,
    "fmapviz.outputs": 0,
    "fmapviz.tokens": 0,
    "fmapviz.vocabulary": 0,
    "fmapviz.progress": 0,
    "fmapviz._torch_internals": 0,
    "fmapviz.devices": 0,
    "fmapviz.memory": 0,
    "fmapviz.plot": 1,
    "fmapviz.inputs": 2,
    "fmapviz.data": 2,
    "fmapviz.distributed": 2,
    "fmapviz.models": 2,
    "fmapviz.model_input": 2,
    "fmapviz.hubs": 2,
    "fmapviz.hooks": 3,
    "fmapviz.layers": 3,
    "fmapviz.engines": 4,
    "fmapviz.views": 5,
    "fmapviz.pages": 6,
    "fmapviz.explorer": 6,
    "fmapviz.notebook": 6,
    "fmapviz.integrations": 6,
    "fmapviz.cli": 7,
    "fmapviz.__main__": 7,
}
MAX_LINES = 450


def layer_of(module: str) -> int | None:
    prefixes = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


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


def _runtime_nodes(tree: ast.AST, type_only: bool = False):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node, type_only)


def imports_of(name: str, path: Path, modules: dict[str, Path], type_only: bool = False) -> set[str]:
    """The package modules ``name`` imports at run time (``from . import x`` counts as importing ``x``);
    with ``type_only``, the imports under ``if TYPE_CHECKING:`` too."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text()), type_only):
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


@pytest.fixture(scope="module")
def graph_with_types() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules, type_only=True) for name, path in modules.items()}


def test_the_walk_finds_every_module_file(graph):
    files = {path for path in PACKAGE.rglob("*.py")}
    assert files == set(all_modules().values())
    assert {"fmapviz.views.maps", "fmapviz.plot.scan", "fmapviz.engines.actmax.objectives"} <= set(graph)


def test_every_module_sits_on_a_layer(graph):
    assert not [name for name in graph if name != "fmapviz" and layer_of(name) is None]


def test_lower_layers_never_import_higher_ones(graph):
    broken = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph.items()
        if name != "fmapviz"
        for target in targets
        if target != "fmapviz" and (layer_of(target) or 0) > (layer_of(name) or 0)
    ]
    assert not broken, broken


def test_only_entry_points_import_the_cli(graph):
    importers = {name for name, targets in graph.items() for target in targets if target.startswith("fmapviz.cli")}
    assert {name for name in importers if not name.startswith("fmapviz.cli")} <= {"fmapviz.__main__"}


def test_no_module_is_much_over_its_size(graph):
    modules = all_modules()
    long = {name: n for name in graph if (n := len(modules[name].read_text().splitlines())) > MAX_LINES}
    assert not long, long


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


def test_no_import_cycle_between_modules(graph_with_types):
    # the root package is the public facade: it imports everything, and `from . import __version__` is no cycle
    edges = {
        name: {t for t in targets if t != "fmapviz"} for name, targets in graph_with_types.items() if name != "fmapviz"
    }
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
    assert imports_of("fmapviz.engines.engine", engine, modules, type_only=True) == {
        "fmapviz.plot.figures",
        "fmapviz.views",
    }
    assert layer_of("fmapviz.engines.saliency.api") == 4 and layer_of("fmapviz.plot") == 1
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
