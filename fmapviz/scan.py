"""``python -m fmapviz.scan …``: the same command as ``fmapviz scan …`` (same flags), kept for ``torchrun -m``.

The scan itself lives in :mod:`fmapviz.engines.scan`; from Python call :func:`fmapviz.scan`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .cli import main as _cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fmapviz scan`` with ``argv`` (default: the process's arguments); returns the exit code."""
    return _cli_main(["scan", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
