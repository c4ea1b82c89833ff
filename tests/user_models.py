"""Small models of the kinds users train, as factories the CLI can load (``tests/user_models.py:mnist``)."""

from __future__ import annotations

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FIXED_MEAN, FIXED_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class MnistNet(nn.Module):
    """1x28x28 in, 10 classes; the flatten fixes the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3))
        self.fc = nn.Linear(8 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class Fixed64(nn.Module):
    """3x64x64 in, 5 classes; a Linear over the flattened 16x16 maps fixes the size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1))
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class DictOut(nn.Module):
    """Returns {"embedding": (N,32), "logits": (N,10)}, the embedding first."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.features(x).flatten(1)
        return {"embedding": embedding, "logits": self.fc(embedding)}


class TwoHeads(DictOut):
    """Returns {"embedding", "scores"}: no rule picks one."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        return {"embedding": out["embedding"], "scores": out["logits"]}


class BatchNormDropout(nn.Module):
    """conv-BN-ReLU-dropout-pool-linear: a model people leave in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class NanNet(nn.Module):
    """A classifier whose logits are NaN (a diverged training run)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3))) * float("nan")


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls()


def mnist() -> nn.Module:
    return _seeded(MnistNet)


def fixed64() -> nn.Module:
    return _seeded(Fixed64)


def dict_out() -> nn.Module:
    return _seeded(DictOut)


def two_heads() -> nn.Module:
    return _seeded(TwoHeads)


def batchnorm_dropout() -> nn.Module:
    return _seeded(BatchNormDropout).train()


def nan_net() -> nn.Module:
    return _seeded(NanNet)
