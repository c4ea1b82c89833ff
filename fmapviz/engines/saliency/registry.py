"""The method registry: :data:`METHODS`, one :class:`Method` entry per name, the whole truth about that method.

A method registers itself beside its function with the :func:`register` decorator (the modules of
:mod:`fmapviz.engines.saliency.methods`). Here: the entry types, :func:`register`, the option groups
several methods share, the option names of other libraries, and the lookups with their errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import closest_names
from .pipeline import Job
from .result import Attribution, View
from .smoothing import CAM_SMOOTHING, NOISE_TUNNELS

Compute = Callable[[Job], Attribution]
"""A method's one function: ``compute(job) -> Attribution``; it reads its options from ``job.options``."""


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, a one-line help, and the values allowed (None: any)."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Method:
    """A registry entry.

    Attributes:
        compute: ``compute(job) -> Attribution``; reads its options from ``job.options``.
        space: ``"input"`` (a map per input pixel) or ``"layer"`` (a layer's map, upsampled).
        view: the default view (a key of :data:`fmapviz.engines.saliency.VIEWS`).
        description: one line, for listings (CLI help, docs).
        options: every option the method takes, with its default.
        takes_layer: the method reads ``layers`` (``layers=None`` searches for one).
    """

    compute: Compute
    space: Literal["input", "layer"]
    view: View
    description: str
    options: Mapping[str, Option] = field(default_factory=dict)
    takes_layer: bool = False

    @property
    def seeded(self) -> bool:
        """Whether the method draws random numbers (it then takes a ``seed`` option)."""
        return "seed" in self.options


SEED = {"seed": Option(0, "seeds the random draws; the caller's RNG state is left untouched")}
CAM_OPTIONS = {
    "clamp": Option(
        "map",
        "'map': ReLU at the layer's resolution, then upsample (papers, captum, pytorch-grad-cam, torchcam); "
        "'upsampled': upsample, then ReLU (fmapviz 0.1); 'none': keep negative evidence",
        ("map", "upsampled", "none"),
    )
}
NOISE_TUNNEL = {
    "smooth": Option(
        None, "wrap in captum's NoiseTunnel: 'smoothgrad', 'smoothgrad_sq' or 'vargrad'", (None, *NOISE_TUNNELS)
    ),
    "smooth_samples": Option(25, "noisy copies per image for smooth="),
    "smooth_noise": Option(0.15, "smooth= noise std as a fraction of each image's value range"),
    **SEED,
}
CAM_SMOOTH = {
    "smooth": Option(
        None,
        "'aug': test-time augmentation (pytorch-grad-cam's aug_smooth); 'eigen': first principal component "
        "of the weighted activations (eigen_smooth); 'aug+eigen'",
        (None, *CAM_SMOOTHING),
    )
}
PATCH_BASELINE = {
    "baseline": Option("black", "what replaces a patch: 'black', 'blur', 'rise_blur', 'noise' or a tensor"),
    "mean": Option(None, "input normalization mean: makes 'black' true black pixels"),
    "std": Option(None, "input normalization std (with mean)"),
}


METHODS: dict[str, Method] = {}
"""Every saliency method by name, in the order :mod:`.methods` registers them (the order of every listing)."""


def register(
    name: str,
    *,
    space: Literal["input", "layer"],
    view: View,
    description: str,
    options: Mapping[str, Option] | None = None,
    takes_layer: bool = False,
) -> Callable[[Compute], Compute]:
    """Register the decorated ``compute(job) -> Attribution`` as saliency method ``name``; it is returned unchanged.

    Args:
        name: the method's name, as :func:`fmapviz.saliency` and the CLI take it.
        space, view, description, options, takes_layer: the :class:`Method` fields.

    Raises:
        ValueError: ``name`` is registered already.

    Example:
        >>> @register("doubled_gradient", space="input", view="max_abs", description="twice the gradient")
        ... def doubled_gradient(job: Job) -> Attribution:
        ...     return Attribution.of_input(2 * input_gradients(job))
    """

    def add(compute: Compute) -> Compute:
        if name in METHODS:
            raise ValueError(f"Saliency method '{name}' is registered twice; pick another name.")
        METHODS[name] = Method(compute, space, view, description, dict(options or {}), takes_layer)
        return compute

    return add


FOREIGN_NAMES = {
    "nt_samples": "samples=",
    "stdevs": "noise= (a fraction of each image's range, not an absolute std)",
    "nt_samples_batch_size": "batch_size=",
    "internal_batch_size": "batch_size=",
    "n_steps": "steps=",
    "baselines": "baseline=",
    "relu_attributions": "clamp=",
    "relu": "clamp= ('none' for relu=False)",
    "layer": "layers=",
    "target_layers": "layers=",
    "abs": "a view: result.view_maps('sum_abs') or show_saliency(view=...)",
    "aug_smooth": "smooth='aug'",
    "eigen_smooth": "smooth='eigen'",
    "nt_type": "smooth=",
    "sliding_window_shapes": "patch=",
    "strides": "stride=",
    "n_samples": "samples=",
    "num_samples": "samples=",
    "ratio_channels_to_ablate": "top= (a channel count)",
}
"""Option names of captum, pytorch-grad-cam and fmapviz 0.1, and the fmapviz name to use instead."""


def method_entry(name: str) -> Method:
    """The registry entry of ``name``; a ValueError with the closest names when there is none."""
    if name not in METHODS:
        hint = ", ".join(closest_names(name, METHODS)) or "none"
        raise ValueError(f"Unknown saliency method '{name}'. Closest: {hint}. All: {', '.join(METHODS)}.")
    return METHODS[name]


def method_settings(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` options of method ``name`` checked against its entry, defaults filled in.

    Raises:
        ValueError: one line naming the unknown option (with the fmapviz name for captum's, or the
            closest), or a value outside an option's choices, and every option the method takes.
    """
    entry = method_entry(name)
    takes = ", ".join(f"{key}={option.default!r}" for key, option in entry.options.items())
    takes = f"{name} takes: {takes}." if takes else f"{name} takes no options."
    for key, value in given.items():
        if key not in entry.options:
            if key in FOREIGN_NAMES:
                hint = f" (another library's name, or fmapviz 0.1's): use {FOREIGN_NAMES[key]}."
            else:
                close = closest_names(key, entry.options, limit=1)
                hint = f". Did you mean {', '.join(close)}?" if close else "."
            raise ValueError(f"{name} has no option '{key}'{hint} {takes}")
        choices = entry.options[key].choices
        if choices is not None and value not in choices:
            raise ValueError(f"{name}: {key}={value!r} is not one of {', '.join(map(repr, choices))}.")
    return {key: given.get(key, option.default) for key, option in entry.options.items()}
