"""Deep Feature Factorization (Collins et al., ECCV 2018): a layer's activations as K concepts.

The ``(positions, channels)`` matrix of one layer's non-negative activations, over one image or
a batch, is factorized by non-negative matrix factorization into K concept heatmaps (one weight
per position) times K concept directions (one weight per channel). Each direction, passed through
the classifier head as if it were a pooled feature vector, scores the classes it stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import check_model_input
from ..hooks import capture, model_guard, resolve_layers
from ..model_input import accepts_loaded_model
from ..models import LoadedModel


@dataclass
class Concepts:
    """The result of :func:`deep_feature_factorization`.

    Attributes:
        heatmaps: ``(N, K, H, W)`` each concept's weight at each input pixel (bilinear upsampled),
            each image's maps scaled to [0, 1] together.
        directions: ``(K, C)`` each concept's weights over the layer's channels (NMF's second factor).
        scores: ``(K, classes)`` the classifier's logits for each direction, or None without one.
        labels: ``(K, top)`` class indices each concept scores highest, or None.
        label_names: class names for ``labels`` when ``categories`` were given.
        layer: the factorized layer.
        error: relative reconstruction error ``||V - WH|| / ||V||`` of the factorization.
    """

    heatmaps: torch.Tensor
    directions: torch.Tensor
    scores: torch.Tensor | None
    labels: torch.Tensor | None
    label_names: list[list[str]] | None
    layer: str
    error: float


def nmf(
    matrix: torch.Tensor, rank: int, iterations: int = 200, seed: int = 0, eps: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorization ``matrix ~ W @ H`` by Lee & Seung's multiplicative updates.

    Minimizes the Frobenius error; each update keeps both factors non-negative and never raises
    the error. Starts from uniform noise scaled to the matrix's mean, drawn from a seeded generator.

    Args:
        matrix: ``(M, F)`` non-negative.
        rank: K, the number of factors.
        iterations: update rounds (each updates H then W).
        seed: seeds the starting factors.
        eps: added to denominators.

    Returns:
        ``W`` of shape ``(M, K)`` and ``H`` of shape ``(K, F)``, both non-negative.

    Raises:
        ValueError: a negative entry, or a rank below 1.

    Example:
        >>> W, H = nmf(torch.rand(50, 8), rank=3)
        >>> W.shape, H.shape
        (torch.Size([50, 3]), torch.Size([3, 8]))
    """
    if rank < 1:
        raise ValueError(f"The number of concepts must be at least 1, not {rank}.")
    if bool((matrix < 0).any()):
        raise ValueError("NMF needs a non-negative matrix; clamp the activations at 0 first.")
    generator = torch.Generator(device=matrix.device).manual_seed(seed)
    scale = (matrix.mean() / rank).sqrt().clamp(min=eps)
    w = torch.rand(matrix.shape[0], rank, generator=generator, device=matrix.device, dtype=matrix.dtype) * scale
    h = torch.rand(rank, matrix.shape[1], generator=generator, device=matrix.device, dtype=matrix.dtype) * scale
    for _ in range(iterations):
        h = h * (w.T @ matrix) / (w.T @ w @ h + eps)
        w = w * (matrix @ h.T) / (w @ (h @ h.T) + eps)
    return w, h


def find_classifier(model: nn.Module, channels: int) -> nn.Module | None:
    """The last ``nn.Linear`` of ``model`` that takes ``channels`` features (its pooled-feature head), or None."""
    heads = [module for module in model.modules() if isinstance(module, nn.Linear) and module.in_features == channels]
    return heads[-1] if heads else None


@accepts_loaded_model(categories="categories")
def deep_feature_factorization(
    model: nn.Module | LoadedModel,
    x: torch.Tensor,
    layers: str,
    concepts: int = 5,
    classifier: nn.Module | str | None = "auto",
    categories: Sequence[str] | None = None,
    top: int = 2,
    iterations: int = 200,
    seed: int = 0,
) -> Concepts:
    """Factorize one layer's activations over ``x`` (one image or a batch) into ``concepts`` concepts.

    Args:
        model: any image model; run in eval mode, no gradients, hooks removed afterwards.
        x: ``(N, C, H, W)`` model input; a batch shares one set of concept directions.
        layers: the layer to factorize (one name, a capture key such as ``"layer4.1.relu#2"`` included).
        concepts: K, the number of concepts.
        classifier: the head that turns a pooled feature vector into logits: a module, a module
            name, ``"auto"`` (the last ``nn.Linear`` taking the layer's channel count) or None.
        categories: class names for ``label_names``.
        top: how many classes label each concept.
        iterations, seed: NMF settings (see :func:`nmf`).

    Returns:
        :class:`Concepts`.

    Raises:
        ValueError: the layer's output is not 4-D, or ``classifier`` does not fit the layer.

    Example:
        >>> found = deep_feature_factorization(model, x, "features.18", concepts=4, categories=loaded.categories)
        >>> found.heatmaps.shape, found.label_names[0]
        (torch.Size([1, 4, 224, 224]), ['Egyptian cat', 'tiger cat'])
    """
    if not isinstance(layers, str):
        raise ValueError(f"DFF factorizes one layer; pass its name, not {layers!r}.")
    layer = layers
    check_model_input(model, x)
    with model_guard(model), torch.no_grad():
        with capture(model, layer) as maps:
            model(x)
        activation = maps[layer] if layer in maps else maps[list(maps)[-1]]  # a reused module: its last call
        if activation.dim() != 4:
            raise ValueError(f"Layer {layer} has a {activation.dim()}-D output; DFF needs an (N, C, H, W) map.")
        batch, channels, height, width = activation.shape
        matrix = activation.clamp(min=0).permute(0, 2, 3, 1).reshape(-1, channels).float()
        w, h = nmf(matrix, concepts, iterations, seed)
        error = float((matrix - w @ h).norm() / matrix.norm().clamp(min=1e-12))
        heat = w.T.reshape(concepts, batch, height, width).transpose(0, 1)
        heat = F.interpolate(heat, size=x.shape[-2:], mode="bilinear", align_corners=False)
        heat = heat / heat.flatten(1).amax(1).clamp(min=1e-12)[:, None, None, None]
        head = _classifier(model, classifier, channels)
        scores = labels = names = None
        if head is not None:
            scores = head(h.to(next(head.parameters()).dtype))
            labels = scores.topk(min(top, scores.shape[1]), dim=1).indices
            names = [[categories[int(i)] for i in row] for row in labels] if categories is not None else None
    return Concepts(heat, h, scores, labels, names, layer, error)


def _classifier(model: nn.Module, classifier: nn.Module | str | None, channels: int) -> nn.Module | None:
    if classifier is None:
        return None
    if classifier == "auto":
        return find_classifier(model, channels)
    head = model.get_submodule(resolve_layers(model, classifier)[0]) if isinstance(classifier, str) else classifier
    features = next((m.in_features for m in head.modules() if isinstance(m, nn.Linear)), channels)
    if features != channels:
        raise ValueError(
            f"classifier takes {features} features but the layer has {channels} channels; "
            "pass the head that reads this layer's pooled output, or classifier=None."
        )
    return head
