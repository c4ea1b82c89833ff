"""Vision Transformer speed: capture and Grad-CAM on torchvision's vit_b_16, as ratios.

Capture: plain forward vs ``fmapviz.capture`` of 4 and 8 encoder blocks (tokens read as 14×14 maps),
torch.no_grad. Grad-CAM: the floor (one forward plus ``autograd.grad`` of the top logit to the input,
parameters frozen) vs fmapviz (explicit layer, and layer=None which probes which layer reaches the
logits) vs pytorch-grad-cam's GradCAM with the ``reshape_transform`` its ViT tutorial documents,
called as a user would (its defaults, parameters not frozen). Random weights (the head is re-drawn
from N(0, 0.02) because torchvision starts it at zero), batch 1, 224 px, 2 threads, all in one process,
round-robin.

    python benchmarks/vit.py
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from common import markdown_table, setup, time_interleaved, write_section

import fmapviz
from fmapviz.engines.saliency import LayerSearchCache
from fmapviz.hooks import model_guard

warnings.filterwarnings("ignore")

BLOCKS = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
FOUR = BLOCKS[2::3]  # 2, 5, 8, 11
EIGHT = [name for i, name in enumerate(BLOCKS) if i % 3 != 0]  # 1, 2, 4, 5, 7, 8, 10, 11
CAM_LAYER = "encoder.layers.encoder_layer_11.ln_1"


def grad_cam_reshape(tensor: torch.Tensor, height: int = 14, width: int = 14) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape_transform (the glue its users write)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def capture_rows(model: torch.nn.Module, x: torch.Tensor) -> list[list[object]]:
    def plain() -> None:
        with torch.no_grad():
            model(x)

    def captured(names: list[str]):
        def run() -> None:
            with torch.no_grad(), fmapviz.capture(model, names) as maps:
                model(x)
            assert maps[names[-1]].shape == (x.shape[0], 768, 14, 14)

        return run

    methods = {"plain forward": plain, "fmapviz capture, 4 blocks": captured(FOUR)}
    methods["fmapviz capture, 8 blocks"] = captured(EIGHT)
    times = time_interleaved(methods, rounds=11, warmup=2)
    return [[name, f"{seconds:.3f}", f"{seconds / times['plain forward']:.3f}"] for name, seconds in times.items()]


def gradcam_rows(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[list[object]], str]:
    from pytorch_grad_cam import GradCAM

    with torch.no_grad():
        top = int(model(x).argmax())
    searches = LayerSearchCache()  # what a caller (the CLI, a notebook loop) keeps across calls
    auto = fmapviz.saliency(model, x, "gradcam", layer_search=searches)
    assert auto.layer == CAM_LAYER, auto.layer

    def floor() -> None:
        with model_guard(model):
            inputs = x.clone().requires_grad_(True)
            torch.autograd.grad(model(inputs)[0, top], inputs)

    def peer() -> None:
        layers = [model.get_submodule(CAM_LAYER)]
        with GradCAM(model=model, target_layers=layers, reshape_transform=grad_cam_reshape) as cam:
            cam(input_tensor=x, targets=None)

    methods = {
        "floor (forward + input gradient, params frozen)": floor,
        f"fmapviz gradcam, layers='{CAM_LAYER}'": lambda: fmapviz.saliency(model, x, "gradcam", layers=CAM_LAYER),
        "fmapviz gradcam, layers=None, first call (no cache: what every CLI run pays)": lambda: fmapviz.saliency(
            model, x, "gradcam"
        ),
        "fmapviz gradcam, layers=None, cached call (layer_search= kept)": lambda: fmapviz.saliency(
            model, x, "gradcam", layer_search=searches
        ),
        "pytorch-grad-cam GradCAM + reshape_transform": peer,
    }
    times = time_interleaved(methods, rounds=7, warmup=1)
    base = times["floor (forward + input gradient, params frozen)"]
    rows = [[name, f"{seconds:.3f}", f"{seconds / base:.2f}"] for name, seconds in times.items()]
    explicit = fmapviz.saliency(model, x, "gradcam", layers=CAM_LAYER).maps
    with GradCAM(model=model, target_layers=[model.get_submodule(CAM_LAYER)], reshape_transform=grad_cam_reshape) as c:
        theirs = torch.as_tensor(c(input_tensor=x, targets=None))[0]
    ours = explicit[0, 0]
    ours = (ours - ours.min()) / (ours.max() - ours.min())
    agreement = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]
    note = (
        f"layers=None picked `{auto.layer}` (the last block's output reaches the logits only through the class "
        f"token, so its patch maps get zero gradient). Correlation of the fmapviz and pytorch-grad-cam maps "
        f"(both min-max scaled): {float(agreement):.3f}."
    )
    return rows, note


def main() -> None:
    setup(threads=2)
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    capture_table = capture_rows(model, x)
    print(capture_table, flush=True)
    cam_table, note = gradcam_rows(model, x)
    print(cam_table, note, flush=True)
    intro = (
        "torchvision vit_b_16, random weights, batch 1, 224 px (197 tokens → 14×14 maps), 2 threads, one process. "
        "Capture rows: median of 11 interleaved rounds under torch.no_grad, ratio to the plain forward (target "
        "≤ 1.05× up to 8 layers, as for CNNs). Grad-CAM rows: median of 7 interleaved rounds, ratio to the floor "
        "(target ≤ 0.6×, as for CNNs); every CAM row includes upsampling to 224 px."
    )
    body = (
        intro
        + "\n\n### Capture\n\n"
        + markdown_table(["method", "seconds", "x plain forward"], capture_table)
        + "\n\n### Grad-CAM\n\n"
        + markdown_table(["method", "seconds", "x floor"], cam_table)
        + "\n\n"
        + note
    )
    write_section("vit", "Vision Transformer (vit_b_16): capture and Grad-CAM", "python benchmarks/vit.py", body)


if __name__ == "__main__":
    main()
