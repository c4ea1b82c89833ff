"""The plotting layer: drawing primitives, tensors and arrays in, uint8 images and figures out.

It draws and never runs a model or imports an engine; the public ``show_*`` functions, which
read engine results, are in :mod:`fmapviz.views` (tests/test_layering.py keeps it so).

* :mod:`.colors`: colormap LUTs, ``apply_colormap``, ``overlay`` (value ranges explained there);
* :mod:`.mosaic`: ``grid`` lays many tiles out as one array, ``save_png`` writes it once;
* :mod:`.figures`: ``Figure`` (``.image``, ``.save``, inline in Jupyter), ``annotated_grid``
  (captions wrapped to their tile, ``width_pixels=`` to fill a page);
* :mod:`.maps`: channel mosaics, photo overlays, channel-health panels;
* :mod:`.saliency`: a saliency map over a photo; :mod:`.scan`: a channel's page;
* :mod:`.page`: a report page's header and the stacking of panels;
* :mod:`.charts`: heatmaps, curves, paired bars, histogram grids; :mod:`.concepts`: concept maps.
"""

from .colors import apply_colormap, colormap_lut, overlay, to_uint8_image
from .figures import Figure, annotated_grid
from .mosaic import cell_origin, grid, indexed_mosaic, save_png

__all__ = [
    "Figure",
    "annotated_grid",
    "apply_colormap",
    "cell_origin",
    "colormap_lut",
    "grid",
    "indexed_mosaic",
    "overlay",
    "save_png",
    "to_uint8_image",
]
