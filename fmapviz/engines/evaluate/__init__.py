"""How faithful a saliency map is: deletion/insertion, ROAD, Average Drop/Increase, infidelity, sensitivity,
and the model-randomization sanity check."""

from .faithfulness import (
    ConfidenceChange,
    RoadResult,
    average_drop_increase,
    infidelity,
    linear_imputation,
    road,
    sensitivity,
)
from .metrics import (
    PerturbationCurve,
    RandomizationResult,
    cascade_blocks,
    deletion,
    insertion,
    randomization_check,
    spearman,
)

__all__ = [
    "ConfidenceChange",
    "PerturbationCurve",
    "RandomizationResult",
    "RoadResult",
    "average_drop_increase",
    "cascade_blocks",
    "deletion",
    "infidelity",
    "insertion",
    "linear_imputation",
    "randomization_check",
    "road",
    "sensitivity",
    "spearman",
]
