"""The method registry: one :class:`Method` entry per name, the whole truth about that method."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import closest_names
from . import cam_family, cam_methods, captum_methods, input_methods
from .pipeline import Job
from .result import Attribution, View
from .smoothing import CAM_SMOOTHING, NOISE_TUNNELS


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
TOP = {"top": Option(None, "score only the k channels of highest mean activation (None: all); the rest weigh 0")}
BATCHED_CAM = {**CAM_OPTIONS, **CAM_SMOOTH, **TOP}
PATCH_BASELINE = {
    "baseline": Option("black", "what replaces a patch: 'black', 'blur', 'rise_blur', 'noise' or a tensor"),
    "mean": Option(None, "input normalization mean: makes 'black' true black pixels"),
    "std": Option(None, "input normalization std (with mean)"),
}
IG_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

METHODS: dict[str, Method] = {
    "gradient": Method(
        input_methods.gradient, "input", "max_abs", "vanilla gradient (Simonyan et al., 2014)", NOISE_TUNNEL
    ),
    "input_x_gradient": Method(
        input_methods.input_x_gradient,
        "input",
        "signed",
        "input times gradient (Shrikumar et al., 2016)",
        NOISE_TUNNEL,
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
            **NOISE_TUNNEL,
        },
    ),
    "guided_backprop": Method(
        input_methods.guided_backprop,
        "input",
        "abs",
        "guided backpropagation (Springenberg et al., 2015)",
        NOISE_TUNNEL,
    ),
    "gradcam": Method(
        cam_methods.cam(cam_methods.gradcam_weights),
        "layer",
        "positive",
        "Grad-CAM (Selvaraju et al., 2017)",
        {**CAM_OPTIONS, **CAM_SMOOTH},
        takes_layer=True,
    ),
    "gradcam++": Method(
        cam_methods.cam(cam_methods.gradcam_plus_plus_weights),
        "layer",
        "positive",
        "Grad-CAM++ (Chattopadhay et al., 2018)",
        {**CAM_OPTIONS, **CAM_SMOOTH},
        takes_layer=True,
    ),
    "layercam": Method(
        cam_methods.cam(cam_methods.layercam_weights),
        "layer",
        "positive",
        "LayerCAM (Jiang et al., 2021)",
        {**CAM_OPTIONS, **CAM_SMOOTH},
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
    "xgradcam": Method(
        cam_methods.cam(cam_family.xgradcam),
        "layer",
        "positive",
        "XGrad-CAM (Fu et al., 2020): gradients weighted by the normalized activations",
        {**CAM_OPTIONS, **CAM_SMOOTH},
        takes_layer=True,
    ),
    "hirescam": Method(
        cam_methods.cam(cam_family.hirescam),
        "layer",
        "positive",
        "HiRes-CAM (Draelos & Carin, 2020): each position's activation times its own gradient",
        {**CAM_OPTIONS, **CAM_SMOOTH},
        takes_layer=True,
    ),
    "eigencam": Method(
        cam_family.eigencam,
        "layer",
        "positive",
        "Eigen-CAM (Muhammad & Yeasin, 2020): first principal component of the activations, no gradient",
        {
            **CAM_OPTIONS,
            "smooth": Option(None, "'aug': test-time augmentation (pytorch-grad-cam's aug_smooth)", (None, "aug")),
        },
        takes_layer=True,
    ),
    "eigengradcam": Method(
        cam_methods.cam(cam_family.hirescam, eigen=True),
        "layer",
        "positive",
        "EigenGrad-CAM: first principal component of activation times gradient (pytorch-grad-cam)",
        {**CAM_OPTIONS, "smooth": CAM_SMOOTH["smooth"]},
        takes_layer=True,
    ),
    "scorecam": Method(
        cam_family.score_cam,
        "layer",
        "positive",
        "Score-CAM (Wang et al., 2020): channels weighted by the score of the input they mask",
        BATCHED_CAM,
        takes_layer=True,
    ),
    "ablationcam": Method(
        cam_family.ablation_cam,
        "layer",
        "positive",
        "Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the score drop when zeroed",
        BATCHED_CAM,
        takes_layer=True,
    ),
    "fullgrad": Method(
        cam_family.fullgrad,
        "input",
        "positive",
        "FullGrad (Srinivas & Fleuret, 2019): input gradient plus every bias gradient",
        {"smooth": Option(None, "'aug': test-time augmentation (pytorch-grad-cam's aug_smooth)", (None, "aug"))},
    ),
    "smoothgrad_campp": Method(
        cam_family.smoothgrad_campp,
        "layer",
        "positive",
        "Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ on gradients averaged over noisy inputs",
        {
            **CAM_OPTIONS,
            "samples": Option(4, "noisy copies per image (torchcam's num_samples)"),
            "noise": Option(0.3, "absolute std of the input noise (torchcam's std)"),
            **SEED,
        },
        takes_layer=True,
    ),
    "occlusion": Method(
        captum_methods.occlusion_method,
        "input",
        "signed",
        "Occlusion (Zeiler & Fergus, 2014) via captum: score change as a patch slides over the image",
        {
            "patch": Option(None, "side of the occluding square in pixels (None: 1/14 of the input, 16 at 224)"),
            "stride": Option(None, "step between squares in pixels (None: half the patch)"),
            **PATCH_BASELINE,
            **NOISE_TUNNEL,
        },
    ),
    "feature_ablation": Method(
        captum_methods.feature_ablation_method,
        "input",
        "signed",
        "feature ablation via captum: score change when each square of a patch grid is replaced",
        {
            "patch": Option(None, "side of the grid's squares in pixels (None: 1/14 of the input, 16 at 224)"),
            **PATCH_BASELINE,
            **NOISE_TUNNEL,
        },
    ),
    "kernel_shap": Method(
        captum_methods.kernel_shap_method,
        "input",
        "signed",
        "KernelSHAP (Lundberg & Lee, 2017) via captum over a patch grid",
        {
            "patch": Option(None, "side of the grid's squares in pixels (None: 1/14 of the input, 16 at 224)"),
            "samples": Option(200, "coalitions sampled per image"),
            **PATCH_BASELINE,
            **SEED,
        },
    ),
    "deeplift": Method(
        captum_methods.deeplift_method,
        "input",
        "signed",
        "DeepLIFT, rescale rule (Shrikumar et al., 2017), via captum",
        {**PATCH_BASELINE, **NOISE_TUNNEL},
    ),
    "gradient_shap": Method(
        captum_methods.gradient_shap_method,
        "input",
        "signed",
        "GradientSHAP (Lundberg & Lee, 2017) via captum: expected gradients from black and noise baselines",
        {
            "samples": Option(5, "random points per image (captum's n_samples)"),
            "noise": Option(0.0, "absolute std of noise added to each point (captum's stdevs)"),
            "mean": PATCH_BASELINE["mean"],
            "std": PATCH_BASELINE["std"],
            **SEED,
        },
    ),
    "deconvolution": Method(
        captum_methods.deconvolution_method,
        "input",
        "abs",
        "Deconvolution (Zeiler & Fergus, 2014) via captum: ReLUs pass positive gradients only",
        NOISE_TUNNEL,
    ),
    "lrp": Method(
        captum_methods.lrp_method,
        "input",
        "signed",
        "layer-wise relevance propagation, epsilon rule (Bach et al., 2015), via captum",
        NOISE_TUNNEL,
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
