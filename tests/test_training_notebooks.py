"""The three training notebooks run top to bottom in their short setting (FMAPVIZ_SHORT=1: a few steps)."""

from __future__ import annotations

import nbformat
import pytest
from conftest import ROOT, real_weights
from nbclient import NotebookClient


def run_short(name: str, tmp_path, monkeypatch) -> tuple[list[str], int]:
    """Execute ``name`` with FMAPVIZ_SHORT=1 in ``tmp_path``; return its printed text and number of PNG outputs."""
    monkeypatch.setenv("FMAPVIZ_SHORT", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    texts = [output.get("text", "") for output in outputs]
    return texts, sum("image/png" in output.get("data", {}) for output in outputs)


@pytest.mark.slow
def test_init_notebook_flags_small_init_and_not_he(tmp_path, monkeypatch):
    texts, pngs = run_short("init.ipynb", tmp_path, monkeypatch)
    joined = "\n".join(texts)
    assert "He (Kaiming normal)      last ReLU std" in joined and "flagged:  0 of 20 layers" in joined
    assert "N(0, 0.01)               last ReLU std" in joined and "flagged: 20 of 20 layers" in joined
    assert pngs == 4


@pytest.mark.slow
def test_regularization_notebook_logs_and_measures_dead_relus(tmp_path, monkeypatch):
    texts, pngs = run_short("regularization.ipynb", tmp_path, monkeypatch)
    joined = "\n".join(texts)
    assert "dead ReLU channels at the end, per layer" in joined
    assert "images: ['fmapviz/maps/1', 'fmapviz/maps/11']" in joined
    assert pngs == 3
    assert len(list((tmp_path / "checkpoints" / "plain").glob("step_*.pt"))) == 4  # steps 0, 4, 8 and the last


@real_weights
@pytest.mark.real_weights
@pytest.mark.slow
def test_finetune_notebook_compares_before_and_after(tmp_path, monkeypatch):
    texts, pngs = run_short("finetune.ipynb", tmp_path, monkeypatch)
    joined = "\n".join(texts)
    assert "features.0   CKA" in joined and "features.18  CKA" in joined
    assert pngs == 3
