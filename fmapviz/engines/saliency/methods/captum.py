"""Propagation methods through captum, each registered here: DeepLIFT, GradientSHAP, Deconvolution and LRP.

Each compute function takes captum's ``forward_func`` from the job (logits for class targets, one
score per row otherwise; DeepLIFT, Deconvolution and LRP get it as a :class:`ScoreModule`), calls
``attribute`` once per target column, and returns per-channel attributions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ...._torch_internals import lrp_supported_layers
from ...seeding import generator, normal, numpy_seeded, seeded
from ..baselines import make_baseline
from ..pipeline import Forward, Job, attribution_per_target
from ..registry import NOISE_TUNNEL, PATCH_BASELINE, SEED, Option, register
from ..result import Attribution
from ..unshare import PASS_THROUGH, UnshareError, reused_modules, unshared_copy


class ScoreModule(nn.Module):
    """``score(x)`` (which runs ``model``) as an ``nn.Module`` holding ``model``: captum's DeepLift, LRP
    and Deconvolution need a module, and find the model's layers through it."""

    def __init__(self, model: nn.Module, score: Forward) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)


def _module(job: Job) -> nn.Module:
    """The model as captum's propagation rules need it: an ``nn.Module`` whose output is what ``target`` indexes."""
    return ScoreModule(job.model, job.score_function())


def _propagated(job: Job, rule: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]) -> Attribution:
    """``rule(module, x, column)`` per target column, on the job's :func:`_module`."""
    module, x = _module(job), job.x.detach()
    return attribution_per_target(job, lambda column: rule(module, x, column))


def one_module_per_call(job: Job, method: str, drop: tuple[type[nn.Module], ...] = ()) -> Job:
    """``job`` on an :func:`~..unshare.unshared_copy` of its model when a leaf module runs more than once per
    forward (or a ``drop`` type is present), else ``job`` itself.

    Raises:
        ValueError: a module is reused and no such copy can be made (one line naming the module and why).
    """
    reused = reused_modules(job.model, job.x)
    if not reused and not any(isinstance(module, drop) for module in job.model.modules()):
        return job
    try:
        return dataclasses.replace(job, model=unshared_copy(job.model, drop))
    except UnshareError as error:
        if not reused:
            return job
        raise ValueError(
            f"{method}: module '{reused[0]}' runs more than once per forward, and captum's {method} needs one "
            f"module per call; fmapviz runs it on a copy with one module per call, but {error}. "
            "Use gradient_shap or integrated_gradients."
        ) from None


def deeplift(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, baseline: torch.Tensor) -> torch.Tensor:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017), through captum."""
    from captum.attr import DeepLift

    try:
        return DeepLift(model).attribute(x, baselines=baseline, target=target)
    except RuntimeError as error:
        reused = reused_modules(model.model if isinstance(model, ScoreModule) else model, x)
        if not reused:
            raise
        raise ValueError(
            f"DeepLift: module '{reused[0]}' runs more than once per forward, and captum's DeepLift needs "
            "each nonlinearity to be its own module (torchvision's ResNet reuses one ReLU per block). "
            "Use a model with one module per call, or gradient_shap / integrated_gradients."
        ) from error


@register(
    "deeplift",
    space="input",
    view="signed",
    description="DeepLIFT, rescale rule (Shrikumar et al., 2017), via captum",
    options={**PATCH_BASELINE, **NOISE_TUNNEL},
)
def deeplift_method(job: Job) -> Attribution:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017), via captum, against ``baseline``.

    Runs on a copy with one module per call where the model reuses a module (a torchvision ResNet's ``relu``).
    """
    job = one_module_per_call(job, "DeepLift")
    module, x, baseline = _module(job), job.x.detach(), job.baseline()
    return attribution_per_target(job, lambda column: deeplift(module, x, column, baseline))


