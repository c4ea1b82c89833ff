"""Saliency speed against captum, pytorch-grad-cam and torchcam, as multiples of the gradient floor.

Floor: one forward plus ``autograd.grad`` of the target logit with respect to the input, parameters
frozen. resnet50 and mobilenet_v2 with random weights, batch 1, 224 px, 2 threads, target = top class.
Peers run as a user would call them (their defaults, parameters not frozen), plus bilinear upsampling
to 224 px where they return a low-resolution CAM, so every CAM row includes the upsample. Like-for-like
rows beside them: the Grad-CAM peers on the same model with frozen parameters (fmapviz freezes them
itself, so no parameter gradient is computed), and captum's IG and SmoothGrad with fmapviz's chunking
(``internal_batch_size=8``, ``nt_samples_batch_size=8``: fmapviz's ``batch_size='auto'`` on CPU).

    python benchmarks/saliency.py              # the first nine methods (section "saliency")
    python benchmarks/saliency.py --new        # the methods of issue 15 at batch 1 and 16 (section "saliency_methods")
    python benchmarks/saliency.py [--models resnet50 mobilenet_v2] [--rounds 7] [--slow-rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch
import torch.nn.functional as F
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from common import SHARED, markdown_table, setup, time_interleaved, write_section

import fmapviz
from fmapviz.engines.inference import fast_forward
from fmapviz.hooks import model_guard
from fmapviz.inputs import default_transform

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


def bench_model(name: str, rounds: int = 7, slow_rounds: int = 2) -> tuple[list[list[object]], list[str]]:
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
    times = time_interleaved(fast, rounds=rounds)

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
    slow_times = time_interleaved(slow, rounds=slow_rounds, warmup=0)
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


def grad_cam_peer(kind: str, model, module, x, classes, batch_size: int | None = None, **call):
    """A pytorch-grad-cam call as a user writes it: construct (hooks), call with explicit class targets.
    ``batch_size``: the rows per forward of ScoreCAM / AblationCAM (its attribute; default 16 / 32)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    layers = [] if kind == "FullGrad" else [module]

    def run() -> None:
        with getattr(pytorch_grad_cam, kind)(model=model, target_layers=layers) as cam:
            if batch_size is not None:
                cam.batch_size = batch_size
            cam(input_tensor=x, targets=targets, **call)

    return run


def torchcam_peer(kind: str, model, layer: str, x, classes, **settings):
    """A torchcam extractor as a user writes it, plus the bilinear upsample to the input."""
    from torchcam import methods

    def run() -> None:
        with getattr(methods, kind)(model, layer, input_shape=tuple(x.shape[1:]), **settings) as extractor:
            scores = model(x)
            cam = extractor(classes.tolist(), scores)[0]
            F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)

    return run


