"""The CAM family beyond Grad-CAM: XGrad-CAM, HiRes-CAM, Eigen-CAM, EigenGrad-CAM, Score-CAM,
Ablation-CAM, FullGrad and Smooth Grad-CAM++.

Gradient CAMs are weighings ``(activation, gradient) -> (N, C, h, w)`` weighted activations for
:func:`~.cam_methods.cam` (their channel sum is the map, or their first principal component with
``smooth="eigen"``). Score-CAM and Ablation-CAM are compute functions of their own: they score the
target on masked inputs (Score-CAM) or with one channel of the layer zeroed (Ablation-CAM), in
batches of ``batch_size`` rows, and accept a ``top=`` channel budget. Where a definition differs
between the papers and the peers (pytorch-grad-cam, torchcam), the docstring says which one is
followed and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks import call_number, layer_keys, module_name
from ..inference import channels_last, fast_forward
from .pipeline import Job, upsampled_maps
from .result import Attribution

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
                ablated[torch.arange(len(group)), group] = 0
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


# ------------------------------------------------------------------------------ compute functions


def reduce_channels(weighted: torch.Tensor, job: Job) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, h, w)``: the channel sum, or :func:`eigen_projection` with eigen smoothing."""
    return eigen_projection(weighted) if "eigen" in (job.options.get("smooth") or "") else weighted.sum(1)


def _scorer(job: Job, fast: bool = False) -> Scorer:
    """Score ``(B, K)`` target columns of an expanded batch (no gradient), rows mapped to images for class targets.

    ``fast``: score on :func:`~fmapviz.engines.inference.fast_forward` of the model (the same scores
    to float rounding, several times faster), for output targets (a unit target's layer is read by
    a hook on the model itself).
    """
    scoring = job
    if fast and job.target.unit is None:
        job.class_indices()  # top-k classes are chosen by the model itself
        scoring = replace(job, model=fast_forward(job.model))

    def run(inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        _, _, scores = scoring.forward_scores(inputs, rows=rows)
        return torch.stack(scores, 1)

    return run


def _layer_activations(job: Job) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One gradient-free forward: each layer's ``(N, C, h, w)`` map by capture key, and the ``(N, K)`` scores."""
    with torch.no_grad():
        _, maps, scores = job.forward_scores(job.x.detach(), job.layers)
    found: dict[str, torch.Tensor] = {}
    for name in job.layers:
        keys = layer_keys(maps, name)
        if len(keys) != 1:
            raise ValueError(f"Layer {name} gives {len(keys) or 'no'} maps before the target; name one 4-D layer.")
        if maps[keys[0]].dim() != 4:
            raise ValueError(f"Layer {keys[0]} has a {maps[keys[0]].dim()}-D output; CAM methods need (N, C, H, W).")
        found[keys[0]] = maps[keys[0]].detach()
    job.layers = list(found)
    return found, torch.stack(scores, 1)


def _weighted_maps(job: Job, activation: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, K, C)`` channel weights times the activation, reduced and upsampled: ``(N, K, H, W)``."""
    cams = [reduce_channels(weights[:, k, :, None, None] * activation, job) for k in range(weights.shape[1])]
    return upsampled_maps(torch.stack(cams, 1), job.x.shape[-2:], job.options["clamp"])


def score_cam(job: Job) -> Attribution:
    """Score-CAM (Wang et al., 2020): channels weighted by the score of the input masked by each channel."""
    activations, _ = _layer_activations(job)
    run = _scorer(job, fast=True)
    maps = {
        key: _weighted_maps(
            job, activation, score_cam_weights(job.x, activation, run, job.batch_size, job.options["top"])
        )
        for key, activation in activations.items()
    }
    return Attribution.of_layers(maps, job.layers)


def ablation_cam(job: Job) -> Attribution:
    """Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the score drop when each is zeroed."""
    activations, base = _layer_activations(job)
    run = _scorer(job)
    maps = {}
    for key, activation in activations.items():
        module = job.model.get_submodule(module_name(key))
        weights = ablation_cam_weights(
            job.model, module, call_number(key), job.x, activation, base, run, job.batch_size, job.options["top"]
        )
        maps[key] = _weighted_maps(job, activation, weights)
    return Attribution.of_layers(maps, job.layers)


def eigencam(job: Job) -> Attribution:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the activations' first principal component (no gradient, any target)."""
    activations, scores = _layer_activations(job)
    maps = {
        key: upsampled_maps(
            eigen_projection(activation)[:, None].expand(-1, scores.shape[1], -1, -1),
            job.x.shape[-2:],
            job.options["clamp"],
        )
        for key, activation in activations.items()
    }
    return Attribution.of_layers(maps, job.layers)


def fullgrad(job: Job) -> Attribution:
    """FullGrad (Srinivas & Fleuret, 2019): input gradient plus every conv/BatchNorm bias gradient."""
    names = fullgrad_layers(job.model)
    if not names:
        raise ValueError("FullGrad reads the biases of Conv2d and BatchNorm2d layers; this model has none.")
    x = job.x.detach().clone().requires_grad_(True)
    _, maps, scores = job.forward_scores(x, names)
    keys = [key for key in maps if module_name(key) in set(names)]
    biases = [fullgrad_bias(job.model.get_submodule(module_name(key))) for key in keys]
    columns = []
    for k, score in enumerate(scores):
        grads = torch.autograd.grad(score.sum(), [x] + [maps[key] for key in keys], retain_graph=k < len(scores) - 1)
        columns.append(fullgrad_map(x.detach(), grads[0], biases, list(grads[1:])))
    return Attribution(maps=torch.stack(columns, 1))


def smoothgrad_campp(job: Job) -> Attribution:
    """Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ on gradient moments averaged over noisy inputs.

    ``noise`` is the absolute std of the Gaussian input noise (torchcam's ``std``, default 0.3) and
    ``samples`` the noisy copies per image (torchcam's ``num_samples``, default 4); the draws come
    from a generator seeded by ``seed``, the same draws for every image.
    """
    activations, _ = _layer_activations(job)
    x = job.x.detach()
    samples = job.options["samples"]
    generator = torch.Generator(device=x.device).manual_seed(job.options["seed"])
    draws = torch.randn((samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    draws = draws * job.options["noise"]
    keys = list(activations)
    moments: dict[str, list[torch.Tensor]] = {}
    total = x.shape[0] * samples
    for start in range(0, total, job.batch_size):
        flat = torch.arange(start, min(start + job.batch_size, total), device=x.device)
        images, variants = flat // samples, flat % samples
        _, maps, scores = job.forward_scores(x[images] + draws[variants], job.layers, rows=images)
        found = [maps[layer_keys(maps, key)[0]] for key in keys]
        for k, score in enumerate(scores):
            grads = torch.autograd.grad(score.sum(), found, retain_graph=k < len(scores) - 1)
            for key, grad in zip(keys, grads):
                sums = moments.setdefault(f"{key}/{k}", [torch.zeros_like(activations[key]) for _ in range(3)])
                for power, total_ in enumerate(sums, start=1):
                    total_.index_add_(0, images, grad.pow(power))
    maps_out = {}
    for key, activation in activations.items():
        cams = []
        for k in range(len(moments) // len(keys)):
            grad_1, grad_2, grad_3 = (value / samples for value in moments[f"{key}/{k}"])
            cams.append(reduce_channels(smoothgrad_campp_weights(activation, grad_1, grad_2, grad_3), job))
        maps_out[key] = upsampled_maps(torch.stack(cams, 1), x.shape[-2:], job.options["clamp"])
    return Attribution.of_layers(maps_out, job.layers)
