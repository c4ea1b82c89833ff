"""Writing output files safely: atomic replaces, one writer per folder, inputs never overwritten.

Every file fmapviz writes goes through :func:`atomic_path`: it is written under a hidden
temporary name in the same folder and renamed over the target only once complete, so an
interrupted run (Ctrl-C, a crash, a full disk) leaves either the old file or the new one,
never half a PNG. :class:`FolderLock` keeps two runs from writing one folder at once, and
:func:`refuse_inputs` keeps any run, even with ``--force``, from writing over its inputs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import FmapvizError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it replaces ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was.

    Example:
        >>> with atomic_path("out/page.png") as temporary:
        ...     figure.save(temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_tensors(path: str | os.PathLike, value: Any) -> Path:
    """Save plain tensors, lists and numbers with ``torch.save``, atomically (read back with ``weights_only=True``).

    Saved through an open file: torch names the archive inside after a path's file name, which for the
    temporary file holds the process id, and the same tensors must give the same bytes."""
    import torch

    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.save(value, file)
    return Path(path)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write strict JSON (non-finite numbers become ``null``) atomically, ``indent`` None: on one line;
    returns the path."""
    return write_text(path, json.dumps(finite(value), indent=indent, allow_nan=False))


def save_figure(figure: Any, path: str | os.PathLike) -> Path:
    """``figure.save`` to ``path`` atomically (a figure, a PIL image, anything with ``save(path)``)."""
    with atomic_path(path) as temporary:
        figure.save(temporary)
    return Path(path)


def writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and check that a file can be written in it, before any work is done.

    Raises:
        FmapvizError: naming the folder, the reason and the fix (another ``-o``).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FmapvizError(f"Cannot create folder '{folder}': {error.strerror}. Choose another -o/--out.") from None
    probe = folder / f".fmapviz-write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FmapvizError(f"Cannot write into '{folder}': {error.strerror}. Choose another -o/--out.") from None
    return folder


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """True when both paths name one existing file (links and relative paths resolved)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def refuse_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise unless no output would write over an input file (``--force`` does not change this).

    Raises:
        FmapvizError: naming the output that is an input and asking for another ``-o``.
    """
    sources = [Path(source) for source in inputs if Path(source).is_file()]
    for output in outputs:
        if any(same_file(output, source) for source in sources):
            raise FmapvizError(
                f"{output} is one of the input files; choose another -o/--out "
                "(fmapviz never writes over its inputs, even with --force)."
            )


class FolderLock:
    """Hold an OS lock on ``folder`` while writing it; a second run fails at once.

    The lock is ``fcntl.flock`` on the folder itself: no lock file is left behind, and it goes
    away with the process that held it, even after a crash or ``kill -9``.

    Raises:
        FmapvizError: another run holds the folder.

    Example:
        >>> with FolderLock("report/"):
        ...     ...  # write pages
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one writer per folder is then the user's care
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.__exit__()
            raise FmapvizError(
                f"Another fmapviz run is writing '{self.folder}'; wait for it to finish or choose another -o/--out."
            ) from None
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None
