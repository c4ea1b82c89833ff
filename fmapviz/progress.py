"""Where a long run is: a progress bar per stage on a terminal, one line per finished item otherwise.

Lines go to stderr, so they never mix with what a command prints on stdout, and a log file
or CI output gets ``report: 3/20 cat.png (4.1 s, about 1 min left)`` lines instead of bar redraws.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_interrupted = threading.Event()


@contextmanager
def interrupts_are_kept() -> Iterator[None]:
    """Remember a Ctrl-C as well as raising it, so that a run stops at the next stage or finished item even
    when Python swallowed the ``KeyboardInterrupt`` (it landed in a finalizer, where exceptions are only printed).

    Main thread only (elsewhere it does nothing); the previous SIGINT handler is restored on exit.

    Example:
        >>> with interrupts_are_kept():
        ...     Progress("report", total=1, enabled=False).done("cat.png")
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        _interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    _interrupted.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


def _stop_if_interrupted() -> None:
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt


class Progress:
    """Counts finished items of a run; ``stage`` names what the current item is doing.

    Args:
        what: the run's name (``"report"``, ``"scan"``).
        total: how many items (None: not known in advance).
        enabled: False prints nothing.
        stream: where to write (default stderr); a terminal gets a tqdm bar.

    Example:
        >>> progress = Progress("report", total=2)
        >>> progress.stage("saliency"); progress.done("cat.png")
    """

    def __init__(self, what: str, total: int | None, enabled: bool = True, stream: Any = None) -> None:
        self.what, self.total, self.enabled = what, total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.begun = self._started = time.perf_counter()
        self._bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=what, unit="item", file=self.stream)

    def stage(self, name: str) -> None:
        """Say which stage the current item is in (shown on the bar; lines stay one per item)."""
        _stop_if_interrupted()
        if self._bar is not None:
            self._bar.set_postfix_str(name)

    def done(self, item: str, count: int = 1) -> None:
        """``count`` items finished (``item`` names them): advance the bar, or print one line with the time it
        took and the time left at the pace so far."""
        _stop_if_interrupted()
        self.count += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.enabled:
            seconds = time.perf_counter() - self._started
            count = f"{self.count}/{self.total}" if self.total is not None else str(self.count)
            left = self.left_s() if self.total is not None and self.count < self.total else None
            timing = f"{seconds:.1f} s" + (f", about {_duration(left)} left" if left is not None else "")
            print(f"{self.what}: {count} {item} ({timing})", file=self.stream, flush=True)
            self._started = time.perf_counter()

    def left_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first item or when the total is not known)."""
        if not self.count or self.total is None:
            return None
        return round((time.perf_counter() - self.begun) / self.count * max(self.total - self.count, 0), 1)

    def close(self) -> None:
        """Close the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    """``40 s``, ``9 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
