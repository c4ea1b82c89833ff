"""The method registry: one :class:`Method` entry per name, the whole truth about that method."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import closest_names
from . import cam_methods, input_methods
from .pipeline import Job
from .result import Attribution, View


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

    compute: Callable[[Job], Attribution]
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
IG_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

METHODS: dict[str, Method] = {
    "gradient": Method(input_methods.gradient, "input", "max_abs", "vanilla gradient (Simonyan et al., 2014)"),
    "input_x_gradient": Method(
        input_methods.input_x_gradient, "input", "signed", "input times gradient (Shrikumar et al., 2016)"
    ),
    "smoothgrad": Method(
        input_methods.smoothgrad,
        "input",
        "abs",
        "gradient averaged over noisy copies (Smilkov et al., 2017)",
        {
            "noise": Option(0.15, "noise std as a fraction of each image's value range (max - min)"),
            "samples": Option(25, "noisy copies per image"),
            **SEED,
        },
    ),
    "integrated_gradients": Method(
        input_methods.integrated_gradients,
        "input",
        "signed",
        "Integrated Gradients (Sundararajan et al., 2017), via captum",
        {
            "steps": Option(50, "integration steps"),
            "baseline": Option("black", "'black', 'blur', 'rise_blur', 'noise' or a tensor"),
            "integration": Option("gausslegendre", "the integration rule (captum's method=)", IG_RULES),
            "mean": Option(None, "input normalization mean: makes 'black' true black pixels"),
            "std": Option(None, "input normalization std (with mean)"),
            **SEED,
        },
    ),
    "guided_backprop": Method(
        input_methods.guided_backprop, "input", "abs", "guided backpropagation (Springenberg et al., 2015)"
    ),
    "gradcam": Method(
        cam_methods.cam(cam_methods.gradcam_weights),
        "layer",
        "positive",
        "Grad-CAM (Selvaraju et al., 2017)",
        CAM_OPTIONS,
        takes_layer=True,
    ),
    "gradcam++": Method(
        cam_methods.cam(cam_methods.gradcam_plus_plus_weights),
        "layer",
        "positive",
        "Grad-CAM++ (Chattopadhay et al., 2018)",
        CAM_OPTIONS,
        takes_layer=True,
    ),
    "layercam": Method(
        cam_methods.cam(cam_methods.layercam_weights),
        "layer",
        "positive",
        "LayerCAM (Jiang et al., 2021)",
        CAM_OPTIONS,
        takes_layer=True,
    ),
    "guided_gradcam": Method(
        input_methods.guided_gradcam,
        "input",
        "abs",
        "guided backprop times Grad-CAM (Selvaraju et al., 2017)",
        CAM_OPTIONS,
        takes_layer=True,
    ),
}
"""Every saliency method by name. Adding a method is adding one function and one entry here."""

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
