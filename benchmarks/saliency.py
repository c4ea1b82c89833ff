"""Saliency speed against captum, pytorch-grad-cam and torchcam, as multiples of the gradient floor.

Floor: one forward plus ``autograd.grad`` of the target logit with respect to the input, parameters
frozen. resnet50 and mobilenet_v2 with random weights, batch 1, 224 px, 2 threads, target = top class.
Peers run as a user would call them (their defaults, parameters not frozen), plus bilinear upsampling
to 224 px where they return a low-resolution CAM, so every CAM row includes the upsample. Like-for-like
rows beside them: the Grad-CAM peers on the same model with frozen parameters (fmapviz freezes them
itself, so no parameter gradient is computed), and captum's IG and SmoothGrad with fmapviz's chunking
(``internal_batch_size=8``, ``nt_samples_batch_size=8``: fmapviz's ``batch_size='auto'`` on CPU).

    python benchmarks/saliency.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from common import markdown_table, setup, time_interleaved, write_section

import fmapviz
from fmapviz.capture import model_guard

warnings.filterwarnings("ignore")

MODELS = {
    "resnet50": (torchvision.models.resnet50, "layer4", ["layer1", "layer2", "layer3", "layer4"]),
    "mobilenet_v2": (
        torchvision.models.mobilenet_v2,
        "features.18",
        ["features.4", "features.7", "features.14", "features.18"],
    ),
}


def upsample(cam: torch.Tensor) -> torch.Tensor:
    return F.interpolate(cam.reshape(1, 1, *cam.shape[-2:]), size=(224, 224), mode="bilinear", align_corners=False)


def bench_model(name: str) -> tuple[list[list[object]], list[str]]:
    factory, layer, four_layers = MODELS[name]
    torch.manual_seed(0)
    model = factory(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        top = int(model(x).argmax())
    module = model.get_submodule(layer)

    def floor() -> None:
        with model_guard(model):
            inputs = x.clone().requires_grad_(True)
            torch.autograd.grad(model(inputs)[0, top], inputs)

    def captum_saliency() -> None:
        Saliency(model).attribute(x, target=top, abs=False)

    def captum_gradcam(inputs: torch.Tensor = x) -> None:
        upsample(LayerGradCam(model, module).attribute(inputs, target=top, relu_attributions=True))

    def torchcam_cam(kind: str):
        from torchcam import methods

        def run(inputs: torch.Tensor = x) -> None:
            with getattr(methods, kind)(model, layer) as extractor:
                scores = model(inputs)
                upsample(extractor(top, scores)[0])

        return run

    def gradcam_lib(kind: str):
        import pytorch_grad_cam

        def run(inputs: torch.Tensor = x) -> None:
            with getattr(pytorch_grad_cam, kind)(model=model, target_layers=[module]) as cam:
                cam(input_tensor=inputs, targets=None)

        return run

    def frozen(peer):
        def run() -> None:
            # eval, parameters frozen, as inside fmapviz.saliency; on a frozen model torchcam and
            # pytorch-grad-cam only run when the input requires grad (captum sets that itself)
            with model_guard(model):
                peer(x.clone().requires_grad_(True))

        return run

    fast = {
        "floor": floor,
        "fmapviz gradient": lambda: fmapviz.saliency(model, x, "gradient"),
        "captum Saliency": captum_saliency,
        "fmapviz gradcam": lambda: fmapviz.saliency(model, x, "gradcam", layers=layer),
        "captum LayerGradCam + upsample": captum_gradcam,
        "torchcam GradCAM + upsample": torchcam_cam("GradCAM"),
        "pytorch-grad-cam GradCAM": gradcam_lib("GradCAM"),
        "captum LayerGradCam + upsample, frozen parameters": frozen(captum_gradcam),
        "torchcam GradCAM + upsample, frozen parameters": frozen(torchcam_cam("GradCAM")),
        "pytorch-grad-cam GradCAM, frozen parameters": frozen(gradcam_lib("GradCAM")),
        "fmapviz gradcam++": lambda: fmapviz.saliency(model, x, "gradcam++", layers=layer),
        "torchcam GradCAMpp + upsample": torchcam_cam("GradCAMpp"),
        "pytorch-grad-cam GradCAM++": gradcam_lib("GradCAMPlusPlus"),
        f"fmapviz gradcam, earliest of 4 ({four_layers[0]})": lambda: fmapviz.saliency(
            model, x, "gradcam", layers=four_layers[0]
        ),
        "fmapviz gradcam, 4 layers at once": lambda: fmapviz.saliency(model, x, "gradcam", layers=four_layers),
        "fmapviz gradcam, 4 separate calls": lambda: [
            fmapviz.saliency(model, x, "gradcam", layers=one) for one in four_layers
        ],
    }
    times = time_interleaved(fast, rounds=7)

    def captum_ig_default() -> None:
        IntegratedGradients(model).attribute(x, target=top, n_steps=50)

    def captum_smoothgrad_default() -> None:
        NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=25, target=top, abs=False)

    def captum_ig_chunked() -> None:
        IntegratedGradients(model).attribute(x, target=top, n_steps=50, internal_batch_size=8)

    def captum_smoothgrad_chunked() -> None:
        NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=25, nt_samples_batch_size=8, target=top, abs=False
        )

    slow = {
        "floor": floor,
        "fmapviz integrated_gradients, 50 steps (default batch_size='auto')": lambda: fmapviz.saliency(
            model, x, "integrated_gradients", steps=50
        ),
        "captum IntegratedGradients, 50 steps, default internal_batch_size": captum_ig_default,
        "captum IntegratedGradients, 50 steps, internal_batch_size=8 (like-for-like)": captum_ig_chunked,
        "fmapviz smoothgrad, 25 samples (default batch_size='auto')": lambda: fmapviz.saliency(
            model, x, "smoothgrad", samples=25
        ),
        "captum NoiseTunnel smoothgrad, 25 samples, default batch": captum_smoothgrad_default,
        "captum NoiseTunnel smoothgrad, 25 samples, nt_samples_batch_size=8 (like-for-like)": captum_smoothgrad_chunked,
    }
    slow_times = time_interleaved(slow, rounds=2, warmup=0)
    rows = [[method, f"{seconds:.3f}", f"{seconds / times['floor']:.2f}"] for method, seconds in times.items()]
    rows += [
        [method, f"{seconds:.2f}", f"{seconds / slow_times['floor']:.1f}"]
        for method, seconds in slow_times.items()
        if method != "floor"
    ]
    single, four = (
        times[f"fmapviz gradcam, earliest of 4 ({four_layers[0]})"],
        times["fmapviz gradcam, 4 layers at once"],
    )
    notes = [
        f"{name}: 4 layers at once = {four / single:.2f}x the earliest single layer, "
        f"{four / times['fmapviz gradcam']:.2f}x the deepest ({layer}), "
        f"{four / times['fmapviz gradcam, 4 separate calls']:.2f}x four separate calls."
    ]
    return rows, notes


def main() -> None:
    setup(threads=2)
    body = []
    for name in MODELS:
        rows, notes = bench_model(name)
        print(name, rows, notes, flush=True)
        body.append(
            f"### {name}\n\n" + markdown_table(["method", "seconds", "x floor"], rows) + "\n\n" + "\n".join(notes)
        )
    intro = (
        "Floor = one forward + `autograd.grad` of the top logit to the input, parameters frozen. Batch 1, 224 px, "
        "random weights, 2 threads. Fast rows: median of 7 interleaved rounds; IG and SmoothGrad rows: median of "
        "2 interleaved rounds with their own floor. Peers are called with their defaults; CAM rows include "
        "bilinear upsampling to 224 px. fmapviz's 'auto' batch size on CPU is 8 rows per chunk. 'Frozen parameters' "
        "rows run the peer inside `model_guard` (eval, parameters frozen), as fmapviz runs, with an input that "
        "requires grad (torchcam and pytorch-grad-cam raise on a frozen model otherwise); '(like-for-like)' rows "
        "give captum fmapviz's chunking of 8 rows, so the defaults rows differ by setting, not by method. The "
        "machine was shared with other jobs (2 cores); rows of one table ran interleaved, so load hit every row alike."
    )
    write_section(
        "saliency",
        "Saliency speed (x fwd+bwd floor)",
        "python benchmarks/saliency.py",
        intro + "\n\n" + "\n\n".join(body),
    )


if __name__ == "__main__":
    main()
