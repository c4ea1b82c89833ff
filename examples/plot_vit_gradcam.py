"""
Grad-CAM on a Vision Transformer
================================

A ViT block outputs tokens, ``(N, 1 + H·W, C)``: a class token, then one token per image patch.
fmapviz reads them as ``(N, C, H, W)`` maps, so Grad-CAM works on a transformer without a
``reshape_transform``. To stay small and offline this example builds a tiny ViT with **random
weights**: the maps show that the plumbing lines up with the image, not what a trained model looks at.
Background: :doc:`/concepts/techniques`, :doc:`/beyond_cnns`.
"""

from pathlib import Path

import torch
from torchvision import transforms
from torchvision.models import VisionTransformer

import fmapviz

torch.manual_seed(0)
vit = VisionTransformer(image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128).eval()
to_input = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor()])
image = fmapviz.load_image(Path("../assets/chelsea.png"), to_input)  # run from examples/

# %%
# The token output of an encoder block, captured and read as maps: 1 + 8 x 8 tokens of 64 values
# become a 64-channel 8 x 8 map.
maps = fmapviz.feature_maps(vit, image.tensor, "encoder.layers.encoder_layer_2")
print({name: tuple(value.shape) for name, value in maps.items()})
tokens = fmapviz.show_maps(maps, "top:8", image=image)

# %%
# Grad-CAM at two blocks from one forward and one backward pass: each block's patch tokens, weighted
# by the gradient of the top class score, then upsampled to the image.
blocks = ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_3"]
cams = fmapviz.saliency(vit, image.tensor, "gradcam", layers=blocks)
figure = fmapviz.show_saliency({block: cams.for_layer(block) for block in blocks}, image.display)
