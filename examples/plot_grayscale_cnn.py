"""
My own grayscale CNN
====================

fmapviz is not tied to torchvision: any ``nn.Module`` works, with any number of input channels.
Here a small grayscale network of our own, with **random weights** and one hand-made edge filter,
looks at a synthetic image. Background: :doc:`/concepts/feature_maps`.
"""

import torch
from torch import nn

import fmapviz


class DigitNet(nn.Module):
    """Two conv blocks for 28 x 28 grayscale images, MNIST-sized."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))


torch.manual_seed(0)
model = DigitNet().eval()
with torch.no_grad():  # channel 0 of block1: a vertical-edge (Sobel) filter
    model.block1[0].weight[0, 0] = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    model.block1[0].bias[0] = 0.0

# %%
# The geometry of every layer: output shape, stride and receptive field, from one traced pass
# (the same table as ``fmapviz layers my_net.py:DigitNet --size 28``).
print(fmapviz.summary(model, (1, 1, 28, 28)))

# %%
# A 28 x 28 image: a bright square on a dark background. The edge filter answers on the square's
# left side (dark to bright) and, after the ReLU, stays silent on the right side.
x = torch.zeros(1, 1, 28, 28)
x[..., 8:20, 8:20] = 1.0
maps = fmapviz.feature_maps(model, x, ["block1.1", "block2.1"])
first = fmapviz.show_maps(maps, "all", layer="block1.1", normalize="channel", image=x)
second = fmapviz.show_maps(maps, "top:8", layer="block2.1", image=x)
