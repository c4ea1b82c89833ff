"""Make the figures of docs/hubs.md: Grad-CAM and a feature-map grid for a timm ConvNeXt and a Hugging Face ViT.

    TORCH_HOME=../shared/torch-home python docs/hubs_figures.py

No hub weights can be downloaded on the machine that makes them: ``timm:convnext_tiny`` is built by name with
random weights, and the Hugging Face ViT (ViT-S/16 sized) is built from a config with random weights, saved with
``save_pretrained`` beside its processor and loaded back by ``hf:FOLDER``. The figures show that maps and layer
names come through without glue code, not what a trained network sees.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from beyond_cnns_figures import ROOT, save

import fmapviz

CAT = ROOT / "assets" / "chelsea.png"


def hub_figures(loaded: fmapviz.LoadedModel, label: str, prefix: str, layers: list[str], grid_layer: str) -> None:
    """Grad-CAM of the top class with layers=None and at ``layers``, and the top channels of ``grid_layer``."""
    cat = fmapviz.load_image(CAT, loaded.transform)  # the library's own preprocessing
    default = fmapviz.saliency(loaded, cat.tensor, "gradcam")
    results = {f"layers=None: {default.layers[0]}": default}
    for layer in layers:
        result = fmapviz.saliency(loaded, cat.tensor, "gradcam", layers=layer)
        results[layer if result.layers == [layer] else f"{layer}: uses {result.layers[0]}"] = result
    title = f"{label} (RANDOM weights) Grad-CAM of the top class, no reshape function"
    save(fmapviz.show_saliency(results, cat.display, title=title), f"{prefix}_gradcam.png")
    maps = fmapviz.feature_maps(loaded, cat.tensor, grid_layer)
    shape = " x ".join(map(str, maps[grid_layer].shape[1:]))
    title = f"{label} (RANDOM weights) {grid_layer}: {shape} maps, top 7 channels"
    save(fmapviz.show_maps(maps, "top:7", image=cat, title=title), f"{prefix}_maps.png")


def hf_vit(folder: Path) -> fmapviz.LoadedModel:
    """A ViT-S/16 sized Hugging Face ViT with random weights and a 224 px processor, saved and loaded by hf:FOLDER."""
    import transformers

    config = transformers.ViTConfig(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, num_labels=10
    )
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return fmapviz.load_model(f"hf:{folder}")


def main() -> None:
    torch.manual_seed(0)
    convnext = fmapviz.load_model("timm:convnext_tiny", weights=None)
    hub_figures(convnext, "timm:convnext_tiny", "hub_convnext", ["stages.2", "stages.1"], "stages.1")
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        vit = hf_vit(Path(folder))
        hub_figures(vit, "hf: ViT-S/16", "hub_vit", ["vit.layers.11", "vit.layers.6"], "vit.layers.6")


if __name__ == "__main__":
    main()
