"""Figure: one wrapper for matplotlib figures and plain images, shown inline in Jupyter and saved with ``.save``.

Annotated grids are drawn with ONE ``imshow`` of a mosaic plus text labels, never one
subplot per tile, so hundreds of tiles stay fast.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .colors import ArrayLike, colormap_lut
from .mosaic import as_tiles, cell_origin, grid, grid_shape, save_png

DPI = 100


class Figure:
    """A drawn figure: a matplotlib ``Figure`` or a plain uint8 image (PIL image or array).

    ``.image`` gives the pixels as uint8 (H,W,3), ``.save(path)`` writes PNG (or any format
    matplotlib or PIL knows), and Jupyter shows it inline through ``_repr_png_``.

    Example:
        >>> figure = fmapviz.show_maps(maps["layer4"])
        >>> figure.save("layer4.png").stat().st_size > 0
        True
    """

    def __init__(self, source: Any) -> None:
        from PIL import Image

        self._pil = None
        if isinstance(source, Image.Image):  # kept as is (palette images stay small); pixels made on demand
            self.matplotlib, self._image, self._pil = None, None, source
        elif isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (2, 3):
                raise ValueError(
                    f"A Figure image must be a uint8 (H,W) or (H,W,3) array, got {source.dtype} {source.shape}."
                )
            self.matplotlib = None
            self._image = source
        elif hasattr(source, "savefig") and hasattr(source, "canvas"):
            self.matplotlib = source
            self._image = None
        else:
            raise TypeError(
                f"Figure wraps a matplotlib Figure, a PIL image or a uint8 array, not {type(source).__name__}."
            )

    @property
    def image(self) -> np.ndarray:
        """The rendered pixels, uint8 (H,W,3) (or (H,W) for a gray image)."""
        if self._image is None and self._pil is not None:
            self._image = np.asarray(self._pil.convert("RGB"))
        if self._image is None:
            canvas = self.matplotlib.canvas
            canvas.draw()
            self._image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.image.shape[:2]

    def save(self, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
        """Write the figure; PNG goes through PIL at fast compression, other formats through matplotlib.

        Returns:
            The path written; parent folders are created.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.matplotlib is not None and (path.suffix.lower() != ".png" or savefig_kwargs):
            self.matplotlib.savefig(path, dpi=self.matplotlib.dpi, **savefig_kwargs)
            return path
        if path.suffix.lower() == ".png" and self._pil is not None:
            self._pil.save(path, compress_level=1)
            return path
        if path.suffix.lower() == ".png":
            return save_png(self.image, path)
        from PIL import Image

        Image.fromarray(self.image).save(path)
        return path

    def _repr_png_(self) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.image).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()

    def close(self) -> None:
        """Free the matplotlib figure (the pixels stay available)."""
        if self.matplotlib is not None:
            _ = self.image
            self.matplotlib = None

    def __repr__(self) -> str:
        kind = "matplotlib" if self.matplotlib is not None else "image"
        height, width = self.size
        return f"Figure({kind}, {width}×{height} px)"


