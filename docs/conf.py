"""Sphinx configuration: `make docs` builds docs/_build/html offline, warnings as errors.

What is generated at build time (nothing generated is committed):
- the API reference from the docstrings (autodoc, reference/*.rst list what goes where),
- the CLI reference from ``fmapviz.cli.build_parser()`` (``_ext/fmapviz_cli.py``),
- the gallery, by running ``examples/*.py`` (sphinx-gallery, figures and timings),
- the concept pages, by running their code cells (myst-nb),
- ``notebooks/*.ipynb``, executed into ``docs/notebooks/`` (``_ext/fmapviz_notebooks.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("TORCH_HOME", str(ROOT.parent / "shared" / "torch-home"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "fmapviz"
author = "the fmapviz authors"
copyright = "the fmapviz authors, MIT license"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.autosummary",
    "myst_nb",
    "sphinx_gallery.gen_gallery",
    "fmapviz_cli",
    "fmapviz_notebooks",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py"]
# the live widget view needs a running kernel, and its page would load ipywidgets from a CDN: tests run it
exclude_patterns += ["notebooks/interact.ipynb"]
suppress_warnings = ["config.cache"]  # sphinx-gallery's callables in the config cannot be pickled

html_theme = "furo"
html_title = "fmapviz"
html_static_path: list[str] = []
html_show_sourcelink = False

# Reference: docstrings are Google style (Args/Returns/Raises/Example).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Concept pages (MyST markdown with code cells) run at build time; notebooks arrive already executed.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_excludepatterns = ["notebooks/*"]  # executed by _ext/fmapviz_notebooks.py
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # progress bars and kernel warnings
nb_render_image_options = {"width": "100%"}

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/",  # run every example
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 0,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib", "fmapviz_gallery.scraper"),
    "reset_modules": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "show_signature": False,
    "plot_gallery": "True",
    "write_computation_times": False,  # its summary page loads jQuery from a CDN; each example shows its own time
}
