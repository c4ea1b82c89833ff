"""The notebooks run top to bottom on CPU (outputs are stripped in git)."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from conftest import ROOT, real_weights
from nbclient import NotebookClient


def execute(name: str, tmp_path) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()
    return notebook


def execute_beside_assets(name: str, tmp_path, assets: tuple[str, ...] = ("chelsea.png",)) -> nbformat.NotebookNode:
    """Run a notebook from ``tmp_path/notebooks`` with the photos it reads in ``../assets``, as in the repository."""
    (tmp_path / "assets").mkdir()
    for asset in assets:
        shutil.copy(ROOT / "assets" / asset, tmp_path / "assets" / asset)
    (tmp_path / "notebooks").mkdir()
    return execute(name, tmp_path / "notebooks")


def test_notebooks_are_committed_without_outputs():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        assert all(not cell.get("outputs") for cell in cells if cell["cell_type"] == "code"), path.name


@pytest.mark.slow
def test_tour_runs(tmp_path):
    notebook = execute("tour.ipynb", tmp_path)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert any("0 hooks left" in output.get("text", "") for output in outputs)


@real_weights
@pytest.mark.real_weights
@pytest.mark.slow
def test_quickstart_runs_with_real_weights(tmp_path):
    notebook = execute_beside_assets("quickstart.ipynb", tmp_path)
    texts = [output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("Egyptian cat" in text for text in texts)
    assert (tmp_path / "notebooks" / "quickstart-report" / "chelsea.png").is_file()


@real_weights
@pytest.mark.real_weights
@pytest.mark.slow
def test_beyond_cnns_runs_with_real_weights(tmp_path):
    notebook = execute_beside_assets("beyond_cnns.ipynb", tmp_path, ("chelsea.png", "coffee.png"))
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    texts = "\n".join(output.get("text", "") for output in outputs)
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 7
    assert "(1, 768, 14, 14)" in texts and "layers=None picked ['encoder.layers.encoder_layer_11.ln_1']" in texts
    assert "'backbone:pool': (1, 256, 4, 4)" in texts and "['backbone:0', 'backbone:1', 'backbone']" in texts
    assert "0 hooks left" in texts


@real_weights
@pytest.mark.real_weights
@pytest.mark.slow
def test_explain_channels_notebook_runs_with_real_weights(tmp_path):
    notebook = execute_beside_assets("explain_channels.ipynb", tmp_path)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    texts = "\n".join(output.get("text", "") for output in outputs)
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 1
    assert "explained class: Egyptian cat" in texts
    drops = {line.split()[0]: float(line.split()[-1]) for line in texts.splitlines() if "logit drop" in line}
    assert drops["explained"] > drops["random"], texts


@pytest.mark.slow
def test_interact_notebook_runs(tmp_path):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("timm")  # its last view is of timm:convnext_atto (random weights)
    notebook = execute_beside_assets("interact.ipynb", tmp_path)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert sum("application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in outputs) == 2
    texts = "\n".join(output.get("text", "") for output in outputs)
    assert "computed: {'maps': 2, 'actmax': 3, 'saliency': 2}" in texts, texts
    assert "hub layers: ('stages.2', 'stages.3') input: (1, 3, 224, 224)" in texts, texts
    assert any("image/png" in output.get("data", {}) for output in outputs)
