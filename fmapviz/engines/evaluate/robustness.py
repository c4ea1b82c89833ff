"""Infidelity and max-sensitivity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", 2019),
through captum's metrics: how well a map predicts the score change under input noise, and how much the
map itself changes under small input noise.

Maps and targets: see :mod:`.common`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...hooks import model_guard
from ...model_input import accepts_loaded_model, at_least_float32
from ...models import LoadedModel
from ...outputs import output_tensor
from ..seeding import generator, randn, seeded
from .common import class_indices, full_precision, maps_and_classes


def _per_channel(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` maps spread evenly over the input's channels: ``(N, C, H, W)`` attributions."""
    return (maps[:, None] / x.shape[1]).expand_as(x).to(x.dtype).contiguous()


@accepts_loaded_model()
@full_precision
def infidelity(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    maps: Any,
    target: int | Sequence[int] | torch.Tensor | None = None,
    noise: float = 0.003,
    samples: int = 10,
    seed: int = 0,
    batch_size: int = 16,
) -> torch.Tensor:
    """Infidelity (Yeh et al., 2019) through captum: how badly ``map . I`` predicts ``f(x) - f(x - I)`` for noise I.

    Lower is better. The noise is Gaussian with std ``noise``; ``(N, H, W)`` maps are spread evenly
    over the colour channels; captum's ``normalize=True`` rescales the map optimally first, so the
    score does not depend on the map's scale.

    Returns:
        ``(N,)`` infidelity per image.

    Example:
        >>> cam = fmapviz.saliency(model, x, "gradcam")
        >>> fmapviz.evaluate.infidelity(model, x, cam, samples=4).shape
        torch.Size([1])
    """
    from captum.metrics import infidelity as captum_infidelity

    maps, classes = maps_and_classes(maps, target, x, model)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        change = randn(inputs.shape, noise_draws, like=inputs) * noise
        return change, inputs - change

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return at_least_float32(output_tensor(model(inputs.to(x.dtype))))

    # captum's sums and differences in float32 (a float16 or bfloat16 model sees its own dtype)
    noise_draws, wide = generator(seed), at_least_float32(x)
    with model_guard(model):
        return captum_infidelity(
            forward,
            perturb,
            wide,
            _per_channel(maps.float(), wide),
            target=classes,
            n_perturb_samples=samples,
            max_examples_per_batch=batch_size,
            normalize=True,
        )


@full_precision
def sensitivity(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    radius: float = 0.02,
    samples: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al., 2019) through captum: the largest change of the map under small input noise.

    Args:
        explain: ``explain(inputs, classes) -> (N, H, W)`` maps, e.g.
            ``lambda inputs, classes: fmapviz.saliency(model, inputs, "gradcam", target=classes).maps[:, 0]``.
        x: ``(N, C, H, W)`` model input.
        target: class per image (or one for all).
        radius: the half-width of the uniform input noise.
        samples: perturbed copies per image.
        seed: seeds captum's noise (the caller's RNG state is restored).

    Returns:
        ``(N,)`` max over samples of ``||map(x + noise) - map(x)|| / ||map(x)||``. Lower is steadier.

    Example:
        >>> def explain(inputs, classes):
        ...     return fmapviz.saliency(model, inputs, "gradcam", target=classes).maps[:, 0]
        >>> fmapviz.evaluate.sensitivity(explain, x, target=281, samples=2).shape
        torch.Size([1])
    """
    from captum.metrics import sensitivity_max

    classes = class_indices(target, x.shape[0], x.device)

    def attributions(inputs: Any, target: torch.Tensor) -> Any:
        with torch.enable_grad():  # captum calls this under no_grad; gradient methods (Grad-CAM) need it
            if isinstance(inputs, tuple):  # captum passes the perturbed batch as a one-tensor tuple
                return (_per_channel(explain(inputs[0], target), inputs[0]),)
            return _per_channel(explain(inputs, target), inputs)

    with seeded(seed, x.device):
        return sensitivity_max(attributions, x, perturb_radius=radius, n_perturb_samples=samples, target=classes)
