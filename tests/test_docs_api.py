"""The documentation covers the public API, and every public name's example runs.

Public names are ``fmapviz.__all__``, with each module in it (``fmapviz.evaluate``, ``fmapviz.objectives``)
``fmapviz.objectives``) expanded into its own public names. A public name fails here when the API
reference (``docs/reference/*.rst``) has no entry for it or its docstring shows no ``>>>`` example; a
reference entry fails when it names nothing importable, so a rename makes a stale page fail in
``make test``, before ``make docs``. The examples run with the real mobilenet_v2 weights in a
namespace of the names the docstrings use (``loaded``, ``model``, ``image``, ``x``, ``maps``) on top of
their own module's names, as ``--doctest-modules`` would give them.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import re
import sys
import types

import pytest
import torch
from conftest import ROOT, real_weights

import fmapviz

REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^\.\. (currentmodule|autofunction|autoclass|autodata|automodule)::\s*(\S+)", re.MULTILINE)


def public_api() -> dict[str, object]:
    """Qualified name -> object for every public name a user can reach from ``import fmapviz``."""
    names = {}
    for name in fmapviz.__all__:
        value = getattr(fmapviz, name)
        if not isinstance(value, types.ModuleType):
            names[f"fmapviz.{name}"] = value
            continue
        members = getattr(value, "__all__", None) or [
            member
            for member, item in vars(value).items()
            if not member.startswith("_")
            and (inspect.isfunction(item) or inspect.isclass(item))
            and item.__module__ == value.__name__
        ]
        names.update({f"fmapviz.{name}.{member}": getattr(value, member) for member in members})
    return names


def resolve(target: str, current: str | None) -> object:
    """Import what a reference directive names, the way autodoc does (module prefix, then attributes)."""
    if current and not target.startswith("fmapviz"):
        return getattr(importlib.import_module(current), target)
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(target)


def reference_entries() -> list[tuple[str, str, object]]:
    """(page, directive target, object or the exception raised while importing it)."""
    entries = []
    for page in sorted(REFERENCE.glob("*.rst")):
        current = None
        for kind, target in DIRECTIVE.findall(page.read_text()):
            if kind == "currentmodule":
                current = target
                continue
            try:
                entries.append((page.name, target, resolve(target, current)))
            except (ImportError, AttributeError) as error:
                entries.append((page.name, target, error))
    return entries


def documented_objects() -> list[object]:
    documented = []
    for _, _, value in reference_entries():
        documented.append(value)
        if isinstance(value, types.ModuleType):  # automodule pages list the module's public members
            documented += [getattr(value, name) for name in getattr(value, "__all__", dir(value))]
    return documented


def test_every_reference_entry_names_something_that_exists():
    stale = [
        f"{page}: {target} ({error})" for page, target, error in reference_entries() if isinstance(error, Exception)
    ]
    assert not stale, "reference entries naming nothing (renamed or removed?):\n" + "\n".join(stale)


def test_every_reference_page_links_to_a_concept_page():
    pages = [page for page in REFERENCE.glob("*.rst") if page.name != "index.rst"]
    lonely = [page.name for page in pages if ":doc:`/concepts/" not in page.read_text()]
    assert len(pages) >= 10 and not lonely, f"reference pages without a link to docs/concepts/: {lonely}"


def test_every_public_name_has_a_reference_entry():
    documented = documented_objects()
    missing = [name for name, value in public_api().items() if not any(value is entry for entry in documented)]
    assert not missing, "public names missing from docs/reference/*.rst:\n" + "\n".join(missing)


def test_every_public_name_shows_an_example():
    missing = [name for name, value in public_api().items() if ">>>" not in (inspect.getdoc(value) or "")]
    assert not missing, "public names whose docstring has no >>> example:\n" + "\n".join(missing)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory, mobilenet):
    """What the docstring examples may use, in a scratch folder with ``assets/`` and ``photos/`` (3 images)."""
    import torchvision
    from torch import nn

    folder = tmp_path_factory.mktemp("docstrings")
    (folder / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    (folder / "photos").mkdir()  # the folder of images the examples call "photos/"
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        (folder / "photos" / name).symlink_to(ROOT / "assets" / name)
    image = fmapviz.load_image(ROOT / "assets" / "chelsea.png", mobilenet.transform)
    maps = fmapviz.feature_maps(mobilenet.model, image.tensor, ["features.1", "features.7", "features.14"])
    names = dict(fmapviz=fmapviz, torch=torch, torchvision=torchvision, nn=nn, loaded=mobilenet)
    names.update(model=mobilenet.model, image=image, x=image.tensor, maps=maps)
    return folder, names


@real_weights
@pytest.mark.real_weights
@pytest.mark.parametrize("name", sorted(public_api()))
def test_docstring_example_runs(name, namespace, monkeypatch):
    folder, names = namespace
    monkeypatch.chdir(folder)
    value = public_api()[name]
    home = vars(sys.modules[value.__module__])  # like --doctest-modules: the defining module's names, then ours
    tests = doctest.DocTestFinder(recurse=False).find(value, name, globs={**home, **names})
    examples = [test for test in tests if test.examples]
    if not examples:
        pytest.skip(f"{name} has no example (test_every_public_name_shows_an_example reports it)")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    report = []
    torch.manual_seed(0)
    for test in examples:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert os.getcwd() == str(folder)
