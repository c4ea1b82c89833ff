"""Capturing feature maps with forward hooks, the layer selectors every ``layers`` argument takes, and model_guard.

The modules: :mod:`~fmapviz.hooks.selectors` (selectors and capture keys), :mod:`~fmapviz.hooks.recording`
(:func:`capture`, :func:`feature_maps`), :mod:`~fmapviz.hooks.copy_guard` (exact values next to in-place
ops) and :mod:`~fmapviz.hooks.state` (:func:`model_guard`). Engines that need something else from a
forward pass (gradients of one module in the CAM family, call counts) register their own hooks.

Layer selectors, used everywhere a ``layers`` argument appears:

* an exact module name as in ``model.named_modules()``: ``"features.3.conv.0"``;
* a glob over those names: ``"layer3.*.conv2"`` (``*`` stays within one dotted part,
  ``**`` crosses parts: ``"layer3.**"`` is everything inside layer3);
* a module type, as a class or its name: ``nn.Conv2d`` or ``"Conv2d"``;
* a module instance of the model;
* ``"all"``: every submodule (containers included), in execution order.

Values are exactly what each layer returned, even when the model later rewrites
that tensor in place (``ReLU(inplace=True)``, ``out += identity``). The first few
megabytes of maps in a pass are copied as they are captured (cheaper than watching);
after that, maps are held by reference and a dispatch-level guard protects them: a map is
copied only at the moment an in-place op is about to overwrite it, or not at all when the
op can run out of place instead (with private PyTorch APIs switched off, see :mod:`fmapviz._torch_internals`,
every map is copied as it is captured).
A module that runs more than once per forward gives one entry per call:
``"relu"``, ``"relu#2"``, ``"relu#3"`` (torchvision's ResNet blocks call one ``relu`` twice; the
second call is the block output). A call key is a layer selector too: ``"layer4.1.relu#2"`` captures
only that call.

.. _reused-modules:

Reused modules, one rule for every engine: where one map per layer is needed (saliency layers and
unit targets, actmax objectives), a module named without ``#k`` means its **last call** in the forward
pass, as captum's ``LayerGradCam`` reads it; name ``"layer4.1.relu#1"`` for the first. :func:`layer_keys`
applies the rule. :func:`capture` and :func:`feature_maps` return every call.

Transformer outputs are stored as (N, C, H, W) maps: ViT tokens ``(N, 1+H*W, C)`` and Swin's
channels-last ``(N, H, W, C)`` are read with :func:`fmapviz.tokens.to_spatial` (``layout=`` overrides
the guess). NCHW and (N, C) outputs are stored with exactly the values returned.

Other outputs go through :mod:`fmapviz.outputs` (the first tensor of a tuple, dict or dataclass,
or ``.logits``), with two exceptions. A dict of maps (every value a tensor of 3 or more dims,
as the OrderedDict of an FPN backbone or a segmentation model's ``{"out", "aux"}``) gives one
entry per level, ``"<layer>:<key>"``: ``"backbone:0"``, ``"backbone:1"``, ``"backbone:pool"``.
A layer whose output holds no tensor at all (a detector's ``transform`` returns an ``ImageList``)
gets no entry.
"""

from .recording import Capture, FeatureMaps, Layout, capture, feature_maps, map_levels
from .selectors import LayerSelector, LayerSelectors, call_number, layer_keys, module_name, resolve_layers
from .state import model_guard

__all__ = [
    "Capture",
    "FeatureMaps",
    "LayerSelector",
    "LayerSelectors",
    "Layout",
    "call_number",
    "capture",
    "feature_maps",
    "layer_keys",
    "map_levels",
    "model_guard",
    "module_name",
    "resolve_layers",
]
