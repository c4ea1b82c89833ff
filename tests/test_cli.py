"""The fmapviz command line: every subcommand, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, ROOT, real_weights
from PIL import Image

from fmapviz.cli import COMMANDS, build_parser, main

TINY_MODEL = """
import torch.nn as nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
"""


@pytest.fixture
def tiny_model(tmp_path: Path) -> str:
    path = tmp_path / "tiny_net.py"
    path.write_text(TINY_MODEL)
    return f"{path}:build"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    Image.open(ASSETS / "chelsea.png").resize((96, 64)).save(path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "fmapviz", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def test_layers_prints_the_summary_table(tiny_model, capsys):
    assert main(["layers", tiny_model, "--size", "32"]) == 0
    table = capsys.readouterr().out
    assert "receptive field" in table and "1×16×16×16" in table


def test_maps_writes_one_png_per_image_and_layer(tiny_model, photo, tmp_path):
    out = tmp_path / "maps"
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "2", "-o", str(out), "--quiet", "--size", "64"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["cat_0.png", "cat_2.png"]
    assert Image.open(out / "cat_2.png").size[0] > 100


def test_existing_output_is_not_overwritten_without_force(tiny_model, photo, tmp_path, capsys):
    out = tmp_path / "maps"
    out.mkdir()
    keep = out / "cat_0.png"
    keep.write_bytes(b"user data")
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "-o", str(out), "--size", "64"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert keep.read_bytes() == b"user data"
    assert main(["maps", tiny_model, str(photo), "--layer", "0", "-o", str(out), "--size", "64", "--force"]) == 0
    assert keep.read_bytes()[:4] == b"\x89PNG"


def test_saliency_and_actmax_write_pngs(tiny_model, photo, tmp_path):
    out = tmp_path / "sal"
    args = ["saliency", tiny_model, str(photo), "--method", "gradcam", "gradient", "--target", "2", "-o", str(out)]
    assert main([*args, "--quiet", "--size", "64"]) == 0
    assert (out / "cat_saliency.png").is_file()
    png = tmp_path / "act.png"
    args = ["actmax", tiny_model, "--layer", "2", "--channels", "0-3", "--steps", "8", "--size", "32", "-o", str(png)]
    assert main([*args, "--quiet"]) == 0
    assert Image.open(png).size[0] > 100


def test_report_writes_pages_manifest_and_index(tiny_model, photo, tmp_path):
    out = tmp_path / "report"
    assert main(["report", tiny_model, str(photo), "-o", str(out), "--quiet", "--size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "index.html", "manifest.json"]
    assert "cat.png" in (out / "index.html").read_text()


def test_scan_and_channel_page(tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(4):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(data / f"img{index}.png")
    out = tmp_path / "scan"
    assert main(["scan", tiny_model, str(data), "--layer", "2", "--topk", "2", "-o", str(out), "--quiet"]) == 0
    page = tmp_path / "channel.png"
    args = ["channel", tiny_model, str(out), "--layer", "2", "--channel", "1", "--steps", "4", "-o", str(page)]
    assert main([*args, "--quiet", "--size", "32"]) == 0
    assert page.is_file()


@pytest.mark.parametrize(
    ("make_args", "code", "message"),
    [
        (lambda m, p, t: ["maps", m, str(t / "missing.png"), "--layer", "0"], 1, r"missing\.png.*no such file"),
        (lambda m, p, t: ["maps", m, str(t / "corrupt.png"), "--layer", "0"], 1, r"corrupt\.png"),
        (lambda m, p, t: ["maps", m, str(p), "--layer", "9"], 1, r"Unknown layer '9'. Closest"),
        (lambda m, p, t: ["maps", "resnet19", str(p), "--layer", "x"], 1, r"Unknown model 'resnet19'.*resnet18"),
        (
            lambda m, p, t: ["maps", m, str(p), "--layer", "0", "--checkpoint", str(t / "other.pt")],
            1,
            r"does not match the model",
        ),
        (
            lambda m, p, t: ["maps", m, str(p), "--layer", "0", "-o", str(t / "file.txt" / "out")],
            1,
            r"Cannot create folder",
        ),
        (
            lambda m, p, t: ["actmax", m, "--layer", "2", "--channels", "0-x"],
            2,
            r"--channels: bad channel list: Bad value '0-x'",
        ),
        (lambda m, p, t: ["maps", m], 2, r"required"),
        (lambda m, p, t: ["maps", m, str(p), "--layer", "0", "--device", "tpu"], 2, r"Unknown device 'tpu'"),
        (lambda m, p, t: ["maps", m, str(p), "--layer", "0", "--device", "meta"], 2, r"meta device .*no values"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(
    tiny_model, photo, tmp_path, make_args, code, message, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the default -o folders land here, not in the repo
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    assert main([*make_args(tiny_model, photo, tmp_path), "--size", "64"]) == code
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    if lines and lines[0].startswith("device: "):  # said once the model is loaded, before a later error
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, lines[0]), lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_on_a_machine_without_it_is_one_line_and_exit_2(tiny_model, photo, tmp_path, capsys):
    args = ["maps", tiny_model, str(photo), "--layer", "0", "--device", "cuda", "-o", str(tmp_path / "maps")]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "error: Device 'cuda': this machine has no CUDA device; use cpu, or leave --device out.\n"
    )
    assert not list(tmp_path.glob("maps/*.png"))


def test_weights_missing_offline_exit_2_and_unreadable_ones_exit_1(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    args = ["maps", "resnet18", str(photo), "--weights", "IMAGENET1K_V1", "--layer", "layer1", "-o", str(tmp_path)]
    assert main(args) == 2  # not cached, no network: fix it by copying the file or choosing --weights
    err = capsys.readouterr().err
    assert err.startswith("error: Weights ResNet18_Weights.IMAGENET1K_V1 are not cached") and err.count("\n") == 1
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    assert main(args) == 1  # there, but broken: a runtime failure
    assert "are unreadable" in capsys.readouterr().err


def test_every_command_runs_on_the_best_device_and_says_which(tiny_model, photo, tmp_path, capsys):
    from fmapviz.devices import auto_device, describe

    args = ["maps", tiny_model, str(photo), "--layer", "0", "--size", "64", "-o", str(tmp_path / "maps")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"device: {describe(auto_device())}" and err.count("device: ") == 1
    assert main([*args, "--force", "--quiet"]) == 0
    assert "device" not in capsys.readouterr().err
    assert main(["layers", tiny_model, "--device", "cpu"]) == 0
    assert capsys.readouterr().err.splitlines() == ["device: cpu"]


USAGE_ERRORS = {
    "top:0": ["maps", "m.py:f", "x.png", "--layer", "0", "--channels", "top:0"],
    "5-2": ["maps", "m.py:f", "x.png", "--layer", "0", "--channels", "5-2"],
    "size -5": ["maps", "m.py:f", "x.png", "--layer", "0", "--size", "-5"],
    "size 0": ["report", "m.py:f", "x.png", "--size", "0"],
    "shard": ["scan", "m.py:f", "data/", "--layer", "0", "--shard", "3/2"],
    "class -1": ["actmax", "m.py:f", "--class=-1"],
    "actmax top": ["actmax", "m.py:f", "--layer", "0", "--channels", "top:3"],
    "long": ["maps", "m.py:f", "x.png", "--layer", "0", "--channels", "x" * 20000],
}
PROBE = """
import contextlib, io, json, sys
from fmapviz.cli import main
answers = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            code = main(argv)
        except SystemExit as exit_:  # --help
            code = exit_.code
    answers[name] = [code, err.getvalue(), out.getvalue()]
