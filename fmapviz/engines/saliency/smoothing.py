"""``smooth=``: smoothing any method, one option across the registry.

* Input-space methods: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"`` wrap the method in
  captum's ``NoiseTunnel`` computation (Smilkov et al., 2017; Adebayo et al., 2018): ``smooth_samples`` noisy
  copies of each image with noise std ``smooth_noise`` times that image's value range (as the
  ``smoothgrad`` method does), averaged (or their squares, or their variance). The noise is drawn on the
  CPU, so the same seed gives the same map on any device.
* CAM methods: ``"aug"`` is pytorch-grad-cam's ``aug_smooth`` (test-time augmentation: horizontal
  flip times brightness 0.9, 1, 1.1; each map scaled to [0, 1], flipped back and averaged);
  ``"eigen"`` is its ``eigen_smooth`` (the first principal component of the weighted activations
  instead of their sum); ``"aug+eigen"`` both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..seeding import generator, normal
from .pipeline import Job, attribution_per_target
from .result import Attribution

NOISE_TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")
CAM_SMOOTHING = ("aug", "eigen", "aug+eigen")
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)
"""pytorch-grad-cam's ``aug_smooth``: horizontal flip (or not) times brightness factors 0.9, 1, 1.1."""


def run(compute: Callable[[Job], Attribution], job: Job) -> Attribution:
    """``compute(job)``, smoothed as ``job.options["smooth"]`` asks (None: as is)."""
    smooth = job.options.get("smooth")
    if smooth in NOISE_TUNNELS:
        return noise_tunnel(compute, job)
    if smooth in ("aug", "aug+eigen"):
        return augmentation_smoothed(compute, job)
    return compute(job)


def augmentation_smoothed(compute: Callable[[Job], Attribution], job: Job) -> Attribution:
    """The six test-time augmentations of every image in one batch; maps scaled, flipped back, averaged."""
    indices = job.class_indices()
    batch = job.x.shape[0]
    expanded = replace(job, x=augmented(job.x), indices=None if indices is None else indices.repeat(6, 1))
    produced = compute(expanded)
    job.layers = expanded.layers
    return Attribution(
        maps=deaugmented_mean(produced.maps, batch),
        layer_maps={key: deaugmented_mean(value, batch) for key, value in produced.layer_maps.items()},
    )


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


def noise_tunnel(compute: Callable[[Job], Attribution], job: Job) -> Attribution:
    """captum's NoiseTunnel around ``compute``, image by image (each image's noise scaled by its own range).

    The same computation as captum's ``NoiseTunnel`` (samples in chunks of ``job.batch_size``, the same sums),
    but the noise is drawn on the CPU from a generator seeded by ``seed`` and then moved to the input's device:
    on the CPU the numbers captum draws itself, and the same map on a GPU.
    """
    x, options = job.x.detach(), job.options
    plain = {**options, "smooth": None}
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    samples, kind = options["smooth_samples"], options["smooth"]

    def tunnel(image: int, column: torch.Tensor | None) -> torch.Tensor:
        one, draws = x[image : image + 1], generator(options["seed"])
        stdev = float(options["smooth_noise"] * spread[image])
        total: torch.Tensor | None = None
        squares: torch.Tensor | None = None
        for start in range(0, samples, job.batch_size):
            count = min(job.batch_size, samples - start)
            noise = normal(torch.full((count, *one.shape[1:]), stdev, device=x.device), draws)
            indices = None if column is None else column[image : image + 1].reshape(-1, 1).expand(count, 1)
            rows = replace(job, x=one.repeat_interleave(count, dim=0) + noise, indices=indices, options=plain)
            with torch.enable_grad():
                attributions = compute(rows).attributions[:, 0].reshape(1, count, *one.shape[1:])
            part, part_squares = attributions.sum(dim=1), torch.sum(torch.pow(attributions, 2), dim=1)
            total = part if total is None else total + part
            squares = part_squares if squares is None else squares + part_squares
        mean, mean_squares = total * 1 / samples, squares * 1 / samples
        if kind == "smoothgrad":
            return mean
        return mean_squares if kind == "smoothgrad_sq" else mean_squares - mean * mean

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([tunnel(image, column) for image in range(x.shape[0])])

    return attribution_per_target(job, attribute)
