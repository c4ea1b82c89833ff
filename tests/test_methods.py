"""The methods beyond the first nine, each against its reference: pytorch-grad-cam, torchcam and
captum called with the same layer, target and settings (max abs difference <= 1e-4 after the same
min-max normalization), or the paper's formula written out where the definitions differ."""

from __future__ import annotations

import warnings

import numpy
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN, real_weights
from torch import nn

import fmapviz
from fmapviz.engines.saliency import METHODS, saliency

TOLERANCE = 1e-4


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps min-max scaled per image, as pytorch-grad-cam returns them."""
    maps = torch.as_tensor(maps).float()
    low = maps.flatten(1).amin(1)[:, None, None]
    return (maps - low) / (maps.flatten(1).amax(1)[:, None, None] - low + 1e-12)


def grad_cam_peer(name: str, model: nn.Module, layer: str, x: torch.Tensor, classes: list[int], **call) -> torch.Tensor:
    """pytorch-grad-cam's map for ``name`` on ``layer`` with explicit class targets."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = [] if name == "FullGrad" else [model.get_submodule(layer)]
    with warnings.catch_warnings(), getattr(pytorch_grad_cam, name)(model=model, target_layers=layers) as cam:
        warnings.simplefilter("ignore")
        if hasattr(cam, "batch_size"):
            cam.batch_size = 16
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes], **call))


def ours(
    model: nn.Module, x: torch.Tensor, method: str, layer: str | None, classes: list[int], **options
) -> torch.Tensor:
    return normalized(saliency(model, x, method, target=classes, layers=layer, **options).maps[:, 0])


@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def photos(mobilenet):
    from conftest import ASSETS

    paths = sorted(ASSETS.glob("*.jpg"))[:2] or sorted(ASSETS.glob("*.png"))[:2]
    image = fmapviz.load_image([str(p) for p in paths], mobilenet.transform)
    return F.interpolate(image.tensor, size=(96, 96), mode="bilinear", align_corners=False)


GRADIENT_CAMS = [
    ("xgradcam", "XGradCAM", {}),
    ("hirescam", "HiResCAM", {}),
    ("gradcam", "GradCAM", {"smooth": "aug"}),
    ("layercam", "LayerCAM", {"smooth": "aug"}),
]
EIGEN_CAMS = [
    ("eigencam", "EigenCAM", {}),
    ("eigengradcam", "EigenGradCAM", {}),
    ("gradcam", "GradCAM", {"smooth": "eigen"}),
    ("layercam", "LayerCAM", {"smooth": "eigen"}),
]


def peer_call(options: dict) -> dict:
    return {"aug_smooth": options.get("smooth") == "aug", "eigen_smooth": options.get("smooth") == "eigen"}


