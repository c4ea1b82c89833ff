"""TensorBoard logging and the Lightning callback, read back with TensorBoard's own event reader."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TinyCNN, hook_count
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from fmapviz.integrations.tensorboard import FeatureMapLogger

LAYERS = ["features.0", "features.2"]


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    events.Reload()
    return events


def test_logger_writes_maps_histograms_and_health_every_n_steps_without_leaking_hooks(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with SummaryWriter(tmp_path) as writer:
        logger = FeatureMapLogger(writer, model, LAYERS, every=2, top=4)
        for step in range(5):
            x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 4, (6,))
            with logger.watch(step):
                assert hook_count(model) == (3 if step % 2 == 0 else 0)  # 2 layers + the pass-start hook
                loss = torch.nn.functional.cross_entropy(model(x), y)
            assert hook_count(model) == 0
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        logger.log(torch.randn(2, 3, 16, 16), step=5)
    assert model.training and hook_count(model) == 0
    events = read_events(tmp_path)
    tags = events.Tags()
    assert {f"fmapviz/maps/{layer}" for layer in LAYERS} <= set(tags["images"])
    assert {f"fmapviz/activations/{layer}" for layer in LAYERS} <= set(tags["histograms"])
    assert "fmapviz/dead_fraction/features.2" in tags["scalars"]
    assert [event.step for event in events.Images("fmapviz/maps/features.2")] == [0, 2, 4, 5]
    image = events.Images("fmapviz/maps/features.0")[0]
    assert image.width > 16 and image.height > 16  # a 2x2 grid of 16 px maps
    histogram = events.Histograms("fmapviz/activations/features.0")[0].histogram_value
    assert histogram.num == 6 * 8 * 16 * 16 and histogram.min < 0 < histogram.max  # conv output, all values
    relu = events.Scalars("fmapviz/dead_fraction/features.2")
    assert [event.step for event in relu] == [0, 2, 4, 5] and all(0 <= event.value <= 1 for event in relu)


def test_watch_releases_hooks_when_the_forward_fails(tmp_path):
    model = TinyCNN()
    with SummaryWriter(tmp_path) as writer:
        logger = FeatureMapLogger(writer, model, LAYERS, every=1)
        with pytest.raises(RuntimeError), logger.watch(0):
            model(torch.randn(2, 5, 16, 16))
    assert hook_count(model) == 0


def test_lightning_callback_logs_through_the_trainer(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from fmapviz.integrations.lightning import FeatureMapCallback

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyCNN()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(24, 3, 16, 16), torch.randint(0, 4, (24,)))
    module = Module()
    trainer = lightning.Trainer(
        max_steps=6,
        logger=TensorBoardLogger(tmp_path, name="run", version=0),
        callbacks=[FeatureMapCallback("net.features.2", every=3, top=4)],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    assert hook_count(module) == 0
    events = read_events(tmp_path / "run" / "version_0")
    assert [event.step for event in events.Images("fmapviz/maps/net.features.2")] == [0, 3]
    assert "fmapviz/activations/net.features.2" in events.Tags()["histograms"]


def test_import_fmapviz_needs_no_extra_and_a_missing_extra_gives_one_clear_line():
    code = (
        "import sys, fmapviz\n"
        "print(sorted(m for m in ('tensorboard', 'lightning') if m in sys.modules))\n"
        "sys.modules['tensorboard'] = None\n"
        "try:\n"
        "    import fmapviz.integrations.tensorboard\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert output.stdout.strip().splitlines() == [
        "[]",
        "fmapviz.integrations.tensorboard needs TensorBoard: pip install 'fmapviz[tensorboard]'",
    ]
