"""The plotting layer: tensors in, uint8 images and figures out. It draws and never runs a model.

* :mod:`.colors`: colormap LUTs, ``apply_colormap``, ``overlay`` (value ranges explained there);
* :mod:`.mosaic`: ``grid`` lays many tiles out as one array, ``save_png`` writes it once;
* :mod:`.figures`: ``Figure`` (``.image``, ``.save``, inline in Jupyter) and ``annotated_grid``;
* :mod:`.maps`: feature-map figures (channel mosaics, layer hierarchy, channel statistics).
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
