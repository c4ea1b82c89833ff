"""The CAM family beyond Grad-CAM, as plain tensor functions the saliency registry calls.

Gradient CAMs take a layer's ``(N, C, h, w)`` activation and its gradient and return weighted
activations (their channel sum is the map, or their first principal component with eigen
smoothing). Score-CAM and Ablation-CAM take a ``run(inputs, rows) -> (B, K)`` scorer (the model
and the targets of the images ``rows`` come from) and run their masked forwards in batches.
Every function returns maps at the layer's resolution; the caller clamps and upsamples.

Where a definition differs between the papers and the peers (pytorch-grad-cam, torchcam), the
function's docstring says which one it follows and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``run(inputs, rows) -> (B, K)``: the K target scores of a batch whose row ``b`` comes from image ``rows[b]``."""


# ------------------------------------------------------------------------------ gradient CAMs


def xgradcam(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020): channel weight = sum(grad * A) / sum(A), as pytorch-grad-cam."""
    weights = (grad * activation).sum((2, 3), keepdim=True) / (activation.sum((2, 3), keepdim=True) + 1e-7)
    return weights * activation


def hirescam(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """HiRes-CAM (Draelos & Carin, 2020): each position's activation times its own gradient."""
    return grad * activation


def eigencam(activation: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the activations, reduced by :func:`eigen_projection`."""
    return activation


def eigen_projection(weighted: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` projection of each image's centred ``(h*w, C)`` matrix on its first principal direction.

    A singular vector's sign is arbitrary (numpy and torch's LAPACK builds pick different ones for
    the same matrix, so pytorch-grad-cam's maps flip from one machine to another). Here the sign is
    fixed: the projection correlates positively with the channel sum of ``weighted`` (the map
    without eigen smoothing), so the highlighted region is the one the plain map highlights.
    """
    batch, _, height, width = weighted.shape
    rows = torch.nan_to_num(weighted.float(), nan=0.0).flatten(2).transpose(1, 2)  # (N, h*w, C)
    rows = rows - rows.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    projection = (rows @ vh[:, 0, :, None])[..., 0]  # (N, h*w)
    plain = rows.sum(2)
    sign = torch.where((projection * (plain - plain.mean(1, keepdim=True))).sum(1) < 0, -1.0, 1.0)
    return (projection * sign[:, None]).reshape(batch, height, width).to(weighted.dtype)


def smoothgrad_campp_weights(
    activation: torch.Tensor, grad_1: torch.Tensor, grad_2: torch.Tensor, grad_3: torch.Tensor
) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al., 2019) from gradient moments averaged over noisy samples.

    ``alpha = mean(g^2) / (2 mean(g^2) + sum_ab A(a,b) * mean(g^3))`` and
    ``w = sum_ij alpha * relu(mean(g))``, with ``A`` the clean image's activation, as in the paper.
    torchcam's ``SmoothGradCAMpp`` differs in two places: it sums ``A * g^3`` position by position
    inside the denominator, and it takes ``relu`` of the last sample's gradient instead of the
    mean; with one sample and a constant-over-space ``g^3`` the two agree.

    Returns:
        ``(N, C, h, w)`` weighted activations.
    """
    denominator = 2 * grad_2 + activation.sum((2, 3), keepdim=True) * grad_3
    alpha = grad_2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * grad_1.clamp(min=0)).sum((2, 3), keepdim=True)
    return weights * activation


# ------------------------------------------------------------------------------ masked forwards


def _chosen_channels(activation: torch.Tensor, top: int | None) -> torch.Tensor:
    """``(N, C)`` bool: the ``top`` channels of each image by mean activation (all when None)."""
    batch, channels = activation.shape[:2]
    if top is None or top >= channels:
        return torch.ones(batch, channels, dtype=torch.bool, device=activation.device)
    if top < 1:
        raise ValueError(f"top= must be a positive number of channels, not {top}.")
    best = activation.flatten(2).mean(2).topk(top, dim=1).indices
    return torch.zeros(batch, channels, dtype=torch.bool, device=activation.device).scatter_(1, best, True)


def score_cam_weights(
    x: torch.Tensor, activation: torch.Tensor, run: Scorer, batch_size: int = 32, top: int | None = None
) -> torch.Tensor:
    """Score-CAM (Wang et al., 2020) channel weights: softmax over channels of the score of ``x * mask_c``.

    Each mask is the channel's map upsampled to the input (bilinear, ``align_corners=True``) and
    min-max scaled, as pytorch-grad-cam does. A channel whose map is constant gives the all-zero
    mask, so its score is computed once per image and shared (the original Score-CAM code skips
    such channels); the rest run in batches of ``batch_size`` rows, several images per batch.
    With ``top=k`` only the k channels of highest mean activation are scored, the others get
    weight 0 (an approximation that trades accuracy for a k/C share of the forwards).

    Returns:
        ``(N, K, C)`` weights, one set per target column.
    """
    batch, channels = activation.shape[:2]
    flat = activation.flatten(2)
    chosen = _chosen_channels(activation, top)
    constant = (flat.amax(2) == flat.amin(2)) & chosen
    jobs = (chosen & ~constant).nonzero()  # (J, 2): image, channel
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (images, channels, (B, K) scores)
    with torch.no_grad():
        for first in range(0, len(jobs), batch_size):
            rows, chans = jobs[first : first + batch_size].unbind(1)
            masks = F.interpolate(
                activation[rows, chans][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True
            )
            low = masks.amin((2, 3), keepdim=True)
            masks = (masks - low) / (masks.amax((2, 3), keepdim=True) - low + 1e-8)
            parts.append((rows, chans, run(x[rows] * masks, rows)))
        images = constant.any(1).nonzero().flatten()
        if len(images):  # every constant channel's mask is all zeros: one forward per image
            zero_scores = run(torch.zeros_like(x[images]), images)
            rows, chans = constant[images].nonzero().unbind(1)
            parts.append((images[rows], chans, zero_scores[rows]))
    targets = parts[0][2].shape[1]
    scores = parts[0][2].new_full((batch, targets, channels), float("-inf"))
    for rows, chans, values in parts:
        scores[rows, :, chans] = values
    return torch.softmax(scores, dim=2)


@contextmanager
def _replaced_output(
    model: nn.Module, module: nn.Module, call: int, replacement: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the output of ``module``'s ``call``-th call per forward of ``model``; hooks removed on exit."""
    count = [0]

    def start(_model: nn.Module, _args: Any) -> None:
        count[0] = 0

    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
        count[0] += 1
        return replacement(output) if count[0] == call else None

    handles = [model.register_forward_pre_hook(start), module.register_forward_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def ablation_cam_weights(
    model: nn.Module,
    module: nn.Module,
    call: int,
    x: torch.Tensor,
    activation: torch.Tensor,
    base: torch.Tensor,
    run: Scorer,
    batch_size: int = 32,
    top: int | None = None,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, 2020) weights: ``(y - y_k) / y`` when channel k is set to 0.

    Only the part of the network after the layer depends on the ablated channel, so the part
    before it runs once per batch on one image: a forward hook swaps the layer's one-row output
    for ``B`` ablated copies and the rest of the network runs on ``B`` rows (tensors from before
    the layer broadcast over them). A model that cannot take that (it concatenates such a tensor
    with the layer's descendants) falls back to running ``B`` copies of the image.
    The ablated value is 0, as in the paper; pytorch-grad-cam also uses 0 when the layer's
    minimum is 0 (any post-ReLU layer) but ``min - 1e7`` otherwise.

    Args:
        module, call: the layer and which of its calls in one forward is the one to ablate.
        activation: ``(N, C, h, w)`` the layer's map for ``x``.
        base: ``(N, K)`` the unablated target scores.
        top: score only the k channels of highest mean activation; the others get weight 0.

    Returns:
        ``(N, K, C)`` weights.
    """
    batch, channels = activation.shape[:2]
    chosen = _chosen_channels(activation, top)
    weights = base.new_zeros(batch, base.shape[1], channels)
    shared_prefix = [True]
    with torch.no_grad():
        for image in range(batch):
            picked = chosen[image].nonzero().flatten()
            for first in range(0, len(picked), batch_size):
                group = picked[first : first + batch_size]
                ablated = activation[image].expand(len(group), -1, -1, -1).clone()
                ablated[torch.arange(len(group)), group] = 0
                rows = torch.full((len(group),), image, device=x.device)
                scores = None
                with _replaced_output(model, module, call, lambda _output, ablated=ablated: ablated):
                    if shared_prefix[0]:
                        try:
                            scores = run(x[image : image + 1], rows)
                        except RuntimeError:
                            shared_prefix[0] = False
                        if scores is not None and scores.shape[0] != len(group):
                            shared_prefix[0], scores = False, None
                    if scores is None:
                        scores = run(x[image : image + 1].expand(len(group), -1, -1, -1), rows)
                weights[image, :, group] = ((base[image][:, None] - scores.T) / base[image][:, None]).to(weights.dtype)
    return weights


# ------------------------------------------------------------------------------ FullGrad


def fullgrad_bias(module: nn.Module) -> torch.Tensor:
    """The bias a FullGrad layer adds: a conv's bias, or a BatchNorm's ``b - mean * w / sqrt(var + eps)``."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        scale = module.weight if module.weight is not None else torch.ones_like(module.running_var)
        shift = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return (shift - module.running_mean * scale / torch.sqrt(module.running_var + module.eps)).detach()
    return module.bias.detach()


def fullgrad_layers(model: nn.Module) -> list[str]:
    """Names of the modules FullGrad reads: every ``Conv2d`` and ``BatchNorm2d`` with a bias."""
    return [
        name
        for name, module in model.named_modules()
        if type(module) in (nn.Conv2d, nn.BatchNorm2d) and getattr(module, "bias", None) is not None
    ]


def _scaled_channels(values: torch.Tensor) -> torch.Tensor:
    """Each ``(h, w)`` map min-max scaled on its own, then summed over channels: ``(N, h, w)``."""
    low = values.amin((2, 3), keepdim=True)
    return ((values - low) / (values.amax((2, 3), keepdim=True) - low + 1e-7)).sum(1)


def fullgrad_map(
    x: torch.Tensor, input_grad: torch.Tensor, biases: list[torch.Tensor], grads: list[torch.Tensor]
) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret, 2019): ``psi(|x * dx|) + sum_l sum_c psi(|b_c * g_c|)``, ``(N, H, W)``.

    ``psi`` scales each channel's map to [0, 1] and upsamples it to the input (as pytorch-grad-cam
    does, channel by channel); scaling and bilinear upsampling commute, so each layer's channels
    are summed at the layer's resolution and upsampled once.
    """
    total = _scaled_channels((input_grad * x).abs())
    for bias, grad in zip(biases, grads):
        summed = _scaled_channels((bias[None, :, None, None] * grad).abs())
        total = total + F.interpolate(summed[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return total


# ------------------------------------------------------------------------------ augmentation


AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)
"""pytorch-grad-cam's ``aug_smooth``: horizontal flip (or not) times brightness factors 0.9, 1, 1.1."""


