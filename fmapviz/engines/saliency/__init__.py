"""Gradient saliency: which input pixels (or which places in a layer) drive a chosen output.

:func:`saliency` is the one entry point; :data:`METHODS` is the registry.

Registry design
---------------
A method is one entry of :data:`METHODS`, ``name -> Method``, and the entry is everything there is
to know about it (nothing else in the package names a method). It is registered beside its function
by the :func:`~.registry.register` decorator, in the module of its family under :mod:`.methods`
(importing this package imports them, in the order of every listing):

* ``compute(job) -> Attribution``: the one function. It gets a :class:`~.pipeline.Job` (model in
  eval mode with frozen parameters, input, parsed target, layers, checked options with defaults,
  batch size) and returns an :class:`~.result.Attribution`, the one result type: ``maps``
  ``(N, K, H, W)`` plus ``attributions`` ``(N, K, C, H, W)`` for input methods, ``layer_maps`` for
  methods that take layers, ``delta`` for IG. :func:`saliency` wraps it into a :class:`SaliencyResult`
  without knowing which method ran.
* ``space``: ``"input"`` or ``"layer"``; ``view``: the default view (a key of :data:`VIEWS`);
  ``takes_layer``: the method reads ``layers`` (``layers=None`` then searches for one, see
  :mod:`.layer_search`); ``seeded``: derived, true when the options have a ``seed``.
* ``options``: ``name -> Option(default, help, choices)``; option groups several methods share
  (``SEED``, ``CAM_OPTIONS``, ``NOISE_TUNNEL``, ...) are in :mod:`.registry`. Unknown options raise
  one line listing the options the method takes; captum's names (``nt_samples``, ``stdevs``,
  ``n_steps``, ``method``) raise with the fmapviz name (:data:`~.registry.FOREIGN_NAMES`).
* ``description``: one line for listings; the CLI's method list, its seeded methods and the report's
  methods all come from the registry.

Adding a method is one decorated function. The building blocks it uses:
:func:`~.pipeline.input_gradients` and :func:`~.pipeline.averaged_gradients` (gradients over any
perturbed copies: SmoothGrad's noise, so a ``smooth=`` wrapper for any input method),
:func:`~.pipeline.attribution_per_target` with ``job.score_function()`` for captum-backed methods
(IG, Occlusion, DeepLift, GradientSHAP), :func:`~.methods.cams.gradient_cam` for a CAM method that
only weighs ``(activation, gradient)``, and :func:`~.pipeline.layer_pass` /
``job.forward_scores(x, layers)`` for CAM methods that need extra forwards (Score-CAM, Ablation-CAM).

Modules: :mod:`.targets` (what a map explains, documented once, and the detection and segmentation
targets), :mod:`.pipeline` (Job, gradients, the CAM layer pass), :mod:`.methods` (the methods),
:mod:`.smoothing` (``smooth=``), :mod:`.layer_search` (:class:`LayerSearchCache`, an explicit cache
object), :mod:`.guided` (guided ReLU), :mod:`.baselines`, :mod:`.result` (:class:`SaliencyResult`,
:data:`VIEWS`), :mod:`.registry`.

Conventions followed (issue 17): CAM maps are clamped at the layer's resolution, then upsampled
bilinearly, as the papers, captum, pytorch-grad-cam and torchcam do (``clamp="upsampled"`` gives
fmapviz 0.1's order); SmoothGrad's noise is scaled by each image's own range; a reused module named
without ``#k`` is read at its last call, like captum's ``LayerGradCam``. Views: ``"max_abs"`` is
Simonyan et al.'s max_c |g| (the gradient's default view), ``"sum_abs"`` captum's sum_c |g|,
``"abs"`` |sum_c g| (the default of SmoothGrad and guided backprop, and the view of the README figures).
"""

from . import methods  # noqa: F401  (registers every method in METHODS)
from .api import auto_batch_size, saliency
from .baselines import BASELINES, make_baseline
from .guided import guided_relus
from .layer_search import LayerSearch, LayerSearchCache
from .registry import FOREIGN_NAMES, METHODS, Method, Option, method_entry, method_settings
from .result import VIEWS, Attribution, SaliencyResult, View, apply_view
from .targets import Target, TargetSpec, parse_target

__all__ = [
    "BASELINES",
    "FOREIGN_NAMES",
    "METHODS",
    "VIEWS",
    "Attribution",
    "LayerSearch",
    "LayerSearchCache",
    "Method",
    "Option",
    "SaliencyResult",
    "Target",
    "TargetSpec",
    "View",
    "apply_view",
    "auto_batch_size",
    "guided_relus",
    "make_baseline",
    "method_entry",
    "method_settings",
    "parse_target",
    "saliency",
]
