"""files: atomic writes, one writer per folder, inputs never overwritten, strict JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmapviz.errors import FmapvizError
from fmapviz.files import FolderLock, atomic_path, refuse_inputs, write_json


def test_an_interrupted_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "page.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
        temporary.write_bytes(b"half a P")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["page.png"]
    with atomic_path(path) as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_bytes(b"new")
    assert path.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_json_is_strict_with_non_finite_numbers_written_as_null(tmp_path):
    path = write_json(tmp_path / "manifest.json", {"p": float("nan"), "scores": [1.5, float("inf")]})
    assert json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name)) == {
        "p": None,
        "scores": [1.5, None],
    }


def test_a_folder_held_by_another_process_is_refused_and_free_again_after_it(tmp_path):
    holder = subprocess.Popen(  # it takes the same flock without importing torch (fast)
        [sys.executable, "-c", f"import fcntl, os, sys; fcntl.flock(os.open({str(tmp_path)!r}, 0), fcntl.LOCK_EX)\n"
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FmapvizError, match="Another fmapviz run is writing"), FolderLock(tmp_path):
            pass
    finally:
        holder.communicate("")
    with FolderLock(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_an_output_that_is_an_input_is_refused(tmp_path):
    photo = tmp_path / "cat.png"
    photo.write_bytes(b"png")
    with pytest.raises(FmapvizError, match="is one of the input files.*even with --force"):
        refuse_inputs([tmp_path / "." / "cat.png"], [photo])
    refuse_inputs([tmp_path / "other.png"], [photo])
