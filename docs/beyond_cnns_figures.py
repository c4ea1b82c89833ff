"""Make the figures of docs/beyond_cnns.md: ViT, Swin, a dict-output model, detection and segmentation.

    TORCH_HOME=../shared/torch-home python docs/beyond_cnns_figures.py

Only mobilenet_v2 has real weights on this machine: the dict-output figure uses them; the ViT, Swin,
detection and segmentation figures come from random-weight models (they show that the plumbing
works and what the maps look like, not what a trained network sees).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.utils import draw_bounding_boxes

import fmapviz
from fmapviz.engines.saliency.targets import BoxScoreTarget, MaskTarget

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "img"


def save(figure: fmapviz.plot.Figure, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    picture = Image.fromarray(figure.image)
    picture.save(path, optimize=True)
    if path.stat().st_size > 300 * 1024:
        picture.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {picture.width}x{picture.height}, {path.stat().st_size // 1024} KB")


class Tagged(nn.Module):
    """A model that returns a dict, as many research and HuggingFace-style models do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.features(x)
        pooled = features.mean((2, 3))
        return {"logits": self.net.classifier(pooled), "embedding": pooled}


def dict_output_figure(cat: fmapviz.inputs.LoadedImage) -> None:
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    model = Tagged(loaded.model).eval()
    options = dict(categories=loaded.categories)
    results = {
        "Grad-CAM": fmapviz.saliency(model, cat.tensor, "gradcam", target="tabby", **options),
        "Grad-CAM, another class": fmapviz.saliency(model, cat.tensor, "gradcam", target="tiger cat", **options),
        "gradient": fmapviz.saliency(model, cat.tensor, "gradient", target="tabby", **options),
    }
    title = "mobilenet_v2 (real weights) wrapped to return {'logits', 'embedding'}: no glue needed"
    save(fmapviz.show_saliency(results, cat.display, title=title), "dict_output_saliency.png")


def vit_figures(cat: fmapviz.inputs.LoadedImage) -> None:
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    maps = fmapviz.feature_maps(vit, cat.tensor, "encoder.layers.encoder_layer_1")
    title = "vit_b_16 (RANDOM weights) encoder_layer_1: 197 tokens -> 768 x 14 x 14 maps, top 7 channels"
    save(fmapviz.show_maps(maps, "top:7", image=cat, title=title), "vit_maps.png")
    results = {
        "encoder_layer_11: warns, uses ...11.ln_1": fmapviz.saliency(
            vit, cat.tensor, "gradcam", layers="encoder.layers.encoder_layer_11"
        ),
        "layers=None: ...11.ln_1": fmapviz.saliency(vit, cat.tensor, "gradcam"),
        "encoder_layer_6": fmapviz.saliency(vit, cat.tensor, "gradcam", layers="encoder.layers.encoder_layer_6"),
    }
    title = "vit_b_16 (RANDOM weights) Grad-CAM of the top class: the last block's output cannot be used"
    save(fmapviz.show_saliency(results, cat.display, title=title), "vit_gradcam.png")


def swin_figure(cat: fmapviz.inputs.LoadedImage) -> None:
    torch.manual_seed(0)
    swin = torchvision.models.swin_t(weights=None).eval()
    maps = fmapviz.feature_maps(swin, cat.tensor, ["features.1", "features.3", "features.5"])
    title = "swin_t (RANDOM weights): channels-last stages (N,H,W,C) shown as maps"
    save(fmapviz.show_hierarchy(maps, cat, top=6, title=title), "swin_hierarchy.png")


def detection_figures(coffee: fmapviz.inputs.LoadedImage) -> None:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    small = dict(min_size=224, max_size=224, rpn_pre_nms_top_n_test=64, rpn_post_nms_top_n_test=32)  # fast on CPU
    detector = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, **small)
    detector.eval()
    photo = coffee.display  # detection models take [0, 1] images and normalize inside
    maps = fmapviz.feature_maps(detector, photo, "backbone")
    title = "fasterrcnn_mobilenet_v3_large_fpn (RANDOM weights): one entry per FPN level, backbone:0 / :1 / :pool"
    save(fmapviz.show_hierarchy(maps, coffee, top=6, title=title), "detection_fpn.png")
    with torch.no_grad():
        found = detector(photo)[0]
    boxes, labels = found["boxes"][:1], found["labels"][:1]
    result = fmapviz.saliency(detector, photo, "gradcam", target=BoxScoreTarget(boxes, labels), layers="backbone")
    boxed = draw_bounding_boxes((photo[0] * 255).to(torch.uint8), boxes, colors="red", width=3).float() / 255
    panels = {f"{key} ({'sum' if key == 'backbone' else 'level'})": result.for_layer(key) for key in result.layer_maps}
    title = "Grad-CAM of the red box's score (BoxScoreTarget), RANDOM-weight detector"
    save(fmapviz.show_saliency(panels, boxed[None], title=title), "detection_gradcam.png")


def segmentation_figure(cat: fmapviz.inputs.LoadedImage) -> None:
    torch.manual_seed(0)
    segmenter = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        out = segmenter(cat.tensor)["out"]
    labels = out.argmax(1)
    category = int(labels.flatten().mode().values)
    mask = labels[0] == category
    target = MaskTarget(category, mask)
    result = fmapviz.saliency(segmenter, cat.tensor, "gradcam", target=target, layers="backbone")
    panels = {key: result.for_layer(key) for key in result.layer_maps}
    masked = cat.display * (0.35 + 0.65 * mask.float())
    title = f"lraspp_mobilenet_v3_large (RANDOM weights): MaskTarget, class {category} over its predicted pixels"
    save(fmapviz.show_saliency(panels, masked, title=title), "segmentation_gradcam.png")


def main() -> None:
    torch.set_flush_denormal(True)  # random-weight MobileNetV3 layers produce denormals: ~50x slower on CPU
    transform = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1").transform
    cat = fmapviz.load_image(ROOT / "assets" / "chelsea.png", transform)
    coffee = fmapviz.load_image(ROOT / "assets" / "coffee.png", transform)
    dict_output_figure(cat)
    vit_figures(cat)
    swin_figure(cat)
    detection_figures(coffee)
    segmentation_figure(cat)


if __name__ == "__main__":
    main()
