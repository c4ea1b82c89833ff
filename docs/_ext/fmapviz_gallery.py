"""sphinx-gallery scraper for fmapviz figures.

An example shows a figure by keeping it in a variable: after each code block, every
``fmapviz.plot.Figure`` bound in the example's globals that was not shown before is saved
as a PNG beside the page and placed under the block.
"""

from __future__ import annotations

from typing import Any

from sphinx_gallery.scrapers import figure_rst

_shown: dict[str, set[int]] = {}


def scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any], **kwargs: Any) -> str:
    from fmapviz.plot import Figure

    shown = _shown.setdefault(str(block_vars["src_file"]), set())
    figures = [value for value in block_vars["example_globals"].values() if isinstance(value, Figure)]
    new = [figure for figure in figures if id(figure) not in shown]
    paths = []
    for figure, path in zip(new, block_vars["image_path_iterator"]):
        figure.save(path)
        shown.add(id(figure))
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
