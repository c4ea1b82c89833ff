"""Execute ``notebooks/*.ipynb`` into ``docs/notebooks/`` before reading, so the site shows their figures.

The notebooks are stored without outputs; each build runs them from scratch in a temporary copy of
the repository layout (``assets/`` beside ``notebooks/``), so what the site shows is what the
current code draws. A cell that raises fails the build.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)


def execute_notebooks(app) -> None:
    if not app.config.fmapviz_execute_notebooks:  # sphinx-build -D fmapviz_execute_notebooks=0: keep the last run's
        return
    import nbformat
    from nbclient import NotebookClient

    root = Path(app.srcdir).parent
    target = Path(app.srcdir) / "notebooks"
    target.mkdir(exist_ok=True)
    sources = sorted((root / "notebooks").glob("*.ipynb"))
    with tempfile.TemporaryDirectory(prefix="fmapviz-docs-") as tmp:
        shutil.copytree(root / "assets", Path(tmp) / "assets", ignore=shutil.ignore_patterns("figures"))
        workdir = Path(tmp) / "notebooks"
        workdir.mkdir()
        for source in sources:
            start = time.perf_counter()
            notebook = nbformat.read(source, as_version=4)
            client = NotebookClient(
                notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}
            )
            client.execute()
            nbformat.write(notebook, target / source.name)
            logger.info(f"executed notebooks/{source.name} in {time.perf_counter() - start:.1f} s")
    for stale in set(target.glob("*.ipynb")) - {target / source.name for source in sources}:
        stale.unlink()


def setup(app):
    app.add_config_value("fmapviz_execute_notebooks", True, "env", bool)
    app.connect("builder-inited", execute_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
