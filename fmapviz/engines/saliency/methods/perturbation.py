"""Perturbation methods through captum, each registered here: Occlusion, Feature Ablation and KernelSHAP,
which replace square patches of the input by a baseline and follow the target's score.

Each compute function takes captum's ``forward_func`` from the job (logits for class targets, one
score per row otherwise), calls ``attribute`` once per target column with the job's batch size as
captum's ``perturbations_per_eval``, and returns per-channel attributions.
"""

from __future__ import annotations

from typing import Any

import torch

from ...._torch_internals import linear_model, set_linear_parameters
from ...seeding import seeded
from ..pipeline import Forward, Job, attribution_per_target
from ..registry import NOISE_TUNNEL, PATCH_BASELINE, SEED, Option, register
from ..result import Attribution

GRID_PATCH = {"patch": Option(None, "side of the grid's squares in pixels (None: 1/14 of the input, 16 at 224)")}


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


def _patch(job: Job) -> int:
    """The patch side: the ``patch`` option, or by default 1/14 of the shorter input side (16 px at 224)."""
    patch = job.options["patch"]
    return patch if patch is not None else max(1, min(job.x.shape[-2:]) // 14)


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


@register(
    "occlusion",
    space="input",
    view="signed",
    description="Occlusion (Zeiler & Fergus, 2014) via captum: score change as a patch slides over the image",
    options={
        "patch": Option(None, "side of the occluding square in pixels (None: 1/14 of the input, 16 at 224)"),
        "stride": Option(None, "step between squares in pixels (None: half the patch)"),
        **PATCH_BASELINE,
        **NOISE_TUNNEL,
    },
)
def occlusion_method(job: Job) -> Attribution:
    """Occlusion (Zeiler & Fergus, 2014) via captum: a ``patch`` square of ``baseline`` slid by ``stride``."""
    forward, x, baseline, options = job.score_function(), job.x.detach(), job.baseline(), job.options
    patch = _patch(job)
    stride = options["stride"] if options["stride"] is not None else max(1, patch // 2)
    return attribution_per_target(
        job, lambda column: occlusion(forward, x, column, baseline, patch, stride, job.batch_size)
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


@register(
    "feature_ablation",
    space="input",
    view="signed",
    description="feature ablation via captum: score change when each square of a patch grid is replaced",
    options={**GRID_PATCH, **PATCH_BASELINE, **NOISE_TUNNEL},
)
def feature_ablation_method(job: Job) -> Attribution:
    """Feature ablation via captum over a grid of ``patch`` squares."""
    forward, x, baseline = job.score_function(), job.x.detach(), job.baseline()
    patch = _patch(job)
    return attribution_per_target(
        job, lambda column: feature_ablation(forward, x, column, baseline, patch, job.batch_size)
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
    from captum.attr import KernelShap

    mask = patch_mask(x.shape[-2], x.shape[-1], patch, x.device)
    method = KernelShap(forward)
    method.interpretable_model = linear_model(weighted_least_squares)  # captum's default needs sklearn
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
    (LAPACK gelsd, on the CPU) for the coefficients, intercept from the weighted means. The fitted
    parameters go back to the device of the samples (the input's), where captum multiplies them.
    """
    rows = [tuple(batch) for batch in dataloader]
    device = rows[0][0].device
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
    set_linear_parameters(model, coefficients.T.float().to(device), intercept.float().reshape(1).to(device))
    return {}


@register(
    "kernel_shap",
    space="input",
    view="signed",
    description="KernelSHAP (Lundberg & Lee, 2017) via captum over a patch grid",
    options={**GRID_PATCH, "samples": Option(200, "coalitions sampled per image"), **PATCH_BASELINE, **SEED},
)
def kernel_shap_method(job: Job) -> Attribution:
    """KernelSHAP (Lundberg & Lee, 2017) via captum over a grid of ``patch`` squares, ``samples`` coalitions."""
    forward, x, baseline, options = job.score_function(), job.x.detach(), job.baseline(), job.options

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        with seeded(options["seed"], x.device):
            return kernel_shap(forward, x, column, baseline, _patch(job), options["samples"], job.batch_size)

    return attribution_per_target(job, attribute)
