"""Write notebooks/beyond_cnns.ipynb (outputs stripped): python notebooks/make_beyond_cnns.py"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        """# Beyond plain CNNs

Vision Transformers, Swin, models that return dicts, detection and segmentation models in fmapviz,
without reshape functions or wrappers. See `docs/beyond_cnns.md` for the rules behind each step.

**Weights.** Only `mobilenet_v2` has real weights here. The dict-output section uses them; the ViT,
Swin, detection and segmentation models below have **random weights**: the maps have the right shapes
and line up with the photo, but they do not show what a trained network has learned.""",
    ),
    (
        "code",
        """import torch
import torchvision
from torch import nn

import fmapviz
from fmapviz import BoxScoreTarget, MaskTarget

# random-weight MobileNetV3 backbones (detection, segmentation) produce denormal floats: ~50x slower on CPU
torch.set_flush_denormal(True)
loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
cat = fmapviz.load_image("../assets/chelsea.png", loaded.transform)
coffee = fmapviz.load_image("../assets/coffee.png", loaded.transform)
cat.tensor.shape""",
    ),
    (
        "md",
        """## ViT: 197 tokens become a 768 × 14 × 14 map

torchvision starts the ViT head at zero (constant logits, zero gradients), so we re-draw it.""",
    ),
    (
        "code",
        """torch.manual_seed(0)
vit = torchvision.models.vit_b_16(weights=None).eval()
nn.init.normal_(vit.heads.head.weight, std=0.02)
maps = fmapviz.feature_maps(vit, cat.tensor, ["conv_proj", "encoder.layers.encoder_layer_1"])
print({name: tuple(value.shape) for name, value in maps.items()})
fmapviz.show_maps(maps, "top:7", layer="encoder.layers.encoder_layer_1", image=cat)""",
    ),
    (
        "md",
        """Grad-CAM with `layers=None`: the last block's output reaches the head only through the class token,
so its patch maps get no gradient; fmapviz keeps the last layer whose patch maps do.""",
    ),
    (
        "code",
        """vit_cam = fmapviz.saliency(vit, cat.tensor, "gradcam")
print("layers=None picked", vit_cam.layers)
fmapviz.show_saliency(vit_cam, cat.display)""",
    ),
    ("md", "## Swin: channels-last stages `(N, H, W, C)` shown as maps"),
    (
        "code",
        """torch.manual_seed(0)
swin = torchvision.models.swin_t(weights=None).eval()
maps = fmapviz.feature_maps(swin, cat.tensor, ["features.1", "features.5"])
print({name: tuple(value.shape) for name, value in maps.items()})
fmapviz.show_hierarchy(maps, cat, top=5)""",
    ),
    (
        "md",
        """## A model that returns a dict (real weights)

Every engine reads model outputs through `fmapviz.outputs`: `.logits` if present, else the first tensor.""",
    ),
    (
        "code",
        """class Tagged(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        pooled = self.net.features(x).mean((2, 3))
        return {"logits": self.net.classifier(pooled), "embedding": pooled}


tagged = Tagged(loaded.model).eval()
cam = fmapviz.saliency(tagged, cat.tensor, "gradcam", categories=loaded.categories)
print(cam.layer, cam.target_names)
fmapviz.show_saliency(cam, cat.display)""",
    ),
    (
        "md",
        """## Detection: one map per FPN level, Grad-CAM of a box's score

Detection models take `[0, 1]` images (they normalize inside) and return a list of dicts.
`BoxScoreTarget` reads that list; `min_size=max_size=224` keeps the maps aligned with our 224-px input.""",
    ),
    (
        "code",
        """from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

torch.manual_seed(0)
small = dict(min_size=224, max_size=224, rpn_pre_nms_top_n_test=64, rpn_post_nms_top_n_test=32)  # fast on CPU
detector = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, **small)
detector.eval()
photo = coffee.display
levels = fmapviz.feature_maps(detector, photo, "backbone")
print({name: tuple(value.shape) for name, value in levels.items()})
fmapviz.show_maps(levels, "top:8", layer="backbone:0", image=coffee)""",
    ),
    (
        "code",
        """with torch.no_grad():
    found = detector(photo)[0]
target = BoxScoreTarget(found["boxes"][:1], found["labels"][:1])
box_cam = fmapviz.saliency(detector, photo, "gradcam", target=target, layers="backbone")
print(list(box_cam.layer_maps), "box:", found["boxes"][0].round().tolist())
fmapviz.show_saliency(box_cam, photo)""",
    ),
    ("md", "## Segmentation: Grad-CAM of one class over a mask"),
    (
        "code",
        """torch.manual_seed(0)
segmenter = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
with torch.no_grad():
    out = segmenter(cat.tensor)["out"]
category = int(out.argmax(1).flatten().mode().values)
mask_cam = fmapviz.saliency(segmenter, cat.tensor, "gradcam", target=MaskTarget(category, out.argmax(1)[0] == category),
                            layers="backbone")
print(list(mask_cam.layer_maps))
fmapviz.show_saliency(mask_cam, cat.display)""",
    ),
    (
        "code",
        """def hooks(model):
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    return sum(len(getattr(module, kind)) for module in model.modules() for kind in kinds)


print(f"{sum(hooks(m) for m in (vit, swin, tagged, detector, segmenter))} hooks left")""",
    ),
]


def main() -> None:
    cells = [new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in CELLS]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    path = Path(__file__).resolve().parent / "beyond_cnns.ipynb"
    nbformat.write(notebook, path)
    print(path)


if __name__ == "__main__":
    main()
