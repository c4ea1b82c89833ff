"""ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022):
remove a fraction of the pixels, most relevant first (MoRF) or least relevant first (LeRF), and fill
them by *noisy linear imputation* (each removed pixel the weighted mean of its 8 neighbours, solved as
one sparse linear system, plus a little noise), so the removed region's shape does not leak the map to
the model. A faithful map makes MoRF fall fast and LeRF stay high: the score is
``(mean LeRF - mean MoRF) / 2``, higher is better.

Maps and targets: see :mod:`.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks import model_guard
from ...model_input import accepts_loaded_model, at_least_float32
from ...models import LoadedModel
from ..inference import fast_forward
from ..seeding import generator, randn
from .common import class_scores, full_precision, maps_and_classes

# cpu: a constant, moved to x's device where it is used
NEIGHBOUR_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
"""ROAD's imputation: each removed pixel is this weighted mean of its 8 neighbours (Rong et al., 2022)."""


def linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, iterations: int = 2000, tolerance: float = 1e-6
) -> torch.Tensor:
    """Fill the ``removed`` pixels of ``x`` by ROAD's linear imputation (no noise).

    Each removed pixel equals the :data:`NEIGHBOUR_WEIGHTS` mean of its in-image neighbours; the
    sparse symmetric positive definite system this makes is solved by Jacobi-preconditioned
    conjugate gradients, all images and channels at once, on ``x``'s device. Large holes need many
    steps from a cold start, so images of 48 px and more start from the solution at half the
    resolution (the answer is the same; only the starting point changes).

    Args:
        x: ``(B, C, H, W)`` images.
        removed: ``(B, H, W)`` bool, True where a pixel is replaced.
        iterations: the most CG steps; tolerance: stop when every residual's norm is below
            ``tolerance`` times its right-hand side's.

    Example:
        >>> grey = torch.full((1, 3, 8, 8), 0.5)
        >>> hole = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> hole[0, 3:5, 3:5] = True  # a 2 x 2 hole, filled from its neighbours
        >>> round(float(linear_imputation(grey, hole)[0, 0, 4, 4]), 4)
        0.5

    Returns:
        ``x`` with the removed pixels filled.
    """
    channels = x.shape[1]
    kernel = NEIGHBOUR_WEIGHTS.to(x.device, x.dtype)[None, None].expand(channels, 1, 3, 3)

    def spread(values: torch.Tensor) -> torch.Tensor:
        return F.conv2d(values, kernel, padding=1, groups=channels)

    unknown = removed[:, None].to(x.dtype).expand_as(x)
    total = spread(torch.ones_like(x[:1]))  # in-image neighbour weight per pixel
    diagonal = total.expand_as(x)

    def operator(values: torch.Tensor) -> torch.Tensor:
        return unknown * (diagonal * values - spread(unknown * values))

    rhs = unknown * spread((1 - unknown) * x)
    solution = unknown * rhs / diagonal
    if min(x.shape[-2:]) >= 48:
        solution = unknown * _coarse_start(x, removed, iterations, tolerance)
    residual = rhs - operator(solution)
    preconditioned = unknown * residual / diagonal
    direction = preconditioned.clone()
    rho = (residual * preconditioned).flatten(1).sum(1)
    limit = tolerance * rhs.flatten(1).norm(dim=1).clamp(min=1e-12)
    for _ in range(iterations):
        if bool((residual.flatten(1).norm(dim=1) <= limit).all()):
            break
        product = operator(direction)
        step = rho / (direction * product).flatten(1).sum(1).clamp(min=1e-30)
        solution = solution + step[:, None, None, None] * direction
        residual = residual - step[:, None, None, None] * product
        preconditioned = unknown * residual / diagonal
        rho_next = (residual * preconditioned).flatten(1).sum(1)
        direction = preconditioned + (rho_next / rho.clamp(min=1e-30))[:, None, None, None] * direction
        rho = rho_next
    return x * (1 - unknown) + solution * unknown


def _coarse_start(x: torch.Tensor, removed: torch.Tensor, iterations: int, tolerance: float) -> torch.Tensor:
    """The imputation at half resolution, upsampled: a starting point for the full-resolution solve."""
    known = (~removed)[:, None].to(x.dtype)
    weight = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = F.avg_pool2d(x * known, 2, ceil_mode=True) / weight.clamp(min=1e-12)
    filled = linear_imputation(coarse, weight[:, 0] < 0.5, iterations=iterations, tolerance=tolerance)
    return F.interpolate(filled, size=x.shape[-2:], mode="bilinear", align_corners=False)


