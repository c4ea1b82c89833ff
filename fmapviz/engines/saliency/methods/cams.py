"""The CAM methods, each registered here: Grad-CAM, Grad-CAM++, LayerCAM, Guided Grad-CAM, XGrad-CAM,
HiRes-CAM, Eigen-CAM, EigenGrad-CAM, Score-CAM, Ablation-CAM, FullGrad and Smooth Grad-CAM++.

A gradient CAM is a weighing ``(activation, gradient) -> (N, C, h, w)`` weighted activations,
registered with :func:`gradient_cam`: :func:`cam` makes it a compute function over
:func:`~fmapviz.engines.saliency.pipeline.layer_pass` (the map is the weighted activations' channel
sum, or their first principal component with ``smooth="eigen"``). A CAM method that needs more than
one backward (Score-CAM's masked forwards, Ablation-CAM's zeroed channels, FullGrad's biases, Smooth
Grad-CAM++'s noisy samples) is a compute function of its own on the same
:class:`~fmapviz.engines.saliency.pipeline.Job`; its arithmetic is in :mod:`.cam_weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from ....hooks import call_number, layer_keys, module_name
from ....model_input import at_least_float32
from ...inference import fast_forward
from ...seeding import generator, randn
from ..pipeline import Job, Weigh, layer_pass, upsampled_maps
from ..registry import CAM_OPTIONS, CAM_SMOOTH, SEED, Compute, Option, register
from ..result import Attribution
from .cam_weights import (
    Scorer,
    ablation_cam_weights,
    eigen_projection,
    fullgrad_bias,
    fullgrad_layers,
    fullgrad_map,
    score_cam_weights,
    smoothgrad_campp_weights,
)
from .gradients import guided_backprop

GRADIENT_CAM = {**CAM_OPTIONS, **CAM_SMOOTH}
AUG_SMOOTH = {"smooth": Option(None, "'aug': test-time augmentation (pytorch-grad-cam's aug_smooth)", (None, "aug"))}
TOP = {"top": Option(None, "score only the k channels of highest mean activation (None: all); the rest weigh 0")}
BATCHED_CAM = {**CAM_OPTIONS, **CAM_SMOOTH, **TOP}


def layer_method(name: str, description: str, options: Mapping[str, Option]) -> Callable[[Compute], Compute]:
    """:func:`~fmapviz.engines.saliency.registry.register` for a method that takes layers and shows positive maps."""
    return register(name, space="layer", view="positive", description=description, options=options, takes_layer=True)


def gradient_cam(
    name: str, description: str, options: Mapping[str, Option] = GRADIENT_CAM, eigen: bool = False
) -> Callable[[Weigh], Weigh]:
    """Register the decorated weighing ``(activation, gradient) -> (N, C, h, w)`` as CAM method ``name``.

    The registered compute function is :func:`cam` of the weighing; the weighing is returned unchanged.
    """

    def add(weigh: Weigh) -> Weigh:
        layer_method(name, description, options)(cam(weigh, eigen))
        return weigh

    return add


def cam(weigh: Weigh, eigen: bool = False) -> Compute:
    """The compute function of a CAM method from its weighing ``(activation, gradient) -> (N, C, h, w)``.

    The map is the weighted activations' channel sum, or their first principal component
    (:func:`~.cam_weights.eigen_projection`) when ``eigen`` or with ``smooth="eigen"``.
    """

    def compute(job: Job) -> Attribution:
        def reduced(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            weighted = weigh(at_least_float32(activation), at_least_float32(grad))  # float16 models too
            return eigen_projection(weighted) if eigen else reduce_channels(weighted, job)

        return Attribution.of_layers(layer_pass(job, reduced), job.layers)

    compute.__doc__ = weigh.__doc__
    return compute


def reduce_channels(weighted: torch.Tensor, job: Job) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, h, w)``: the channel sum, or :func:`eigen_projection` with eigen smoothing."""
    return eigen_projection(weighted) if "eigen" in (job.options.get("smooth") or "") else weighted.sum(1)


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