def masked_group(batch: int) -> dict[str, dict]:
    """Score-CAM and Ablation-CAM on mobilenet_v2 (real weights when cached), each with its peers' batch setting.

    Batch 1: 224 px, features.18 (1280 channels, 1280 masked forwards per image); batch 16: 112 px,
    features.14 (160 channels), so the peers finish. Also checks the outputs are equal.
    """
    try:
        model = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1").model
        weights = "IMAGENET1K_V1"
    except fmapviz.FmapvizError:
        model, weights = torchvision.models.mobilenet_v2(weights=None).eval(), "random weights"
    side, layer = (224, "features.18") if batch == 1 else (112, "features.14")
    photos = sorted((SHARED / "imagenet-samples").glob("*.JPEG"))[:batch]
    if len(photos) == batch:
        transform = default_transform(side, resize=side)
        x = fmapviz.load_image([str(p) for p in photos], transform).tensor
    else:
        x = torch.randn(batch, 3, side, side)
    with torch.no_grad():
        classes = model(x).argmax(1)
    module = model.get_submodule(layer)
    channels = _channels(model, layer, x)

    def ours(method: str, **options):
        return lambda: fmapviz.saliency(model, x, method, target=classes, layers=layer, **options)

    equal = _max_difference(
        fmapviz.saliency(model, x, "scorecam", target=classes, layers=layer, batch_size=16).maps[:, 0],
        _grad_cam_maps("ScoreCAM", model, module, x, classes),
    )
    slice_rows = fast_forward(model).rows_per_slice(x[:1].expand(16, -1, -1, -1))
    title = f"masked forwards: mobilenet_v2 ({weights}), {side} px, {layer} ({channels} channels)"
    EQUALITY[title] = equal
    at_slice_rows = {}  # fmapviz's forward runs 16 rows in slices (SLICE_BYTES): the peer at that batch too
    if slice_rows < 16:
        name = f"pytorch-grad-cam ScoreCAM (batch {slice_rows}: the rows per forward of fmapviz's slices)"
        at_slice_rows[name] = grad_cam_peer("ScoreCAM", model, module, x, classes, batch_size=slice_rows)
    return {
        title: {
            "fmapviz scorecam (batch_size=16)": ours("scorecam", batch_size=16),
            "pytorch-grad-cam ScoreCAM (its batch 16)": grad_cam_peer("ScoreCAM", model, module, x, classes),
            **at_slice_rows,
            "torchcam ScoreCAM (its batch 32) + upsample": torchcam_peer("ScoreCAM", model, layer, x, classes),
            "fmapviz scorecam top=64 (no peer has a budget)": ours("scorecam", batch_size=16, top=64),
            "fmapviz ablationcam (batch_size=32)": ours("ablationcam", batch_size=32),
            "pytorch-grad-cam AblationCAM (its batch 32)": grad_cam_peer("AblationCAM", model, module, x, classes),
        }
    }


EQUALITY: dict[str, float] = {}  # masked group -> max |fmapviz - pytorch-grad-cam| of normalized Score-CAM maps


def _channels(model, layer: str, x: torch.Tensor) -> int:
    return fmapviz.feature_maps(model, x[:1], [layer])[layer].shape[1]


def _grad_cam_maps(kind: str, model, module, x, classes) -> torch.Tensor:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pytorch_grad_cam, kind)(model=model, target_layers=[module]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))


