"""The arithmetic of the CAM methods beyond a gradient weighing, with no registration: Eigen-CAM's
principal component, Smooth Grad-CAM++'s moment weights, Score-CAM's masked scores, Ablation-CAM's
score drops and FullGrad's bias terms. The compute functions that use them, and the methods' registry
entries, are in :mod:`.cams`.

Score-CAM and Ablation-CAM score the target on masked inputs (Score-CAM) or with one channel of the
layer zeroed (Ablation-CAM), in batches of ``batch_size`` rows, and accept a ``top=`` channel budget.
Where a definition differs between the papers and the peers (pytorch-grad-cam, torchcam), the
docstring says which one is followed and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...._torch_internals import is_batch_norm
from ...inference import channels_last

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``run(inputs, rows) -> (B, K)``: the K target scores of a batch whose row ``b`` comes from image ``rows[b]``."""


# ------------------------------------------------------------------------------ principal component and moments


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
    inputs = channels_last(x)  # the masked batches then come out in the layout the scorer runs fastest on
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (images, channels, (B, K) scores)
    with torch.no_grad():
        for first in range(0, len(jobs), batch_size):
            rows, chans = jobs[first : first + batch_size].unbind(1)
            masks = F.interpolate(
                activation[rows, chans][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True
            )
            low = masks.amin((2, 3), keepdim=True)
            masks = (masks - low) / (masks.amax((2, 3), keepdim=True) - low + 1e-8)
            parts.append((rows, chans, run(inputs[rows] * masks, rows)))
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


SUFFIX_VALUES = 1 << 25
"""Ablation-CAM with a shared prefix: ablated copies per batch, up to this many activation values (128 MB float32)."""


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
    the layer broadcast over them). As those rows only run the rest of the network, a batch holds up
    to :data:`SUFFIX_VALUES` activation values (every channel of a late layer in one batch) rather
    than ``batch_size`` rows. A model that cannot take that (it concatenates such a tensor with the
    layer's descendants) falls back to ``batch_size`` copies of the image per batch.
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
    rows = max(batch_size, SUFFIX_VALUES // activation[0].numel())  # while the prefix is shared, rows are cheap
    with torch.no_grad():
        for image in range(batch):
            picked = chosen[image].nonzero().flatten()
            for first in range(0, len(picked), rows if shared_prefix[0] else batch_size):
                group = picked[first : first + (rows if shared_prefix[0] else batch_size)]
                ablated = activation[image].expand(len(group), -1, -1, -1).clone()
                ablated[torch.arange(len(group), device=group.device), group] = 0
                images = torch.full((len(group),), image, device=x.device)
                scores = None
                with _replaced_output(model, module, call, lambda _output, ablated=ablated: ablated):
                    if shared_prefix[0]:
                        try:
                            scores = run(x[image : image + 1], images)
                        except RuntimeError:
                            shared_prefix[0] = False
                        if scores is not None and scores.shape[0] != len(group):
                            shared_prefix[0], scores = False, None
                    if scores is None:
                        scores = run(x[image : image + 1].expand(len(group), -1, -1, -1), images)
                weights[image, :, group] = ((base[image][:, None] - scores.T) / base[image][:, None]).to(weights.dtype)
    return weights


# ------------------------------------------------------------------------------ FullGrad


def fullgrad_bias(module: nn.Module) -> torch.Tensor:
    """The bias a FullGrad layer adds: a conv's bias, or a BatchNorm's ``b - mean * w / sqrt(var + eps)``."""
    if is_batch_norm(module):
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