# ------------------------------------------------------------------------------ the methods, in listing order


@gradient_cam("gradcam", "Grad-CAM (Selvaraju et al., 2017)")
def gradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient."""
    return grad.mean((2, 3), keepdim=True) * activation


@gradient_cam("gradcam++", "Grad-CAM++ (Chattopadhay et al., 2018)")
def gradcam_plus_plus_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., 2018), with the usual exponential-score closed form."""
    grad_2, grad_3 = grad.pow(2), grad.pow(3)
    denominator = 2 * grad_2 + activation.sum((2, 3), keepdim=True) * grad_3
    alpha = grad_2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
    return weights * activation


@gradient_cam("layercam", "LayerCAM (Jiang et al., 2021)")
def layercam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021): each position weighted by its own positive gradient."""
    return grad.clamp(min=0) * activation


@register(
    "guided_gradcam",
    space="input",
    view="abs",
    description="guided backprop times Grad-CAM (Selvaraju et al., 2017)",
    options=CAM_OPTIONS,
    takes_layer=True,
)
def guided_gradcam(job: Job) -> Attribution:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times the upsampled Grad-CAM map."""
    cams = layer_pass(job, lambda activation, grad: gradcam_weights(activation, grad).sum(1))
    guided = guided_backprop(job).attributions
    return Attribution.of_input(guided * cams[job.layers[-1]].unsqueeze(2), layer_maps=cams)


@gradient_cam("xgradcam", "XGrad-CAM (Fu et al., 2020): gradients weighted by the normalized activations")
def xgradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020): channel weight = sum(grad * A) / sum(A), as pytorch-grad-cam."""
    weights = (grad * activation).sum((2, 3), keepdim=True) / (activation.sum((2, 3), keepdim=True) + 1e-7)
    return weights * activation


@gradient_cam("hirescam", "HiRes-CAM (Draelos & Carin, 2020): each position's activation times its own gradient")
def hirescam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """HiRes-CAM (Draelos & Carin, 2020): each position's activation times its own gradient."""
    return grad * activation


@layer_method(
    "eigencam",
    "Eigen-CAM (Muhammad & Yeasin, 2020): first principal component of the activations, no gradient",
    {**CAM_OPTIONS, **AUG_SMOOTH},
)
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


gradient_cam(  # HiRes-CAM's weighing, reduced to its first principal component
    "eigengradcam",
    "EigenGrad-CAM: first principal component of activation times gradient (pytorch-grad-cam)",
    {**CAM_OPTIONS, "smooth": CAM_SMOOTH["smooth"]},
    eigen=True,
)(hirescam_weights)


@layer_method(
    "scorecam",
    "Score-CAM (Wang et al., 2020): channels weighted by the score of the input they mask",
    BATCHED_CAM,
)
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


@layer_method(
    "ablationcam",
    "Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the score drop when zeroed",
    BATCHED_CAM,
)
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


@register(
    "fullgrad",
    space="input",
    view="positive",
    description="FullGrad (Srinivas & Fleuret, 2019): input gradient plus every bias gradient",
    options=AUG_SMOOTH,
)
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


@layer_method(
    "smoothgrad_campp",
    "Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ on gradients averaged over noisy inputs",
    {
        **CAM_OPTIONS,
        "samples": Option(4, "noisy copies per image (torchcam's num_samples)"),
        "noise": Option(0.3, "absolute std of the input noise (torchcam's std)"),
        **SEED,
    },
)
def smoothgrad_campp(job: Job) -> Attribution:
    """Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ on gradient moments averaged over noisy inputs.

    ``noise`` is the absolute std of the Gaussian input noise (torchcam's ``std``, default 0.3) and
    ``samples`` the noisy copies per image (torchcam's ``num_samples``, default 4); the draws come
    from a generator seeded by ``seed``, the same draws for every image.
    """
    activations, _ = _layer_activations(job)
    x = job.x.detach()
    samples = job.options["samples"]
    draws = randn((samples, *x.shape[1:]), generator(job.options["seed"]), like=x)
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
