"""save_scan: a scan's folder as ``fmapviz scan`` writes it, the data beside the dead/weak channel answer."""

from __future__ import annotations

import os
from pathlib import Path

from ..engines.scan import ScanResult
from ..files import FolderLock, save_figure, write_text
from ..views.scan import show_dead_channels


def save_scan(scan_result: ScanResult, folder: str | os.PathLike) -> list[Path]:
    """Write ``scan.json`` and ``scan.pt`` (:meth:`ScanResult.save`), ``channels.txt`` and ``channels.png``.

    ``channels.txt`` is :meth:`ScanResult.dead_channels_text`, ``channels.png`` is
    :func:`fmapviz.show_dead_channels`: the short answer to "which channels never fire?", beside the data.
    Every file is written atomically, while a :class:`~fmapviz.files.FolderLock` keeps other runs out.

    Args:
        scan_result: what :func:`fmapviz.scan` returned.
        folder: the folder to write (created when missing); existing files are replaced.

    Returns:
        The four paths written.

    Raises:
        FmapvizError: another run is writing ``folder``.

    Example:
        >>> result = fmapviz.scan(loaded, "photos/", "features.7", topk=3, progress=False)
        >>> [path.name for path in fmapviz.save_scan(result, "scan/")]
        ['scan.json', 'scan.pt', 'channels.txt', 'channels.png']
    """
    folder = Path(folder)
    with FolderLock(folder):
        scan_result.save(folder)
        text = write_text(folder / "channels.txt", scan_result.dead_channels_text())
        picture = save_figure(show_dead_channels(scan_result), folder / "channels.png")
    return [folder / "scan.json", folder / "scan.pt", text, picture]