def _max_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max |a - b| of each image's map scaled to [0, 1] (the peers' own normalization)."""

    def scaled(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(1).double()
        low = flat.amin(1, keepdim=True)
        return (flat - low) / (flat.amax(1, keepdim=True) - low + 1e-7)

    return float((scaled(ours) - scaled(theirs)).abs().max())


def bench_new(batch: int, only: tuple[str, ...] = ("CAMs", "masked", "captum")) -> tuple[list[list[object]], list[str]]:
    """The issue-15 methods against pytorch-grad-cam, torchcam and direct captum calls, interleaved."""
    import captum.attr as attr

    from fmapviz.engines.saliency.methods.perturbation import patch_mask

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    mobilenet = torchvision.models.mobilenet_v2(weights=None).eval()
    side, masked_side = (112, 32) if batch == 1 else (64, 32)  # small, so a machine shared by 8 jobs can finish
    x = torch.randn(batch, 3, side, side)
    small = F.interpolate(x, size=(masked_side, masked_side), mode="bilinear", align_corners=False)
    with torch.no_grad():
        classes = model(x).argmax(1)
        small_classes = model(small).argmax(1)
        mobile_classes = mobilenet(small).argmax(1)
    layer4 = model.layer4

    def ours(method: str, inputs=x, targets=classes, net=model, **options):
        layers = "layer4" if fmapviz.engines.saliency.METHODS[method].takes_layer else None
        return lambda: fmapviz.saliency(net, inputs, method, target=targets, layers=layers, **options)

    groups = {
        f"CAMs, {side} px": {
            "fmapviz xgradcam": ours("xgradcam"),
            "pytorch-grad-cam XGradCAM": grad_cam_peer("XGradCAM", model, layer4, x, classes),
            "torchcam XGradCAM + upsample": torchcam_peer("XGradCAM", model, "layer4", x, classes),
            "fmapviz hirescam": ours("hirescam"),
            "pytorch-grad-cam HiResCAM": grad_cam_peer("HiResCAM", model, layer4, x, classes),
            "fmapviz eigencam": ours("eigencam"),
            "pytorch-grad-cam EigenCAM": grad_cam_peer("EigenCAM", model, layer4, x, classes),
            "fmapviz eigengradcam": ours("eigengradcam"),
            "pytorch-grad-cam EigenGradCAM": grad_cam_peer("EigenGradCAM", model, layer4, x, classes),
            "fmapviz gradcam smooth='eigen'": ours("gradcam", smooth="eigen"),
            "pytorch-grad-cam GradCAM eigen_smooth": grad_cam_peer(
                "GradCAM", model, layer4, x, classes, eigen_smooth=True
            ),
            "fmapviz gradcam smooth='aug'": ours("gradcam", smooth="aug"),
            "pytorch-grad-cam GradCAM aug_smooth": grad_cam_peer("GradCAM", model, layer4, x, classes, aug_smooth=True),
            "fmapviz fullgrad": ours("fullgrad"),
            "pytorch-grad-cam FullGrad": grad_cam_peer("FullGrad", model, layer4, x, classes),
            f"fmapviz smoothgrad_campp (4 samples, chunks of {batch} rows like torchcam)": ours(
                "smoothgrad_campp", batch_size=batch
            ),
            "torchcam SmoothGradCAMpp (4 samples) + upsample": torchcam_peer(
                "SmoothGradCAMpp", model, "layer4", x, classes
            ),
        },
        **masked_group(batch),
    }
    patch = 16
    mask = patch_mask(masked_side, masked_side, patch)
    captum_rows = {
        "fmapviz occlusion (16 px, stride 16)": ours("occlusion", small, small_classes, patch=16, stride=16),
        "captum Occlusion, same settings": lambda: attr.Occlusion(model).attribute(
            small,
            sliding_window_shapes=(3, 16, 16),
            strides=(3, 16, 16),
            target=small_classes,
            perturbations_per_eval=8,
        ),
        "fmapviz feature_ablation (16 px grid)": ours("feature_ablation", small, small_classes, patch=16),
        "captum FeatureAblation, same mask": lambda: attr.FeatureAblation(model).attribute(
            small, target=small_classes, feature_mask=mask, perturbations_per_eval=8
        ),
        "fmapviz deeplift (mobilenet_v2)": ours("deeplift", small, mobile_classes, net=mobilenet),
        "captum DeepLift (mobilenet_v2)": lambda: attr.DeepLift(mobilenet).attribute(
            small, baselines=torch.zeros_like(small), target=mobile_classes
        ),
        "fmapviz deconvolution": ours("deconvolution", small, small_classes),
        "captum Deconvolution": lambda: attr.Deconvolution(model).attribute(small, target=small_classes),
        "fmapviz lrp": ours("lrp", small, small_classes),
        "captum LRP": lambda: attr.LRP(model).attribute(small, target=small_classes),
        "fmapviz gradient_shap (5 samples)": ours("gradient_shap", small, small_classes),
        "captum GradientShap, same baselines": lambda: attr.GradientShap(model).attribute(
            small,
            baselines=torch.cat([torch.zeros_like(small[:1]), torch.rand_like(small[:1])]),
            n_samples=5,
            target=small_classes,
        ),
    }
    if batch == 1:  # KernelShap explains one image per call: the batch-16 row is 16 batch-1 rows
        captum_rows["fmapviz kernel_shap (16 px grid, 50 samples)"] = ours(
            "kernel_shap", small, small_classes, patch=16, samples=50
        )
        captum_rows["captum KernelShap (its sklearn regression), same"] = lambda: attr.KernelShap(model).attribute(
            small, target=small_classes, feature_mask=mask, n_samples=50, perturbations_per_eval=8
        )
    groups[f"captum methods, {masked_side} px"] = captum_rows
    rows, notes = [], []
    for group, methods in groups.items():
        if not any(group.startswith(wanted) for wanted in only):
            continue
        rounds, warmup = (3, 0) if group.startswith("masked") else (9, 1)
        times = time_interleaved(methods, rounds=rounds, warmup=warmup)
        print(group, times, flush=True)
        rows.append([f"**{group}**", "", ""])
        reference = None
        for name, seconds in times.items():
            reference = seconds if name.startswith("fmapviz") else reference
            ratio = "" if name.startswith("fmapviz") else f"{reference / seconds:.2f}"
            if "top=64" in name:
                peer = times["pytorch-grad-cam ScoreCAM (its batch 16)"]
                notes.append(f"Score-CAM top=64 takes {seconds / peer:.2f}x pytorch-grad-cam's full ScoreCAM.")
            rows.append([name, f"{seconds:.3f}", ratio])
        notes.append(f"{group}: median of {rounds} interleaved round(s), {warmup} warm-up.")
        if group in EQUALITY:
            notes.append(
                "Equal output: Score-CAM maps of fmapviz and pytorch-grad-cam, each scaled to [0, 1], differ by "
                f"at most {EQUALITY[group]:.1e}."
            )
    return rows, notes


def main_new(batches: list[int], only: tuple[str, ...]) -> None:
    """``--new [--batches 1 16] [--only CAMs masked captum]``."""
    setup(threads=2)
    body = []
    for batch in batches:
        rows, notes = bench_new(batch, only)
        body.append(
            f"### batch {batch}\n\n"
            + markdown_table(["method", "seconds", "fmapviz ÷ peer (the fmapviz row above)"], rows)
            + "\n\n"
            + " ".join(notes)
        )
    intro = (
        "resnet18 (deeplift: mobilenet_v2; torchvision's ResNet reuses its ReLUs, which captum's DeepLift refuses), "
        "random weights, 2 threads, explicit class targets (each image's top class), every method as a user calls "
        "it (hooks set up per call). CAM rows on layer4 include the upsample to the input. The last column is "
        "fmapviz's time divided by the peer's (below 1: fmapviz is faster). The masked-forward rows use "
        "mobilenet_v2 on ImageNet photos (see the group title). Rows of one group are interleaved so load hits "
        f"them alike; load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
    )
    write_section(
        "saliency_methods",
        "Saliency speed, the methods of issue 15 (batch 1 and 16)",
        "python benchmarks/saliency.py " + " ".join(sys.argv[1:]),
        intro + "\n\n" + "\n\n".join(body),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new", action="store_true", help="the methods of issue 15 (section saliency_methods)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="--new: batch sizes")
    parser.add_argument("--only", nargs="+", default=["CAMs", "masked", "captum"], help="--new: row groups")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the fast rows")
    parser.add_argument("--slow-rounds", type=int, default=2, help="interleaved rounds of the IG/SmoothGrad rows")
    args = parser.parse_args()
    if args.new:
        main_new(args.batches, tuple(args.only))
        return
    setup(threads=2)
    body = []
    for name in args.models:
        rows, notes = bench_model(name, args.rounds, args.slow_rounds)
        print(name, rows, notes, flush=True)
        body.append(
            f"### {name}\n\n" + markdown_table(["method", "seconds", "x floor"], rows) + "\n\n" + "\n".join(notes)
        )
    intro = (
        "Floor = one forward + `autograd.grad` of the top logit to the input, parameters frozen. Batch 1, 224 px, "
        f"random weights, 2 threads. Fast rows: median of {args.rounds} interleaved rounds; IG and SmoothGrad rows: "
        f"median of {args.slow_rounds} interleaved rounds with their own floor. Peers are called with their "
        "defaults; CAM rows include bilinear upsampling to 224 px. fmapviz's 'auto' batch size on CPU is 8 rows "
        "per chunk. 'Frozen parameters' "
        "rows run the peer inside `model_guard` (eval, parameters frozen), as fmapviz runs, with an input that "
        "requires grad (torchcam and pytorch-grad-cam raise on a frozen model otherwise); '(like-for-like)' rows "
        "give captum fmapviz's chunking of 8 rows, so the defaults rows differ by setting, not by method. The "
        "machine was shared with other jobs (2 cores); rows of one table ran interleaved, so load hit every row alike."
    )
    write_section(
        "saliency",
        "Saliency speed (x fwd+bwd floor)",
        "python benchmarks/saliency.py " + " ".join(sys.argv[1:]),
        intro + "\n\n" + "\n\n".join(body),
    )


if __name__ == "__main__":
    main()
