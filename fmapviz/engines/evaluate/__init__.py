"""How faithful a saliency map is, one module per kind of metric; the public names are re-exported here
(``fmapviz.evaluate`` is this package).

* :mod:`.perturbation`: deletion and insertion curves (RISE).
* :mod:`.road`: ROAD, remove and debias with noisy linear imputation.
* :mod:`.confidence`: Average Drop and Increase in Confidence.
* :mod:`.robustness`: infidelity and max-sensitivity (through captum).
* :mod:`.sanity`: the model-randomization sanity check, with its Spearman correlation and block order.
* :mod:`.common`: the maps and classes every metric reads (a tensor or a SaliencyResult, and a target).
"""

from .confidence import ConfidenceChange, average_drop_increase
from .perturbation import PerturbationCurve, deletion, insertion
from .road import RoadResult, linear_imputation, road
from .robustness import infidelity, sensitivity
from .sanity import RandomizationResult, cascade_blocks, randomization_check, spearman

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