def augmented(x: torch.Tensor) -> torch.Tensor:
    """The six test-time augmentations of ``x`` stacked along the batch: ``(6 * N, C, H, W)``."""
    return torch.cat([(x.flip(-1) if flip else x) * factor for flip, factor in AUGMENTATIONS])


def deaugmented_mean(maps: torch.Tensor, batch: int) -> torch.Tensor:
    """Average the ``(6 * N, ..., H, W)`` maps of :func:`augmented` inputs, each min-max scaled and flipped back.

    pytorch-grad-cam scales each augmentation's upsampled map to [0, 1] before averaging, so the
    smoothed map is in [0, 1] whatever the method's scale.
    """
    low = maps.flatten(-2).amin(-1)[..., None, None]
    scaled = (maps - low) / (maps.flatten(-2).amax(-1)[..., None, None] - low + 1e-7)
    parts = scaled.split(batch)
    return torch.stack([part.flip(-1) if flip else part for part, (flip, _) in zip(parts, AUGMENTATIONS)]).mean(0)


# ------------------------------------------------------------------------------ through captum


Forward = Callable[[torch.Tensor], torch.Tensor]


def patch_mask(height: int, width: int, patch: int, device: torch.device | None = None) -> torch.Tensor:
    """``(1, 1, H, W)`` feature ids of a grid of ``patch`` x ``patch`` squares (the last row and column may be smaller).

    Example:
        >>> patch_mask(4, 4, 2)[0, 0]
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    if patch < 1:
        raise ValueError(f"patch= must be a positive number of pixels, not {patch}.")
    rows = torch.arange(height, device=device) // patch
    columns = torch.arange(width, device=device) // patch
    per_row = (width + patch - 1) // patch
    return (rows[:, None] * per_row + columns[None, :])[None, None]


def occlusion(
    forward: Forward,
    x: torch.Tensor,
    target: torch.Tensor | None,
    baseline: torch.Tensor,
    patch: int,
    stride: int,
    batch_size: int,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, 2014) through captum: slide a ``patch`` square of ``baseline`` with ``stride``."""
    from captum.attr import Occlusion

    channels = x.shape[1]
    return Occlusion(forward).attribute(
        x,
        sliding_window_shapes=(channels, patch, patch),
        strides=(channels, stride, stride),
        baselines=baseline,
        target=target,
        perturbations_per_eval=batch_size,
    )


