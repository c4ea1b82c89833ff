"""Shared fixtures: tiny CNNs, synthetic images, the real-weights marker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ASSETS = ROOT / "assets"


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, as each torchrun rank does (float sums split over threads round otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def hook_count(model: nn.Module) -> int:
    """Hooks of any kind left on ``model`` and its submodules."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind)) for module in model.modules() for kind in kinds)


def model_state(model: nn.Module) -> tuple:
    """Everything a well-behaved engine must leave as it found it."""
    return (
        tuple(module.training for module in model.modules()),
        tuple(p.requires_grad for p in model.parameters()),
        tuple(p.detach().clone() for p in model.parameters()),
        tuple(p.grad is None for p in model.parameters()),
    )


def assert_same_state(before: tuple, after: tuple) -> None:
    assert before[0] == after[0], "train/eval modes changed"
    assert before[1] == after[1], "requires_grad flags changed"
    assert all(torch.equal(a, b) for a, b in zip(before[2], after[2])), "parameters changed"
    assert before[3] == after[3], "parameter gradients were computed"


class TinyCNN(nn.Module):
    """conv-relu-conv-relu-pool-linear, with in-place ReLUs, small enough for any test."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class FitsRows(nn.Module):
    """A real TinyCNN that runs out of (CUDA) memory on batches of more than ``rows`` rows."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.rows, self.batches = TinyCNN(), rows, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def small_vit(num_layers: int = 4) -> nn.Module:
    """A 32-px ViT (4x4 patches of 8 px, width 16) with a non-zero head (torchvision starts it at zero)."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=num_layers, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.5)
    return vit


def edge_image(size: int = 16) -> torch.Tensor:
    """(1,3,size,size): left half 0, right half 1, a vertical edge in the middle."""
    image = torch.zeros(1, 3, size, size)
    image[..., size // 2 :] = 1.0
    return image


def real_weights_available() -> bool:
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return (home / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").is_file()


real_weights = pytest.mark.skipif(
    not real_weights_available(),
    reason="mobilenet_v2 IMAGENET1K_V1 checkpoint not in $TORCH_HOME/hub/checkpoints; "
    "export TORCH_HOME=../shared/torch-home (make test does this)",
)


@pytest.fixture(scope="session")
def mobilenet():
    """Real mobilenet_v2 IMAGENET1K_V1 (a LoadedModel); use with @real_weights."""
    import fmapviz

    return fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")


_ROOT_CACHES = {".pytest_cache", ".ruff_cache", "__pycache__", ".coverage"}


@pytest.fixture(scope="session", autouse=True)
def _repo_root_stays_clean():
    """Tests write only under temporary folders: the suite leaves no new file or folder in the repo root."""
    before = set(os.listdir(ROOT))
    yield
    new = sorted(set(os.listdir(ROOT)) - before - _ROOT_CACHES)
    if new:
        pytest.fail(f"the tests left {new} in {ROOT}; write under tmp_path (or monkeypatch.chdir(tmp_path))")


def tiny_vit_config(**labels):
    """A Hugging Face ViT config small enough for any test: 64 px, 16 px patches (a class token + 4x4), 5 classes."""
    transformers = pytest.importorskip("transformers")
    return transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        num_labels=5,
        **labels,
    )
