"""import fmapviz: lazy (no torch until a name is used), a short __all__, functions not shadowed by submodules."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

import fmapviz

PROBE = """
import sys
import fmapviz, fmapviz.vocabulary
print("torch" in sys.modules, end=" ")
fmapviz.Unit("features.10", 17)
print("torch" in sys.modules, end=" ")
fmapviz.load_image
print("torch" in sys.modules)
"""


def test_import_fmapviz_and_vocabulary_do_not_import_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["False", "False", "True"]


def test_every_view_is_public_and_listing_them_imports_no_torch():
    probe = "import sys, fmapviz; names = fmapviz.__all__, dir(fmapviz); print('torch' in sys.modules, *names[0])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    imported, *names = run.stdout.split()
    import fmapviz.views

    assert imported == "False"
    assert names == fmapviz.__all__ and len(fmapviz.views.__all__) >= 16
    assert [name for name in names if name.startswith("show_")] == fmapviz.views.__all__
    assert all(getattr(fmapviz, name) is getattr(fmapviz.views, name) for name in fmapviz.views.__all__)


def test_every_name_in_all_resolves():
    assert len(set(fmapviz.__all__)) == len(fmapviz.__all__)
    for name in [*fmapviz.__all__, "ScanResult", "LoadedModel", "LoadedImage", "FmapvizError", "evaluate"]:
        assert getattr(fmapviz, name) is not None, name
    assert {"load_model", "load_image", "capture", "feature_maps", "saliency", "maximize", "report", "scan"} <= set(
        fmapviz.__all__
    )


def test_no_public_function_shadows_a_submodule():
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(fmapviz.__path__)}
    functions = {name for name in fmapviz.__all__ if callable(getattr(fmapviz, name))}
    assert not functions & submodules, functions & submodules
    assert callable(fmapviz.capture) and callable(fmapviz.report) and callable(fmapviz.scan)
    assert fmapviz.evaluate.__name__ == "fmapviz.engines.evaluate" and callable(fmapviz.evaluate.deletion)


def test_unknown_name_says_so():
    try:
        fmapviz.show_everything  # noqa: B018
    except AttributeError as error:
        assert "show_everything" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_no_private_torchvision_imports_in_the_package():
    sources = [path.read_text() for path in (ROOT / "fmapviz").rglob("*.py")]
    assert not [text for text in sources if "transforms._presets" in text]