def feature_ablation(
    forward: Forward, x: torch.Tensor, target: torch.Tensor | None, baseline: torch.Tensor, patch: int, batch_size: int
) -> torch.Tensor:
    """Feature ablation through captum over a grid of ``patch`` squares (all colour channels of a square together)."""
    from captum.attr import FeatureAblation

    mask = patch_mask(x.shape[-2], x.shape[-1], patch, x.device)
    return FeatureAblation(forward).attribute(
        x, baselines=baseline, target=target, feature_mask=mask, perturbations_per_eval=batch_size
    )


def kernel_shap(
    forward: Forward,
    x: torch.Tensor,
    target: torch.Tensor | None,
    baseline: torch.Tensor,
    patch: int,
    samples: int,
    batch_size: int,
) -> torch.Tensor:
    """KernelSHAP (Lundberg & Lee, 2017) through captum over a grid of ``patch`` squares.

    captum's KernelShap explains one image per call, so the batch is explained image by image.
    """
    from captum.attr import KernelShap

    mask = patch_mask(x.shape[-2], x.shape[-1], patch, x.device)
    method = KernelShap(forward)
    return torch.cat(
        [
            method.attribute(
                x[i : i + 1],
                baselines=baseline[i : i + 1],
                target=None if target is None else target[i : i + 1],
                feature_mask=mask,
                n_samples=samples,
                perturbations_per_eval=batch_size,
            )
            for i in range(x.shape[0])
        ]
    )


