"""``smooth=``: smoothing any method, one option across the registry.

* Input-space methods: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"`` wrap the method in
  captum's ``NoiseTunnel`` (Smilkov et al., 2017; Adebayo et al., 2018): ``smooth_samples`` noisy
  copies of each image with noise std ``smooth_noise`` times that image's value range (as the
  ``smoothgrad`` method does), averaged (or their squares, or their variance).
* CAM methods: ``"aug"`` is pytorch-grad-cam's ``aug_smooth`` (test-time augmentation: horizontal
  flip times brightness 0.9, 1, 1.1; each map scaled to [0, 1], flipped back and averaged);
  ``"eigen"`` is its ``eigen_smooth`` (the first principal component of the weighted activations
  instead of their sum); ``"aug+eigen"`` both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..seeding import seeded
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
    """captum's NoiseTunnel around ``compute``, image by image (each image's noise scaled by its own range)."""
    from captum.attr import Attribution as CaptumAttribution
    from captum.attr import NoiseTunnel

    plain = {**job.options, "smooth": None}

    class Method(CaptumAttribution):
        def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
            indices = (
                None if target is None else target.reshape(-1, 1).expand(inputs.shape[0], 1)
            )  # one-row targets come unexpanded
            rows = replace(job, x=inputs, indices=indices, options=plain)
            with torch.enable_grad():  # NoiseTunnel calls its method under no_grad, as captum's own take it back
                return compute(rows).attributions[:, 0]

        attribute.__wrapped__ = attribute  # NoiseTunnel calls the undecorated attribute of captum's methods

    tunnel = NoiseTunnel(Method(job.model))
    x, options = job.x.detach(), job.options
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)

    def attribute(column: torch.Tensor | None) -> torch.Tensor:
        images = []
        for image in range(x.shape[0]):
            with seeded(options["seed"], x.device):
                images.append(
                    tunnel.attribute(
                        x[image : image + 1],
                        nt_type=options["smooth"],
                        nt_samples=options["smooth_samples"],
                        nt_samples_batch_size=job.batch_size,
                        stdevs=float(options["smooth_noise"] * spread[image]),
                        target=None if column is None else column[image : image + 1],
                    )
                )
        return torch.cat(images)

    return attribution_per_target(job, attribute)
