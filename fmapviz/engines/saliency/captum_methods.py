"""Attribution methods captum implements, called through captum: Occlusion, Feature Ablation and
KernelSHAP over a grid of square patches, DeepLIFT, GradientSHAP, Deconvolution and LRP.

Each compute function builds captum's ``forward_func`` from the job (logits for class targets, one
score per row otherwise), calls ``attribute`` once per target column with the job's batch size as
captum's ``perturbations_per_eval``, and returns per-channel attributions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .baselines import make_baseline, seeded
from .pipeline import Job
from .result import Attribution

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
    Its regression is :func:`weighted_least_squares` (torch) instead of captum's default
    scikit-learn ``LinearRegression``, which solves the same problem the same way.
    """
    from captum._utils.models.linear_model import LinearModel
    from captum.attr import KernelShap

    mask = patch_mask(x.shape[-2], x.shape[-1], patch, x.device)
    method = KernelShap(forward)
    method.interpretable_model = LinearModel(train_fn=weighted_least_squares)  # captum's default needs sklearn
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


def weighted_least_squares(model: Any, dataloader: Any, construct_kwargs: dict[str, Any], **_: Any) -> dict[str, float]:
    """A captum ``LinearModel`` train function: sklearn ``LinearRegression`` with sample weights, in torch.

    Like sklearn: weighted centering, rows scaled by sqrt(weight), minimum-norm least squares
    (LAPACK gelsd) for the coefficients, intercept from the weighted means.
    """
    rows = [tuple(batch) for batch in dataloader]
    x = torch.cat([row[0] for row in rows]).double()
    y = torch.cat([row[1] for row in rows]).double().reshape(x.shape[0], -1)
    weight = (
        torch.cat([row[2] for row in rows]).double().reshape(-1, 1) if len(rows[0]) == 3 else torch.ones_like(y[:, :1])
    )
    x_mean = (weight * x).sum(0) / weight.sum()
    y_mean = (weight * y).sum(0) / weight.sum()
    scale = weight.sqrt()
    coefficients = torch.linalg.lstsq(
        ((x - x_mean) * scale).cpu(), ((y - y_mean) * scale).cpu(), driver="gelsd"
    ).solution
    intercept = y_mean.cpu() - x_mean.cpu() @ coefficients
    device = getattr(model, "device", "cpu")
    model._construct_model_params(
        norm_type=None,
        weight_values=coefficients.T.float().to(device),
        bias_value=intercept.float().reshape(1).to(device),
    )
    return {}


def gradient_shap(
    forward: Forward, x: torch.Tensor, target: torch.Tensor | None, baselines: torch.Tensor, samples: int, stdev: float
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee, 2017) through captum: expected gradients from ``baselines`` with input noise."""
    from captum.attr import GradientShap

    return GradientShap(forward).attribute(x, baselines=baselines, n_samples=samples, stdevs=stdev, target=target)


class ScoreModule(nn.Module):
    """``score(x)`` (which runs ``model``) as an ``nn.Module`` holding ``model``: captum's DeepLift, LRP
    and Deconvolution need a module, and find the model's layers through it."""

    def __init__(self, model: nn.Module, score: Forward) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)


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

    supported = tuple(SUPPORTED_LAYERS_WITH_RULES) + tuple(SUPPORTED_NON_LINEAR_LAYERS)
    inner = model.model if isinstance(model, ScoreModule) else model
    for name, module in inner.named_modules():
        if not list(module.children()) and not isinstance(module, supported):
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


# ------------------------------------------------------------------------------ compute functions


@contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (captum's GradientShap draws its points with it), restoring the caller's state."""
    import numpy as np

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _patch(job: Job) -> int:
    """The patch side: the ``patch`` option, or by default 1/14 of the shorter input side (16 px at 224)."""
    patch = job.options["patch"]
    return patch if patch is not None else max(1, min(job.x.shape[-2:]) // 14)


def _baseline(job: Job) -> torch.Tensor:
    options = job.options
    return make_baseline(job.x, options["baseline"], options["mean"], options["std"], options.get("seed", 0))


def _module(job: Job) -> nn.Module:
    """The model as captum's propagation rules need it: an ``nn.Module`` whose output is what ``target`` indexes."""
    return ScoreModule(job.model, job.score_function())


def _per_target(job: Job, attribute: Callable[[torch.Tensor | None], torch.Tensor]) -> Attribution:
    return Attribution.of_input(job.per_target(attribute)[0])


def occlusion_method(job: Job) -> Attribution:
    """Occlusion (Zeiler & Fergus, 2014) via captum: a ``patch`` square of ``baseline`` slid by ``stride``."""
    forward, x, baseline, options = job.score_function(), job.x.detach(), _baseline(job), job.options
    patch = _patch(job)
    stride = options["stride"] if options["stride"] is not None else max(1, patch // 2)
    return _per_target(job, lambda column: occlusion(forward, x, column, baseline, patch, stride, job.batch_size))


def feature_ablation_method(job: Job) -> Attribution:
    """Feature ablation via captum over a grid of ``patch`` squares."""
    forward, x, baseline = job.score_function(), job.x.detach(), _baseline(job)
    patch = _patch(job)
    return _per_target(job, lambda column: feature_ablation(forward, x, column, baseline, patch, job.batch_size))


def kernel_shap_method(job: Job) -> Attribution:
    """KernelSHAP (Lundberg & Lee, 2017) via captum over a grid of ``patch`` squares, ``samples`` coalitions."""
    forward, x, baseline, options = job.score_function(), job.x.detach(), _baseline(job), job.options

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        with seeded(options["seed"], x.device):
            return kernel_shap(forward, x, column, baseline, _patch(job), options["samples"], job.batch_size)

    return _per_target(job, attribute)


def deeplift_method(job: Job) -> Attribution:
    """DeepLIFT, rescale rule (Shrikumar et al., 2017), via captum, against ``baseline``."""
    module, x, baseline = _module(job), job.x.detach(), _baseline(job)
    return _per_target(job, lambda column: deeplift(module, x, column, baseline))


def gradient_shap_method(job: Job) -> Attribution:
    """GradientSHAP via captum: expected gradients from a black and a noise baseline, ``samples`` draws."""
    forward, x, options = job.score_function(), job.x.detach(), job.options
    black = make_baseline(x, "black", options["mean"], options["std"])
    references = torch.cat([black[:1], make_baseline(x[:1], "noise", seed=options["seed"])])

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        with seeded(options["seed"], x.device), numpy_seeded(options["seed"]):
            return gradient_shap(forward, x, column, references, options["samples"], options["noise"])

    return _per_target(job, attribute)


def deconvolution_method(job: Job) -> Attribution:
    """Deconvolution (Zeiler & Fergus, 2014) via captum."""
    module, x = _module(job), job.x.detach()
    return _per_target(job, lambda column: deconvolution(module, x, column))


def lrp_method(job: Job) -> Attribution:
    """LRP, epsilon rule, via captum, where captum has a rule for every layer of the model."""
    module, x = _module(job), job.x.detach()
    return _per_target(job, lambda column: lrp(module, x, column))
