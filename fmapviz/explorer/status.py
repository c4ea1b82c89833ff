"""A build's progress in the site's status file (``fmapviz-site.json``), next to the terminal's bar per stage."""

from __future__ import annotations

import time
from pathlib import Path

from ..files import write_json
from ..progress import Progress
from .cache import MARKER, read_json


class StageProgress(Progress):
    """The progress bar of one explorer stage, with the time left (tqdm's in a terminal, on each line otherwise),
    that also writes ``"building": {stage, done, total, elapsed_s, left_s}`` into the site's status file after
    every step.

    The finished build rewrites the status file without ``"building"``.

    Example:
        >>> with StageProgress(Path("site"), "scan", 100, enabled=False) as bar:
        ...     bar.done("16 photos", 16)
    """

    def __init__(self, out: Path, stage: str, total: int, enabled: bool = True, status: bool = True) -> None:
        super().__init__(f"explore {stage}", total, enabled=enabled)
        self.out, self.stage_name, self.status = out, stage, status
        self.write_status()

    def done(self, item: str, count: int = 1) -> None:
        super().done(item, count)
        self.write_status()

    def write_status(self) -> None:
        marker = Path(self.out) / MARKER
        if not self.status or not marker.is_file():
            return
        description = read_json(marker) or {}
        description["building"] = {
            "stage": self.stage_name,
            "done": self.count,
            "total": self.total,
            "elapsed_s": round(time.perf_counter() - self.begun, 1),
            "left_s": self.left_s(),
        }
        write_json(marker, description)
