"""Gradient methods in input space: the gradient, input x gradient, SmoothGrad, Integrated Gradients and
guided backpropagation, each a ``compute(job) -> Attribution`` with per-channel attributions, registered here."""

from __future__ import annotations

import torch

from ...seeding import generator, randn
from ..guided import guided_relus
from ..pipeline import Job, attribution_per_target, averaged_gradients, input_gradients
from ..registry import NOISE_TUNNEL, SEED, Option, register
from ..result import Attribution

IG_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


@register(
    "gradient",
    space="input",
    view="max_abs",
    description="vanilla gradient (Simonyan et al., 2014)",
    options=NOISE_TUNNEL,
)
def gradient(job: Job) -> Attribution:
    """Vanilla gradient (Simonyan et al., 2014): d score / d input."""
    return Attribution.of_input(input_gradients(job))


@register(
    "input_x_gradient",
    space="input",
    view="signed",
    description="input times gradient (Shrikumar et al., 2016)",
    options=NOISE_TUNNEL,
)
def input_x_gradient(job: Job) -> Attribution:
    """Input times gradient (Shrikumar et al., 2016)."""
    return Attribution.of_input(input_gradients(job) * job.x.unsqueeze(1))


@register(
    "smoothgrad",
    space="input",
    view="abs",
    description="gradient averaged over noisy copies (Smilkov et al., 2017)",
    options={
        "noise": Option(0.15, "noise std as a fraction of each image's value range (max - min)"),
        "samples": Option(25, "noisy copies per image"),
        **SEED,
    },
)
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
    draws = randn((samples, *x.shape[1:]), generator(job.options["seed"]), like=x)

    def noisy(images: torch.Tensor, variants: torch.Tensor) -> torch.Tensor:
        return x[images] + sigma[images].reshape(-1, 1, 1, 1) * draws[variants]

    return Attribution.of_input(averaged_gradients(job, samples, noisy))


@register(
    "integrated_gradients",
    space="input",
    view="signed",
    description="Integrated Gradients (Sundararajan et al., 2017), via captum",
    options={
        "steps": Option(50, "integration steps"),
        "baseline": Option("black", "'black', 'blur', 'rise_blur', 'noise' or a tensor"),
        "integration": Option("gausslegendre", "the integration rule (captum's method=)", IG_RULES),
        "mean": Option(None, "input normalization mean: makes 'black' true black pixels"),
        "std": Option(None, "input normalization std (with mean)"),
        **NOISE_TUNNEL,
    },
)
def integrated_gradients(job: Job) -> Attribution:
    """Integrated Gradients (Sundararajan et al., 2017) via captum, chunked by ``batch_size``.

    ``baseline``: ``"black"`` (zeros, or true black if ``mean`` and ``std`` of the input
    normalization are given), ``"blur"``, ``"rise_blur"``, ``"noise"`` (seeded by ``seed``) or a
    tensor; ``integration``: captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
    """
    from captum.attr import IntegratedGradients

    options = job.options
    baseline = job.baseline()
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

    return attribution_per_target(job, attribute)


@register(
    "guided_backprop",
    space="input",
    view="abs",
    description="guided backpropagation (Springenberg et al., 2015)",
    options=NOISE_TUNNEL,
)
def guided_backprop(job: Job) -> Attribution:
    """Guided backpropagation (Springenberg et al., 2015): only positive gradients pass ReLUs."""
    with guided_relus(job.model):
        return Attribution.of_input(input_gradients(job))