print(json.dumps({"answers": answers, "torch": "torch" in sys.modules}))
"""


def _probe(cases: dict[str, list[str]]) -> dict:
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_usage_errors_exit_2_with_one_short_line_before_torch_is_imported():
    result = _probe(USAGE_ERRORS)
    assert result["torch"] is False
    for name, (code, err, _) in result["answers"].items():
        assert code == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (name, err)
        assert len(err) < 400, name  # echoed values are cut
    answers = result["answers"]
    assert "asks for no channels" in answers["top:0"][1] and "runs backwards; write 2-5" in answers["5-2"][1]
    assert "-5 is too small" in answers["size -5"][1] and "0 is too small" in answers["size 0"][1]
    assert "negative" in answers["class -1"][1] and "indices or all" in answers["actmax top"][1]


def test_help_of_every_command_answers_without_importing_torch():
    result = _probe({"": ["--help"], **{name: [name, "--help"] for name in COMMANDS}})
    assert result["torch"] is False
    for name, (code, _, out) in result["answers"].items():
        assert code == 0 and "usage: fmapviz" in out, name
    assert "(default none: the architecture only)" in " ".join(result["answers"]["layers"][2].split())


def test_help_states_every_default():
    subparsers = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in subparsers.choices.items():
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert "default" in action.help, (name, action.option_strings)


def test_python_m_fmapviz_scan_is_fmapviz_scan_and_honours_size(tiny_model, tmp_path, monkeypatch):
    import runpy

    import fmapviz

    def alias(argv):
        monkeypatch.setattr(sys, "argv", ["fmapviz", "scan", *argv])
        with pytest.raises(SystemExit) as exit_code:
            runpy.run_module("fmapviz", run_name="__main__")
        return exit_code.value.code

    data = tmp_path / "data" / "nested"
    data.mkdir(parents=True)
    for index in range(3):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(data / f"img{index}.png")
    common = [tiny_model, str(tmp_path / "data"), "--layer", "0", "--layer", "2", "--size", "24", "--quiet"]
    assert alias([*common, "-o", str(tmp_path / "a")]) == 0
    assert main(["scan", *common, "-o", str(tmp_path / "b")]) == 0
    a, b = fmapviz.load_scan(tmp_path / "a"), fmapviz.load_scan(tmp_path / "b")
    assert a.input_size == b.input_size == (24, 24) and a.images == b.images == 3
    assert list(a.layers) == list(b.layers) == ["0", "2"] and a.sources == b.sources  # sub-folders included
    assert alias(["--size", "0"]) == 2


def test_layers_needs_no_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached, nothing downloadable
    assert main(["layers", "mobilenet_v2", "--size", "64"]) == 0
    assert "features.18" in capsys.readouterr().out


@real_weights
@pytest.mark.real_weights
def test_real_mobilenet_maps_and_saliency_through_the_cli(tmp_path):
    out = tmp_path / "real"
    chelsea = str(ASSETS / "chelsea.png")
    result = run_cli(
        "maps", "mobilenet_v2", "--weights", "IMAGENET1K_V1", chelsea, "--layer", "features.7", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "saliency", "mobilenet_v2", "--weights", "IMAGENET1K_V1", chelsea, "--target", "tabby", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_features.7.png", "chelsea_saliency.png"]
