"""CONTRIBUTING.md stays true: every ``fmapviz/...`` path it names exists, and its map names every
top-level module and package of ``fmapviz/``, so a moved or a new module changes the map the same day."""

from __future__ import annotations

import re

from conftest import ROOT

PACKAGE = ROOT / "fmapviz"
TEXT = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")


def named_paths(text: str) -> list[str]:
    """Every ``fmapviz/...`` path in ``text`` (``<placeholders>`` and the paths they start excluded)."""
    tokens = re.findall(r"(?<![\w/.])fmapviz/[^\s`'\"()|,;]*", text)
    return sorted({token.rstrip(".:") for token in tokens if "<" not in token})


def test_every_path_in_contributing_exists():
    paths = named_paths(TEXT)
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert len(paths) >= 30 and not missing, f"CONTRIBUTING.md names paths that do not exist: {missing}"


def test_the_map_names_every_top_level_module():
    modules = [
        path.name
        for path in PACKAGE.iterdir()
        if not path.name.startswith("__") and (path.suffix == ".py" or (path / "__init__.py").is_file())
    ]
    named = {path.split("/")[1] for path in named_paths(TEXT)}
    missing = sorted(name for name in modules if name not in named and name.removesuffix(".py") not in named)
    assert not missing, f"CONTRIBUTING.md does not say what these are for: {missing}"


def test_the_path_finder_reads_paths_not_placeholders():
    text = "in `fmapviz/views/` and fmapviz/cli/options.py. A `fmapviz/cli/<command>.py`; fmapviz.views"
    assert named_paths(text) == ["fmapviz/cli/options.py", "fmapviz/views/"]
