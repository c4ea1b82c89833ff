"""Activation maximization: objectives, image parameterizations, robustness transforms, the optimizer."""

from . import objectives, param, transforms
from .objectives import (
    OBJECTIVES,
    Objective,
    blur,
    channel,
    class_logit,
    deepdream,
    direction,
    diversity,
    l2,
    neuron,
    parse_objective,
    total_variation,
)
from .optimize import ActMaxResult, maximize

__all__ = [
    "OBJECTIVES",
    "ActMaxResult",
    "Objective",
    "blur",
    "channel",
    "class_logit",
    "deepdream",
    "direction",
    "diversity",
    "l2",
    "maximize",
    "neuron",
    "objectives",
    "param",
    "parse_objective",
    "total_variation",
    "transforms",
]