@dataclass
class RoadResult:
    """ROAD curves per image.

    Attributes:
        fractions: ``(P,)`` fraction of pixels removed at each step.
        morf: ``(N, P)`` score after removing the most relevant pixels first.
        lerf: ``(N, P)`` score after removing the least relevant pixels first.
        score: ``(N,)`` ``(mean(lerf) - mean(morf)) / 2``: higher is more faithful.
        baseline: ``(N,)`` the score on the unchanged image.

    Example:
        >>> cam = fmapviz.saliency(model, x, "gradcam", target=281)
        >>> curves = fmapviz.evaluate.road(model, x, cam, fractions=(0.5,))
        >>> tuple(curves.morf.shape), tuple(curves.score.shape)
        ((1, 1), (1,))
    """

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    score: torch.Tensor
    baseline: torch.Tensor


@accepts_loaded_model()
@full_precision
def road(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    maps: Any,
    target: int | Sequence[int] | torch.Tensor | None = None,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    noise: float = 0.01,
    score: Literal["probability", "logit"] = "probability",
    seed: int = 0,
    batch_size: int = 16,
    tolerance: float = 1e-6,
    iterations: int = 2000,
) -> RoadResult:
    """ROAD: remove-and-debias with noisy linear imputation (Rong et al., 2022).

    At each fraction f, the pixels whose map value is at least the (1 - f) quantile (MoRF), or
    whose negated value is (LeRF), are replaced by :func:`linear_imputation` plus Gaussian noise
    of std ``noise`` (in the model's input units, as the paper's 0.01 on normalized images).

    Args:
        model: a classifier.
        x: ``(N, C, H, W)`` model input.
        maps: ``(N, H, W)`` maps or a SaliencyResult.
        target: class per image (or one for all); taken from a SaliencyResult when None.
        fractions: fractions of pixels removed.
        noise: imputation noise std; 0 for plain linear imputation.
        score: follow the softmax ``"probability"`` of the class (the paper), or its ``"logit"``
            (pytorch-grad-cam's ``ROADCombined`` with ``ClassifierOutputTarget``).
        seed: seeds the noise (a generator; the global RNG is untouched).
        batch_size: images per forward pass.
        tolerance, iterations: when the imputation's solver stops (see :func:`linear_imputation`):
            a relative residual, or this many conjugate-gradient steps per resolution level.

    Returns:
        A :class:`RoadResult`.

    Raises:
        ValueError: maps that do not fit ``x``, fractions outside (0, 1).

    Example:
        >>> result = fmapviz.saliency(model, x, "gradcam", target=281)
        >>> fmapviz.evaluate.road(model, x, result, fractions=(0.5,)).score.shape
        torch.Size([1])
    """
    maps, classes = maps_and_classes(maps, target, x, model)
    maps = maps.float()
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must lie strictly between 0 and 1; got {list(fractions)}.")
    noise_draws = generator(seed)
    levels = torch.tensor([1 - f for f in fractions], device=x.device, dtype=torch.float32)
    curves = {}
    with torch.no_grad(), model_guard(model):
        forward = fast_forward(model)
        baseline = class_scores(forward, x, classes, score, batch_size)
        for order, signed in (("morf", maps), ("lerf", -maps)):
            flat = signed.flatten(1)
            thresholds = torch.quantile(flat, levels, dim=1).T  # (N, P)
            removed = flat[:, None, :] >= thresholds[:, :, None]  # (N, P, H*W)
            # the imputation solves a linear system: float32 for a float16 or bfloat16 model, whose dtype it is given
            images = at_least_float32(x)[:, None].expand(-1, len(fractions), -1, -1, -1).flatten(0, 1)
            filled = linear_imputation(
                images, removed.reshape(-1, *x.shape[-2:]), iterations=iterations, tolerance=tolerance
            )
            if noise:
                jitter = randn(filled.shape, noise_draws, like=filled) * noise
                filled = filled + jitter * removed.reshape(-1, 1, *x.shape[-2:])
            rows = classes.repeat_interleave(len(fractions))
            filled = filled.to(x.dtype)
            curves[order] = class_scores(forward, filled, rows, score, batch_size).reshape(x.shape[0], -1)
    morf, lerf = curves["morf"], curves["lerf"]
    steps = torch.tensor(list(fractions), device=x.device)
    return RoadResult(steps, morf, lerf, (lerf.mean(1) - morf.mean(1)) / 2, baseline)
