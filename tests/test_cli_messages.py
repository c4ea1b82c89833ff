"""What the command line prints when something is missing: whole paths, no misleading lines."""

from __future__ import annotations

import torch
from conftest import ASSETS

from fmapviz.cli import _capped, main


def test_the_offline_weights_hint_keeps_the_file_and_the_cache_folder_whole(tmp_path, monkeypatch, capsys):
    home = tmp_path / ("a-rather-long-folder-name-" * 4) / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").write_bytes(b"")  # IMAGENET1K_V1's file name
    argv = ["maps", "mobilenet_v2", str(ASSETS / "chelsea.png"), "--layers", "features.1", "-o", str(tmp_path / "m")]
    assert main(argv) != 0  # DEFAULT is IMAGENET1K_V2, not cached, and the machine is offline
    captured = capsys.readouterr()
    assert "Downloading" not in captured.out + captured.err
    line = captured.err.strip()
    assert "\n" not in line and "IMAGENET1K_V1 is cached: pass --weights IMAGENET1K_V1" in line
    assert " mobilenet_v2-7ebf99e0.pth " in line and f" {home / 'hub' / 'checkpoints'}/" in line, line


def test_a_long_message_is_cut_but_not_inside_a_path():
    path = "/" + "/".join(["folder"] * 30) + "/file.pth"
    message = "x " * 120 + f"put it in {path} or somewhere else " + "y " * 200
    cut = _capped(message)
    assert f" {path}…" in cut and cut.endswith(f"({len(message)} characters; --debug)")
    assert _capped("z" * 5000).startswith("z" * 299 + "…")  # no path: cut at the limit