def gradient_shap(
    forward: Forward,
    x: torch.Tensor,
    target: torch.Tensor | None,
    baselines: torch.Tensor,
    samples: int,
    stdev: float,
    seed: int = 0,
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee, 2017) through captum: expected gradients from ``baselines`` with input noise.

    captum's computation with its ``n_samples`` copies of each image made here, their Gaussian noise (std
    ``stdev``) drawn on the CPU from a generator seeded by ``seed``: the same map on every device. The baselines
    and interpolation points come from numpy's RNG inside captum (seed it, see :func:`numpy_seeded`).
    """
    from captum.attr import GradientShap

    rows = x.repeat_interleave(samples, dim=0)
    noisy = rows + normal(torch.full(rows.shape, float(stdev), device=x.device), generator(seed))
    targets = target.repeat_interleave(samples) if isinstance(target, torch.Tensor) else target
    attributions = GradientShap(forward).attribute(noisy, baselines=baselines, n_samples=1, stdevs=0.0, target=targets)
    return attributions.reshape(x.shape[0], samples, *x.shape[1:]).sum(dim=1) * 1 / samples


@register(
    "gradient_shap",
    space="input",
    view="signed",
    description="GradientSHAP (Lundberg & Lee, 2017) via captum: expected gradients from black and noise baselines",
    options={
        "samples": Option(5, "random points per image (captum's n_samples)"),
        "noise": Option(0.0, "absolute std of noise added to each point (captum's stdevs)"),
        "mean": PATCH_BASELINE["mean"],
        "std": PATCH_BASELINE["std"],
        **SEED,
    },
)
def gradient_shap_method(job: Job) -> Attribution:
    """GradientSHAP via captum: expected gradients from a black and a noise baseline, ``samples`` draws."""
    forward, x, options = job.score_function(), job.x.detach(), job.options
    black = make_baseline(x, "black", options["mean"], options["std"])
    references = torch.cat([black[:1], make_baseline(x[:1], "noise", seed=options["seed"])])

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        with seeded(options["seed"], x.device), numpy_seeded(options["seed"]):
            return gradient_shap(forward, x, column, references, options["samples"], options["noise"], options["seed"])

    return attribution_per_target(job, attribute)


def deconvolution(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Deconvolution (Zeiler & Fergus, 2014) through captum: ReLUs pass positive gradients only."""
    from captum.attr import Deconvolution

    return Deconvolution(model).attribute(x, target=target)


@register(
    "deconvolution",
    space="input",
    view="abs",
    description="Deconvolution (Zeiler & Fergus, 2014) via captum: ReLUs pass positive gradients only",
    options=NOISE_TUNNEL,
)
def deconvolution_method(job: Job) -> Attribution:
    """Deconvolution (Zeiler & Fergus, 2014) via captum."""
    return _propagated(job, deconvolution)


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Layer-wise relevance propagation (Bach et al., 2015), epsilon rule, through captum.

    Raises:
        ValueError: a leaf module has no LRP rule in captum (it names the module and its type).
    """
    from captum.attr import LRP

    supported = lrp_supported_layers()
    inner = model.model if isinstance(model, ScoreModule) else model
    for name, module in inner.named_modules():
        if not list(module.children()) and not isinstance(module, supported):
            raise ValueError(
                f"LRP: captum has no rule for layer '{name}' ({type(module).__name__}); it supports "
                f"{', '.join(sorted({t.__name__ for t in supported}))}. Use another method or replace that layer."
            )
    return LRP(model).attribute(x, target=target)


@register(
    "lrp",
    space="input",
    view="signed",
    description="layer-wise relevance propagation, epsilon rule (Bach et al., 2015), via captum",
    options=NOISE_TUNNEL,
)
def lrp_method(job: Job) -> Attribution:
    """LRP, epsilon rule, via captum, where captum has a rule for every layer of the model.

    Runs on a copy with one module per call, without ``nn.Identity`` and ``nn.Flatten`` layers, where the model
    has them (a torchvision ResNet's reused ``relu``, a timm ResNet's ``drop_block`` and ``aa``).
    """
    return _propagated(one_module_per_call(job, "LRP", PASS_THROUGH), lrp)
