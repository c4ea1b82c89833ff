"""Input-space methods: one function each, ``compute(job) -> Attribution`` with per-channel attributions."""

from __future__ import annotations

import torch

from .baselines import make_baseline
from .cam_methods import gradcam_weights
from .guided import guided_relus
from .pipeline import Job, averaged_gradients, input_gradients, layer_pass
from .result import Attribution


def gradient(job: Job) -> Attribution:
    """Vanilla gradient (Simonyan et al., 2014): d score / d input."""
    return Attribution.of_input(input_gradients(job))


def input_x_gradient(job: Job) -> Attribution:
    """Input times gradient (Shrikumar et al., 2016)."""
    return Attribution.of_input(input_gradients(job) * job.x.unsqueeze(1))


def smoothgrad(job: Job) -> Attribution:
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of each image.

    The noise's standard deviation is ``noise`` times each image's own value range (max - min),
    as in the paper, so an image's map does not depend on its batch neighbours; every image gets
    the same ``samples`` standard-normal draws from a generator seeded by ``seed`` (the caller's
    RNG state is left untouched).
    """
    x = job.x.detach()
    noise, samples = job.options["noise"], job.options["samples"]
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    generator = torch.Generator(device=x.device).manual_seed(job.options["seed"])
    draws = torch.randn((samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)

    def noisy(images: torch.Tensor, variants: torch.Tensor) -> torch.Tensor:
        return x[images] + sigma[images].reshape(-1, 1, 1, 1) * draws[variants]

    return Attribution.of_input(averaged_gradients(job, samples, noisy))


def integrated_gradients(job: Job) -> Attribution:
    """Integrated Gradients (Sundararajan et al., 2017) via captum, chunked by ``batch_size``.

    ``baseline``: ``"black"`` (zeros, or true black if ``mean`` and ``std`` of the input
    normalization are given), ``"blur"``, ``"rise_blur"``, ``"noise"`` (seeded by ``seed``) or a
    tensor; ``integration``: captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
    """
    from captum.attr import IntegratedGradients

    options = job.options
    baseline = make_baseline(job.x, options["baseline"], options["mean"], options["std"], options["seed"])
    method = IntegratedGradients(job.score_function())
    x = job.x.detach()

    def attribute(column: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return method.attribute(
            x,
            baselines=baseline,
            target=column,
            n_steps=options["steps"],
            method=options["integration"],
            internal_batch_size=job.batch_size,
            return_convergence_delta=True,
        )

    attributions, delta = job.per_target(attribute)
    return Attribution.of_input(attributions, delta=delta)


def guided_backprop(job: Job) -> Attribution:
    """Guided backpropagation (Springenberg et al., 2015): only positive gradients pass ReLUs."""
    with guided_relus(job.model):
        return Attribution.of_input(input_gradients(job))


def guided_gradcam(job: Job) -> Attribution:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times the upsampled Grad-CAM map."""
    cams = layer_pass(job, lambda activation, grad: gradcam_weights(activation, grad).sum(1))
    guided = guided_backprop(job).attributions
    return Attribution.of_input(guided * cams[job.layers[-1]].unsqueeze(2), layer_maps=cams)
