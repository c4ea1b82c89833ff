"""The saliency methods, one module per family; each method is registered beside its function with
:func:`~fmapviz.engines.saliency.registry.register`.

Importing this package fills :data:`~fmapviz.engines.saliency.METHODS` (``fmapviz.engines.saliency``
imports it). The modules are imported in this order, and each registers its methods in the order it
defines them: that is the order of every listing (``fmapviz saliency --method``, reports).

* :mod:`.gradients`: gradient, input x gradient, SmoothGrad, Integrated Gradients, guided backprop.
* :mod:`.cams`: Grad-CAM and its relatives (their arithmetic in :mod:`.cam_weights`), Guided Grad-CAM, FullGrad.
* :mod:`.perturbation`: Occlusion, Feature Ablation, KernelSHAP (through captum).
* :mod:`.captum`: DeepLIFT, GradientSHAP, Deconvolution, LRP (through captum).

A new method is one function in the module of its family, under ``@register(name, space=..., view=...,
description=..., options=...)``; a gradient CAM that only weighs ``(activation, gradient)`` is one
function under ``@gradient_cam(name, description)`` in :mod:`.cams`.
"""

from . import gradients, cams, perturbation, captum  # noqa: F401, I001  (the order is the registry's order)