def gradient_shap(
    forward: Forward, x: torch.Tensor, target: torch.Tensor | None, baselines: torch.Tensor, samples: int, stdev: float
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee, 2017) through captum: expected gradients from ``baselines`` with input noise."""
    from captum.attr import GradientShap

    return GradientShap(forward).attribute(x, baselines=baselines, n_samples=samples, stdevs=stdev, target=target)


class ScoreModule(nn.Module):
    """``model`` followed by ``score``, as an ``nn.Module`` (captum's DeepLift, LRP and Deconvolution need one)."""

    def __init__(self, model: nn.Module, score: Forward) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.model(x))


def deeplift(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, baseline: torch.Tensor) -> torch.Tensor:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017), through captum."""
    from captum.attr import DeepLift

    try:
        return DeepLift(model).attribute(x, baselines=baseline, target=target)
    except RuntimeError as error:
        reused = reused_modules(model, x)
        if not reused:
            raise
        raise ValueError(
            f"DeepLift: module '{reused[0]}' runs more than once per forward, and captum's DeepLift needs "
            "each nonlinearity to be its own module (torchvision's ResNet reuses one ReLU per block). "
            "Use a model with one module per call, or gradient_shap / integrated_gradients."
        ) from error


def deconvolution(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Deconvolution (Zeiler & Fergus, 2014) through captum: ReLUs pass positive gradients only."""
    from captum.attr import Deconvolution

    return Deconvolution(model).attribute(x, target=target)


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Layer-wise relevance propagation (Bach et al., 2015), epsilon rule, through captum.

    Raises:
        ValueError: a leaf module has no LRP rule in captum (it names the module and its type).
    """
    from captum.attr import LRP
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

    supported = tuple(SUPPORTED_LAYERS_WITH_RULES) + tuple(SUPPORTED_NON_LINEAR_LAYERS) + (nn.Flatten, nn.Identity)
    for name, module in model.named_modules():
        if not list(module.children()) and not isinstance(module, supported) and not isinstance(model, ScoreModule):
            raise ValueError(
                f"LRP: captum has no rule for layer '{name}' ({type(module).__name__}); it supports "
                f"{', '.join(sorted({t.__name__ for t in supported}))}. Use another method or replace that layer."
            )
    return LRP(model).attribute(x, target=target)


def reused_modules(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the leaf modules that run more than once in one forward of ``x[:1]`` (no gradient)."""
    counts: dict[str, int] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, _a, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, count in counts.items() if count > 1]
