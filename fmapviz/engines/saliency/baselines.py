"""Reference inputs: the baselines of Integrated Gradients and the substrates of the perturbation metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..seeding import generator, rand

BASELINES = {
    "black": "black pixels (zeros of the model input without mean/std)",
    "blur": "Gaussian blur, sigma = max(H, W) / 20 (11 px at 224), kernel 4 sigma + 1 (45 px)",
    "rise_blur": "Gaussian blur as in RISE (Petsiuk et al., 2018): sigma 5 px, kernel 11 px",
    "noise": "uniform noise over the input's range, seeded",
}
"""Every named baseline (substrate) and what it is; a tensor is accepted too."""


def make_baseline(
    x: torch.Tensor,
    kind: str | torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A reference input for Integrated Gradients and the perturbation metrics.

    Args:
        x: ``(N, C, H, W)`` model input.
        kind: a key of :data:`BASELINES` or a tensor broadcastable to ``x``.
        mean, std: the input normalization; with both, ``"black"`` is true black pixels,
            otherwise zeros of the model input.
        seed: seeds ``"noise"``.

    Returns:
        A tensor shaped like ``x`` on its device.

    Raises:
        ValueError: an unknown kind; the message lists the named ones.

    Example:
        >>> make_baseline(x, "rise_blur").shape == x.shape
        True
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(x.device, x.dtype).expand_as(x)
    if kind == "black":
        if mean is None or std is None:
            return torch.zeros_like(x)
        shape = (1, -1, 1, 1)
        mean_t, std_t = (torch.tensor(v, device=x.device, dtype=x.dtype).reshape(shape) for v in (mean, std))
        return (-mean_t / std_t).expand_as(x).clone()
    if kind in ("blur", "rise_blur"):
        from torchvision.transforms.functional import gaussian_blur

        sigma = max(x.shape[-1], x.shape[-2]) / 20 if kind == "blur" else 5.0
        kernel = int(4 * sigma) | 1 if kind == "blur" else 11
        return gaussian_blur(x.detach(), [kernel, kernel], [sigma, sigma])
    if kind == "noise":
        low, high = x.min(), x.max()
        draws = rand(x.shape, generator(seed), like=x)
        return low + (high - low) * draws
    raise ValueError(f"Unknown baseline '{kind}'. Use one of: {', '.join(BASELINES)}, or a tensor.")