def new_figure(width_inches: float, height_inches: float) -> Any:
    """A matplotlib figure with an Agg canvas, outside pyplot (no global figure registry, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MatplotlibFigure

    figure = MatplotlibFigure(figsize=(width_inches, height_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def annotated_grid(
    images: ArrayLike,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    padding: int = 2,
    pad_value: int = 255,
    cmap: str | object | None = None,
    colorbar: tuple[float, float] | None = None,
    colorbar_label: str = "",
    colorbar_cmap: str | object | None = None,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    tile_pixels: int = 72,
    font_size: float = 8.0,
    width_pixels: int | None = None,
) -> Figure:
    """Draw images in a grid with a title over each: one ``imshow`` and text labels.

    Captions wider than their tile are wrapped (at most three lines, then cut with "…"), so a
    caption never runs into its neighbour's; a title wider than the figure wraps too.

    Args:
        images: (N,H,W) or (N,C,H,W) tiles, floats in [0,1] or uint8 (see :func:`mosaic.grid`).
        titles: one caption per tile, drawn in a band above it.
        ncols: columns; default near-square.
        padding, pad_value: space between tiles and its gray level.
        cmap: colormap for one-channel tiles.
        colorbar: (vmin, vmax): draw a colour bar for ``cmap`` labelled with this real value range.
        colorbar_label: text beside the colour bar.
        colorbar_cmap: colormap of the colour bar when the tiles are already coloured (default ``cmap``).
        title: figure title.
        row_labels: text left of each row (e.g. layer names), may hold newlines.
        tile_pixels: on-screen tile width to aim for; smaller tiles are magnified by a whole factor (nearest).
        font_size: caption size in points.
        width_pixels: make the whole figure this wide instead: tiles are resized to fill it (a whole
            factor by nearest, otherwise smoothly, for pictures), overriding ``tile_pixels``.

    Returns:
        A :class:`Figure` wrapping the matplotlib figure.

    Raises:
        ValueError: titles or row_labels of the wrong length, bad tile shape.

    Example:
        >>> annotated_grid(torch.rand(8, 3, 64, 64), [f"image {i}" for i in range(8)], ncols=4).save("g.png")
    """
    tiles = as_tiles(images, "images")
    count, height, width = tiles.shape[:3]
    rows, columns = grid_shape(count, ncols)
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles has {len(titles)} entries for {count} images; pass one title per image.")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels has {len(row_labels)} entries for {rows} rows; pass one label per row.")
    left, right, top, bottom = _margins(row_labels, title, colorbar, colorbar_label, font_size)
    if width_pixels is not None:
        tiles = _resize_tiles(tiles, _tile_width(width_pixels, columns, padding, left + right))
        height, width = tiles.shape[1:3]
    magnify = max(1, round(tile_pixels / width)) if width_pixels is None else 1
    if magnify > 1:
        tiles = tiles.repeat(magnify, axis=1).repeat(magnify, axis=2)
        height, width = height * magnify, width * magnify
    scale = 1.0
    font_pixels = font_size * DPI / 72.0
    if titles is not None:
        titles = [fit_caption(str(text), width, font_size) for text in titles]
    lines = max((str(text).count("\n") + 1 for text in titles or []), default=1)
    band = math.ceil(font_pixels * (1.25 * lines + 0.35)) if titles is not None else 0
    if cmap is not None and tiles.shape[3] == 1:
        tiles = colormap_lut(cmap)[tiles[..., 0]]
    if band:
        tiles = np.pad(tiles, ((0, 0), (band, 0), (0, 0), (0, 0)), constant_values=pad_value)
    mosaic = grid(tiles, columns, padding, pad_value)
    mosaic_h, mosaic_w = mosaic.shape[:2]
    image_w, image_h = mosaic_w * scale / DPI, mosaic_h * scale / DPI
    title_size = font_size * 1.4
    if title:  # a title wider than the figure wraps (and shrinks) instead of running off both edges or being cut
        title, title_size = fit_title(title, (left + image_w + right) * DPI - 10, font_size)
        top = 0.1 + title_size / 72.0 * (1.2 * (title.count("\n") + 1) + 1.0)
    fig_w, fig_h = left + image_w + right, bottom + image_h + top
    figure = new_figure(fig_w, fig_h)
    axes = figure.add_axes((left / fig_w, bottom / fig_h, image_w / fig_w, image_h / fig_h))
    axes.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    axes.set_axis_off()
    if titles is not None:
        for index, text in enumerate(titles):
            top_px, left_px = cell_origin(index, (height + band, width), columns, padding)
            axes.text(
                left_px + width / 2 - 0.5,
                top_px + band / 2 - 0.5,
                text,
                ha="center",
                va="center",
                fontsize=font_size,
                clip_on=False,
            )
    if row_labels is not None:
        for row, text in enumerate(row_labels):
            top_px, _ = cell_origin(row * columns, (height + band, width), columns, padding)
            axes.text(
                -padding * 2,
                top_px + (height + band) / 2,
                text,
                ha="right",
                va="center",
                fontsize=font_size,
                clip_on=False,
            )
    if title:
        figure.suptitle(title, fontsize=title_size, y=1 - 0.05 / fig_h, va="top")
    if colorbar is not None:
        draw_colorbar(
            figure,
            colorbar_cmap or cmap or "gray",
            colorbar,
            colorbar_label,
            font_size,
            ((left + image_w + 0.15) / fig_w, bottom / fig_h, 0.15 / fig_w, image_h / fig_h),
        )
    return Figure(figure)


def _margins(
    row_labels: Sequence[str] | None,
    title: str | None,
    colorbar: tuple[float, float] | None,
    colorbar_label: str,
    font_size: float,
) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) inches around an annotated grid's mosaic: row labels, colour bar, title."""
    text_inches = font_size / 72.0
    longest = max((len(line) for label in row_labels or [] for line in label.split("\n")), default=0)
    left = 0.1 + (0.6 * longest * text_inches if row_labels else 0.0)
    right = 0.1 + (0.9 + 0.6 * text_inches * (len(colorbar_label) > 0) * 2 if colorbar is not None else 0.0)
    top = 0.1 + (2.2 * text_inches * 1.4 if title else 0.0)
    return left, right, top, 0.1