@pytest.mark.parametrize(("method", "peer", "options"), GRADIENT_CAMS)
def test_gradient_cams_match_pytorch_grad_cam_on_a_mid_layer_and_other_classes(resnet, method, peer, options):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = normalized(grad_cam_peer(peer, resnet, "layer3", x, [3, 7], **peer_call(options)))
    assert (ours(resnet, x, method, "layer3", [3, 7], **options) - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize(("method", "peer", "options"), EIGEN_CAMS)
def test_eigen_cams_match_pytorch_grad_cam_up_to_the_principal_directions_sign(resnet, method, peer, options):
    """A singular vector's sign is LAPACK's choice (numpy's and torch's builds differ on the same matrix), so
    pytorch-grad-cam's eigen maps flip between machines; fmapviz fixes the sign (see ``eigen_projection``).
    Each image must equal the peer's map of one of the two directions: relu(-p) = relu(p) - p, and
    upsampling is linear, so the other direction's map is the clamped map minus the unclamped one."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expected = normalized(grad_cam_peer(peer, resnet, "layer3", x, [3, 7], **peer_call(options)))
    clamped = saliency(resnet, x, method, target=[3, 7], layers="layer3", **options).maps[:, 0]
    raw = saliency(resnet, x, method, target=[3, 7], layers="layer3", clamp="none", **options).maps[:, 0]
    for image in range(2):
        directions = [normalized(clamped[image : image + 1]), normalized((clamped - raw)[image : image + 1])]
        assert min(float((d - expected[image : image + 1]).abs().max()) for d in directions) <= TOLERANCE


def test_eigen_projection_sign_follows_the_plain_map():
    from fmapviz.engines.saliency.methods.cam_weights import eigen_projection

    torch.manual_seed(0)
    weighted = torch.rand(3, 16, 5, 5) * torch.rand(3, 1, 5, 5)  # channels share one spatial pattern
    for sign in (1, -1):
        projection = eigen_projection(sign * weighted)
        plain = (sign * weighted).sum(1)
        centred = plain - plain.mean((1, 2), keepdim=True)
        assert ((projection * centred).sum((1, 2)) > 0).all()


def test_score_cam_matches_pytorch_grad_cam_and_shares_constant_channels(resnet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = normalized(grad_cam_peer("ScoreCAM", resnet, "layer1", x, [3, 7]))
    assert (ours(resnet, x, "scorecam", "layer1", [3, 7], batch_size=48) - expected).abs().max() <= TOLERANCE


def test_score_cam_weights_follow_the_paper_with_dead_channels_and_top():
    """Score-CAM (Wang et al., 2020) written out: w_c = softmax_c f(x * s(U(A_c))), s = min-max scaling."""
    from fmapviz.engines.saliency.methods.cam_weights import score_cam_weights

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    activation = torch.relu(torch.randn(2, 6, 4, 4))
    activation[:, 2] = 0  # a dead channel: its mask is all zeros
    activation[1, 4] = 0.5  # a constant one: its scaled mask is 0/0, taken as all zeros (Score-CAM's code skips it)

    def run(inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return model(inputs)[:, [1, 3]]

    weights = score_cam_weights(x, activation, run, batch_size=5)
    expected = torch.empty(2, 2, 6)
    for image in range(2):
        for channel in range(6):
            mask = F.interpolate(
                activation[image, channel][None, None], size=(16, 16), mode="bilinear", align_corners=True
            )
            mask = (mask - mask.min()) / (mask.max() - mask.min() + 1e-8)
            if activation[image, channel].max() == activation[image, channel].min():
                mask = torch.zeros_like(mask)  # bilinear rounding would otherwise scale float noise up to [0, 1]
            expected[image, :, channel] = model(x[image : image + 1] * mask)[0, [1, 3]]
    assert torch.allclose(weights, expected.softmax(2), atol=1e-6)
    budget = score_cam_weights(x, activation, run, batch_size=5, top=3)
    assert ((budget > 0).sum(2) == 3).all()
    assert torch.allclose(budget.sum(2), torch.ones(2, 2))


def test_ablation_cam_matches_pytorch_grad_cam(resnet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    expected = normalized(grad_cam_peer("AblationCAM", resnet, "layer1", x, [3, 7]))
    assert (ours(resnet, x, "ablationcam", "layer1", [3, 7], batch_size=24) - expected).abs().max() <= TOLERANCE


class Concatenating(nn.Module):
    """The layer's output is concatenated with a tensor from before it: the shared prefix cannot broadcast."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return self.head(torch.cat([stem, self.block(stem)], 1).mean((2, 3)))


def test_ablation_cam_runs_only_the_rest_of_the_network_and_falls_back_when_it_cannot():
    """Ablation-CAM (Desai & Ramaswamy, 2020) written out: w_c = (y - y_c) / y with channel c of the layer zeroed."""
    torch.manual_seed(0)
    for model in (TinyCNN().eval(), Concatenating().eval()):
        layer = "features.3" if isinstance(model, TinyCNN) else "block"
        x = torch.randn(2, 3, 8, 8)
        calls: list[int] = []
        model.get_submodule("features.0" if isinstance(model, TinyCNN) else "stem").register_forward_hook(
            lambda module, args, output, calls=calls: calls.append(output.shape[0])
        )
        result = saliency(model, x, "ablationcam", target=[1, 2], layers=layer, clamp="none", batch_size=16)
        with fmapviz.capture(model, layer) as maps:
            base = model(x)
        activation = maps[layer]
        module = model.get_submodule(layer)
        expected = torch.zeros(2, activation.shape[2], activation.shape[3])
        for image, target in enumerate([1, 2]):
            for channel in range(activation.shape[1]):
                ablated = activation[image : image + 1].clone()
                ablated[:, channel] = 0
                handle = module.register_forward_hook(lambda m, a, o, ablated=ablated: ablated)
                with torch.no_grad():
                    score = model(x[image : image + 1])[0, target]
                handle.remove()
                weight = (base[image, target] - score) / base[image, target]
                expected[image] += weight * activation[image, channel]
        upsampled = F.interpolate(expected[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
        assert torch.allclose(result.maps[:, 0], upsampled, atol=1e-5)
        prefix_rows = calls[2 : 2 + 2]  # after the plain forward and the capture: the ablation batches
        assert prefix_rows and all(
            rows == (1 if isinstance(model, TinyCNN) else activation.shape[1]) for rows in prefix_rows[:1]
        )


def test_fullgrad_matches_pytorch_grad_cam(resnet):
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    expected = normalized(grad_cam_peer("FullGrad", resnet, "", x, [3, 7]))
    assert (ours(resnet, x, "fullgrad", None, [3, 7]) - expected).abs().max() <= TOLERANCE


def test_smoothgrad_campp_follows_the_paper():
    """Smooth Grad-CAM++ (Omeiza et al., 2019) written out with the same noise draws. torchcam's
    SmoothGradCAMpp differs by design: it sums A * g^3 position by position in alpha's denominator and
    takes relu of the last sample's gradient rather than of the mean gradient (see smoothgrad_campp_weights)."""
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 12, 12)
    samples, noise, seed = 3, 0.3, 5
    result = saliency(
        model, x, "smoothgrad_campp", target=2, layers="features.3", samples=samples, noise=noise, seed=seed
    )
    draws = torch.randn((samples, 3, 12, 12), generator=torch.Generator().manual_seed(seed)) * noise
    with fmapviz.capture(model, "features.3") as maps:
        model(x)
    activation = maps["features.3"]
    moments = [torch.zeros_like(activation) for _ in range(3)]
    for draw in draws:
        with fmapviz.capture(model, "features.3", keep_grad=True) as noisy:
            output = model(x + draw)
        grad = torch.autograd.grad(output[:, 2].sum(), noisy["features.3"])[0]
        for power in range(3):
            moments[power] += grad.pow(power + 1) / samples
    alpha = moments[1] / (2 * moments[1] + activation.sum((2, 3), keepdim=True) * moments[2])
    weights = (alpha * moments[0].clamp(min=0)).sum((2, 3), keepdim=True)
    cam = (weights * activation).sum(1).clamp(min=0)
    expected = F.interpolate(cam[:, None], size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(result.maps[:, 0], expected, atol=1e-6)


def test_several_targets_come_from_one_pass_and_equal_single_calls(resnet):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    for method, options in (("scorecam", {"top": 8}), ("ablationcam", {"top": 8}), ("xgradcam", {})):
        both = saliency(resnet, x, method, target="top:2", layers="layer2", **options)
        for k in range(2):
            single = saliency(resnet, x, method, target=int(both.target[0, k]), layers="layer2", **options)
            assert torch.allclose(both.maps[:, k], single.maps[:, 0], atol=1e-6)


def test_top_budget_scores_fewer_channels_with_a_close_map(resnet):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    full = saliency(resnet, x, "ablationcam", target=3, layers="layer1").maps
    budget = saliency(resnet, x, "ablationcam", target=3, layers="layer1", top=32).maps
    assert not torch.equal(full, budget)
    assert torch.corrcoef(torch.stack([full.flatten(), budget.flatten()]))[0, 1] > 0.5
    with pytest.raises(ValueError, match="top= must be a positive"):
        saliency(resnet, x, "scorecam", layers="layer1", top=0)


# --------------------------------------------------------------------------------------- captum


def captum_direct(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    import captum.attr as attr

    from fmapviz.engines.saliency.methods.perturbation import patch_mask, weighted_least_squares

    patch = max(1, min(x.shape[-2:]) // 14)
    if method == "occlusion":
        return attr.Occlusion(model).attribute(
            x,
            sliding_window_shapes=(3, patch, patch),
            strides=(3, patch // 2, patch // 2),
            target=target,
            perturbations_per_eval=8,
        )
    mask = patch_mask(*x.shape[-2:], patch)
    if method == "feature_ablation":
        return attr.FeatureAblation(model).attribute(x, target=target, feature_mask=mask, perturbations_per_eval=8)
    if method == "kernel_shap":
        torch.manual_seed(0)
        explainer = attr.KernelShap(model)
        try:
            import sklearn  # noqa: F401  captum's own regression when available: the reference
        except ImportError:
            from captum._utils.models.linear_model import LinearModel

            explainer.interpretable_model = LinearModel(train_fn=weighted_least_squares)
        return torch.cat(
            [
                explainer.attribute(
                    x[i : i + 1], target=target[i : i + 1], feature_mask=mask, n_samples=40, perturbations_per_eval=8
                )
                for i in range(len(x))
            ]
        )
    if method == "deeplift":
        return attr.DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target)
    if method == "deconvolution":
        return attr.Deconvolution(model).attribute(x, target=target)
    if method == "lrp":
        return attr.LRP(model).attribute(x, target=target)
    raise KeyError(method)


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation", "kernel_shap", "deeplift", "deconvolution", "lrp"])
def test_captum_methods_equal_a_direct_captum_call(method):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 28, 28)
    target = torch.tensor([1, 3])
    options = {"samples": 40} if method == "kernel_shap" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = saliency(model, x, method, target=target, batch_size=8, **options)
        expected = captum_direct(method, model, x, target)
    assert (result.attributions[:, 0] - expected).abs().max() <= TOLERANCE * expected.abs().max().clamp(min=1)


def test_gradient_shap_equals_captum_with_the_same_seed_and_baselines():
    from captum.attr import GradientShap

    from fmapviz.engines.saliency import make_baseline

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    result = saliency(model, x, "gradient_shap", target=[1, 2], samples=6, seed=3)
    references = torch.cat([torch.zeros_like(x[:1]), make_baseline(x[:1], "noise", seed=3)])
    torch.manual_seed(3)
    numpy.random.seed(3)
    expected = GradientShap(model).attribute(x, baselines=references, n_samples=6, target=torch.tensor([1, 2]))
    assert torch.allclose(result.attributions[:, 0], expected, atol=1e-6)


def test_lrp_and_deeplift_name_the_layer_captum_cannot_handle(resnet):
    import torchvision

    mobilenet = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"LRP: captum has no rule for layer 'features.0.2' \(ReLU6\)"):
        saliency(mobilenet, x, "lrp")
    saliency(resnet, x, "deeplift")  # the reused ReLU: run on a copy with one module per call (tests/test_unshare.py)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smooth_wraps_an_input_method_in_captums_noise_tunnel(kind):
    from captum.attr import NoiseTunnel, Saliency

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    result = saliency(
        model, x, "gradient", target=2, smooth=kind, smooth_samples=6, smooth_noise=0.2, seed=4, batch_size=3
    )
    torch.manual_seed(4)
    expected = NoiseTunnel(Saliency(model)).attribute(
        x,
        nt_type=kind,
        nt_samples=6,
        nt_samples_batch_size=3,
        stdevs=float(0.2 * (x.max() - x.min())),
        target=2,
        abs=False,
    )
    assert torch.allclose(result.attributions[:, 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="smooth='eigen' is not one of"):
        saliency(model, x, "gradient", smooth="eigen")


def test_every_method_has_a_description_and_every_new_cam_takes_a_layer():
    for name, entry in METHODS.items():
        assert entry.description and "\n" not in entry.description, name
    for name in ("xgradcam", "hirescam", "eigencam", "eigengradcam", "scorecam", "ablationcam", "smoothgrad_campp"):
        assert METHODS[name].takes_layer and METHODS[name].space == "layer"


# ---------------------------------------------------------------------------------- real weights


@real_weights
@pytest.mark.parametrize(
    ("method", "peer", "layer", "options"),
    [
        ("xgradcam", "XGradCAM", "features.14", {}),
        ("hirescam", "HiResCAM", "features.14", {}),
        ("gradcam", "GradCAM", "features.14", {"smooth": "aug"}),
        ("scorecam", "ScoreCAM", "features.1", {}),
        ("ablationcam", "AblationCAM", "features.0", {}),
        ("fullgrad", "FullGrad", None, {}),
    ],
)
def test_new_cams_match_pytorch_grad_cam_on_real_mobilenet(mobilenet, photos, method, peer, layer, options):
    model = mobilenet.model
    classes = [int(c) for c in model(photos).topk(3, 1).indices[:, 2]]  # a non-top class
    x = photos if method not in ("scorecam", "ablationcam") else F.interpolate(photos, size=(48, 48), mode="bilinear")
    expected = normalized(grad_cam_peer(peer, model, layer, x, classes, **peer_call(options)))
    assert (ours(model, x, method, layer, classes, **options) - expected).abs().max() <= TOLERANCE


def test_cli_lists_every_method_with_its_description_and_suggests_the_closest(capsys):
    from fmapviz.cli import main

    assert main(["saliency", "--method"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == len(METHODS)
    for line, (name, entry) in zip(listing, METHODS.items()):
        assert line.split()[0] == name and line.endswith(entry.description)
    assert main(["saliency", "resnet18", "cat.png", "--method", "scorcam"]) == 2
    assert "unknown saliency method 'scorcam'; closest: scorecam" in capsys.readouterr().err


@real_weights
def test_grad_cam_plus_plus_differs_from_each_peer_only_by_its_written_definition(mobilenet, photos):
    """Grad-CAM++ (Chattopadhay et al., 2018, eq. 19): alpha = g² / (2g² + sum(A) g³), w = sum(alpha relu(g)).

    fmapviz divides exactly. pytorch-grad-cam adds 1e-6 to the denominator, which matters where it is
    near zero: at features.7 of mobilenet_v2 (a linear bottleneck, so sum(A) can be negative) some
    positions with g > 0 have 2 + sum(A) g <= 0. torchcam's alpha is g² (its in-place division acts on
    a boolean-masked copy). Each peer is reproduced to 1e-4 by fmapviz's formula with its variant.
    """
    from torchcam.methods import GradCAMpp

    model, layer = mobilenet.model, "features.7"
    classes = [int(c) for c in model(photos).topk(10, 1).indices[:, 9]]
    with fmapviz.capture(model, layer, keep_grad=True) as maps:
        scores = model(photos)
    activation = maps[layer]
    grad = torch.autograd.grad(scores.gather(1, torch.tensor(classes)[:, None]).sum(), activation)[0]
    activation = activation.detach()

    def cam(alpha: torch.Tensor) -> torch.Tensor:
        weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
        low = (weights * activation).sum(1).clamp(min=0)[:, None]
        return normalized(F.interpolate(low, size=photos.shape[-2:], mode="bilinear", align_corners=False)[:, 0])

    denominator = 2 * grad.pow(2) + activation.sum((2, 3), keepdim=True) * grad.pow(3)
    paper = cam(grad.pow(2) / torch.where(denominator != 0, denominator, torch.ones_like(denominator)))
    assert (ours(model, photos, "gradcam++", layer, classes) - paper).abs().max() <= TOLERANCE
    assert ((denominator <= 0) & (grad > 0)).any()  # where the epsilon changes alpha most
    with_epsilon = cam(torch.where(grad != 0, grad.pow(2) / (denominator + 1e-6), torch.zeros_like(grad)))
    peer = normalized(grad_cam_peer("GradCAMPlusPlus", model, layer, photos, classes))
    assert (peer - with_epsilon).abs().max() <= TOLERANCE
    with GradCAMpp(model, layer) as extractor:
        torchcam_map = extractor(classes, model(photos))[0]
    torchcam_map = F.interpolate(torchcam_map[:, None], size=photos.shape[-2:], mode="bilinear", align_corners=False)
    assert (normalized(torchcam_map[:, 0]) - cam(grad.pow(2))).abs().max() <= TOLERANCE
