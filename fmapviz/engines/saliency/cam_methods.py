"""Layer (CAM) methods: each is a weighing ``(activation, gradient) -> (N, C, h, w)`` weighted activations;
:func:`cam` makes it a compute function over :func:`fmapviz.engines.saliency.pipeline.layer_pass`. A CAM method that
needs more than one backward (Score-CAM's extra forwards, Ablation-CAM) writes its own compute
function on the same :class:`~fmapviz.engines.saliency.pipeline.Job`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .cam_family import eigen_projection, reduce_channels
from .pipeline import Job, Weigh, layer_pass
from .result import Attribution


def cam(weigh: Weigh, eigen: bool = False) -> Callable[[Job], Attribution]:
    """The compute function of a CAM method from its weighing ``(activation, gradient) -> (N, C, h, w)``.

    The map is the weighted activations' channel sum, or their first principal component
    (:func:`~.cam_family.eigen_projection`) when ``eigen`` or with ``smooth="eigen"``.
    """

    def compute(job: Job) -> Attribution:
        def reduced(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            weighted = weigh(activation, grad)
            return eigen_projection(weighted) if eigen else reduce_channels(weighted, job)

        return Attribution.of_layers(layer_pass(job, reduced), job.layers)

    compute.__doc__ = weigh.__doc__
    return compute


def gradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): channels weighted by their mean gradient."""
    return grad.mean((2, 3), keepdim=True) * activation


def gradcam_plus_plus_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., 2018), with the usual exponential-score closed form."""
    grad_2, grad_3 = grad.pow(2), grad.pow(3)
    denominator = 2 * grad_2 + activation.sum((2, 3), keepdim=True) * grad_3
    alpha = grad_2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
    return weights * activation


def layercam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., 2021): each position weighted by its own positive gradient."""
    return grad.clamp(min=0) * activation
