"""The default layers of a comparison: a model's blocks, at most two names deep."""

from __future__ import annotations

from torch import nn

from ...hooks import resolve_layers

_SKIPPED = (nn.Dropout, nn.Identity, nn.Flatten, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid)
_SKIPPED += (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Tanh, nn.LeakyReLU)


def block_layers(model: nn.Module) -> list[str]:
    """Default layers to compare: the model's blocks at most two names deep (``features.7``, ``layer3.1``, ``fc``).

    Containers are replaced by their children; activations, pooling, dropout and flatten are left
    out (their maps repeat the layer before).

    Example:
        >>> block_layers(torchvision.models.mobilenet_v2())[:3]
        ['features.0', 'features.1', 'features.2']
    """
    modules = dict(model.named_modules())
    names = [name for name in modules if name and name.count(".") <= 1]
    names = [name for name in names if not any(part.startswith("_") for part in name.split("."))]  # _packed_params
    chosen = [
        name
        for name in names
        if not any(other.startswith(name + ".") for other in names) and not isinstance(modules[name], _SKIPPED)
    ]
    return chosen or resolve_layers(model, "all")