def _tile_width(width_pixels: int, columns: int, padding: int, margin_inches: float) -> int:
    room = width_pixels - round(margin_inches * DPI) - padding * (columns + 1)
    if room < columns:
        raise ValueError(f"width_pixels={width_pixels} leaves no room for {columns} columns; make it wider.")
    return room // columns


def fit_tile_pixels(
    width_pixels: int,
    columns: int,
    *,
    padding: int = 2,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    colorbar: tuple[float, float] | None = None,
    colorbar_label: str = "",
    font_size: float = 8.0,
) -> int:
    """The tile width that makes an :func:`annotated_grid` with these annotations ``width_pixels`` wide.

    Example:
        >>> fit_tile_pixels(1400, 7, row_labels=["features.13\n96×14×14"])
        184
    """
    margins = _margins(row_labels, title, colorbar, colorbar_label, font_size)
    return _tile_width(width_pixels, columns, padding, margins[0] + margins[1])


def fit_caption(text: str, width_pixels: float, font_size: float, max_lines: int = 3) -> str:
    """``text`` wrapped to lines that fit ``width_pixels`` at ``font_size`` points; cut with "…" past ``max_lines``.

    Example:
        >>> fit_caption("German short-haired pointer  88.2", 128, 8)
        'German short-\nhaired pointer\n88.2'
    """
    import textwrap

    per_line = max(4, int(width_pixels / (0.62 * font_size * DPI / 72.0)))
    wrapped = [
        [piece if len(piece) <= per_line else piece[: per_line - 1] + "…" for piece in pieces] or [""]
        for pieces in (textwrap.wrap(line, per_line, break_long_words=False) for line in text.split("\n"))
    ]
    while sum(len(pieces) for pieces in wrapped) > max(max_lines, len(wrapped)):
        longest = max(wrapped, key=len)  # cut the line that wraps most, so short lines (a value) survive
        longest.pop()
        longest[-1] = longest[-1][: per_line - 1].rstrip() + "…"
    lines = [piece for pieces in wrapped for piece in pieces]
    return "\n".join(lines)


def fit_title(text: str, width_pixels: float, font_size: float) -> tuple[str, float]:
    """A figure title and its size: 1.4 × ``font_size`` shrinking to 0.7 × until it fits whole on two lines,
    then wrapped on as many lines as it needs, a word wider than the figure broken across lines (never cut).

    Example:
        >>> fit_title("mobilenet_v2: class visualizations", 150, 8)
        ('mobilenet_v2: class\nvisualizations', 8.8)
    """
    whole = "".join(text.split())
    for tenths in range(14, 6, -1):
        fitted = fit_caption(text, width_pixels, font_size * tenths / 10, max_lines=2)
        if "".join(fitted.split()) == whole:
            return fitted, font_size * tenths / 10
    import textwrap

    per_line = max(4, int(width_pixels / (0.62 * font_size * 0.7 * DPI / 72.0)))  # as fit_caption counts
    return "\n".join(textwrap.wrap(text, per_line)), font_size * 0.7


def _resize_tiles(tiles: np.ndarray, width: int) -> np.ndarray:
    """(N,H,W,C) uint8 tiles resized to ``width`` columns (aspect kept): nearest by a whole factor, else Lanczos."""
    count, height, old_width, channels = tiles.shape
    if width == old_width:
        return tiles
    if width % old_width == 0:
        factor = width // old_width
        return tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    from PIL import Image

    size = (width, max(1, round(height * width / old_width)))
    pictures = (Image.fromarray(tile[..., 0] if channels == 1 else tile) for tile in tiles)
    stacked = np.stack([np.asarray(picture.resize(size, Image.Resampling.LANCZOS)) for picture in pictures])
    return stacked[..., None] if stacked.ndim == 3 else stacked


def draw_colorbar(
    figure: Any,
    cmap: str | object,
    value_range: tuple[float, float],
    label: str,
    font_size: float,
    rect: tuple[float, float, float, float],
) -> Any:
    """Add a colour bar at ``rect`` (figure fractions) for ``cmap`` over the real ``value_range``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        high = low + 1e-12
    mappable = ScalarMappable(norm=Normalize(low, high), cmap=cmap)
    colorbar = figure.colorbar(mappable, cax=figure.add_axes(rect))
    colorbar.ax.tick_params(labelsize=font_size)
    if label:
        colorbar.set_label(label, fontsize=font_size)
    return colorbar
