"""A live view of one photo in a notebook: :func:`interact` (ipywidgets, ``pip install 'fmapviz[notebook]'``).

Choose a layer and see its channel grid; choose a channel and see where it acts on the photo and the image
that maximizes it; choose a class and a saliency method and see the map. Every picture comes from the
engines and views (:func:`fmapviz.feature_maps`, :func:`fmapviz.show_maps`, :func:`fmapviz.maximize`,
:func:`fmapviz.show_gallery`, :func:`fmapviz.saliency`, :func:`fmapviz.show_saliency`), is computed only
when shown and kept, so going back to a layer, channel or class costs nothing. It uses only the standard
``Dropdown``, ``BoundedIntText`` and ``Image`` widgets, which Jupyter, JupyterLab and VS Code all render.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .engines.actmax import maximize
from .engines.saliency import METHODS, saliency
from .engines.saliency.layer_search import LayerSearchCache
from .hooks import feature_maps, resolve_layers
from .inputs import IMAGENET_MEAN, IMAGENET_STD, LoadedImage, denormalize
from .model_input import fixed_model_size
from .models import LoadedModel
from .outputs import output_tensor
from .plot import Figure
from .views import show_gallery, show_maps, show_saliency

METHOD_CHOICES = ("gradcam", "gradcam++", "layercam", "gradient", "integrated_gradients")
"""The saliency methods :func:`interact` offers by default (CAMs read the chosen layer)."""


def _widgets() -> ModuleType:
    try:
        import ipywidgets
    except ImportError:
        raise ImportError(
            "fmapviz.interact needs ipywidgets, which is not installed: pip install 'fmapviz[notebook]'."
        ) from None
    return ipywidgets


def _png(figure: Figure) -> bytes:
    return figure._repr_png_()


class Interactive:
    """The widget :func:`interact` returns: its controls, its pictures and what it computed.

    Attributes:
        layer, channel, target, method: the controls (``Dropdown``, ``BoundedIntText``, ``Dropdown``, ``Dropdown``);
            setting ``.value`` from code updates the pictures as a click does.
        grid, channel_view, actmax_view, saliency_view: ``Image`` widgets holding PNG bytes.
        computed: how many times each kind of result was computed (``"maps"``, ``"actmax"``, ``"saliency"``).
        widget: the ``VBox`` shown in the notebook (the object itself displays as it).
    """

    def __init__(
        self,
        model: nn.Module,
        image: LoadedImage,
        layers: list[str],
        categories: Sequence[str] | None,
        methods: Sequence[str],
        classes: int,
        actmax_steps: int,
        actmax_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        model_size: tuple[int, int] | None = None,
    ) -> None:
        widgets = _widgets()
        self.model, self.image, self.categories = model, image, categories
        # model_size: a fixed-size model (a ViT) sees each activation-maximization image resized to its own size
        self.actmax_settings = {
            "steps": actmax_steps,
            "size": actmax_size,
            "mean": mean,
            "std": std,
            "model_size": model_size,
        }
        self.computed: Counter[str] = Counter()
        self._maps: dict[str, torch.Tensor] = {}
        self._actmax: dict[tuple[str, int], Figure] = {}
        self._saliency: dict[tuple[str, int, str | None], Figure] = {}
        self._searches = LayerSearchCache()
        with torch.no_grad():
            scores = output_tensor(model(image.tensor[:1]))[0]
        top = scores.topk(min(classes, scores.numel())).indices.tolist()
        names = [f"{categories[i]} ({i})" if categories is not None else f"class {i}" for i in top]
        self.layer = widgets.Dropdown(options=layers, value=layers[-1], description="layer")
        self.channel = widgets.BoundedIntText(value=0, min=0, max=0, description="channel")
        self.target = widgets.Dropdown(options=list(zip(names, top)), value=top[0], description="class")
        self.method = widgets.Dropdown(options=list(methods), value=methods[0], description="method")
        self.grid, self.channel_view, self.actmax_view, self.saliency_view = (
            widgets.Image(format="png") for _ in range(4)
        )
        self.layer.observe(lambda _change: self._show_layer(), names="value")
        self.channel.observe(lambda _change: self._show_channel(), names="value")
        self.target.observe(lambda _change: self._show_saliency(), names="value")
        self.method.observe(lambda _change: self._show_saliency(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.layer, self.channel]),
                self.grid,
                widgets.HBox([self.channel_view, self.actmax_view]),
                widgets.HBox([self.target, self.method]),
                self.saliency_view,
            ]
        )
        self._show_layer()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def maps(self, layer: str) -> torch.Tensor:
        """``(1, C, H, W)`` feature maps of ``layer`` on the photo, computed once."""
        if layer not in self._maps:
            self._maps[layer] = feature_maps(self.model, self.image.tensor[:1], layer)[layer]
            self.computed["maps"] += 1
        return self._maps[layer]

    def _show_layer(self) -> None:
        maps = self.maps(self.layer.value)
        self.grid.value = _png(show_maps(maps, "top:16", image=self.image.display[:1], layer=self.layer.value))
        channel = min(self.channel.value, maps.shape[1] - 1)
        self.channel.max = maps.shape[1] - 1
        if channel == self.channel.value:  # a changed value shows the channel through its own observer
            self._show_channel()
        else:
            self.channel.value = channel
        self._show_saliency()

    def _show_channel(self) -> None:
        layer, channel = self.layer.value, self.channel.value
        maps = self.maps(layer)
        where = show_maps(maps, [channel], image=self.image.display[:1], overlay=True, layer=layer)
        self.channel_view.value = _png(where)
        if (layer, channel) not in self._actmax:
            result = maximize(self.model, f"{layer}[{channel}]", progress=False, **self.actmax_settings)
            self._actmax[layer, channel] = show_gallery(result, title=f"maximizes {layer}[{channel}]")
            self.computed["actmax"] += 1
        self.actmax_view.value = _png(self._actmax[layer, channel])

    def _show_saliency(self) -> None:
        method, target = self.method.value, self.target.value
        layer = self.layer.value if METHODS[method].takes_layer else None
        key = (method, target, layer)
        if key not in self._saliency:
            result = saliency(
                self.model,
                self.image.tensor[:1],
                method,
                target=target,
                layers=layer,
                categories=self.categories,
                layer_search=self._searches,
            )
            self._saliency[key] = show_saliency(result, self.image.display[:1])
            self.computed["saliency"] += 1
        self.saliency_view.value = _png(self._saliency[key])


def interact(
    model: nn.Module | LoadedModel,
    x: torch.Tensor | LoadedImage,
    layers: str | Sequence[str] | None = None,
    *,
    categories: Sequence[str] | None = None,
    methods: Sequence[str] = METHOD_CHOICES,
    classes: int = 5,
    actmax_steps: int = 32,
    actmax_size: int = 96,
) -> Interactive:
    """A live view of one photo: a layer's channel grid, one channel's map, its activation-maximization image,
    and a saliency map for a chosen class and method (ipywidgets; shown when it is a cell's last value).

    Args:
        model: a :class:`~fmapviz.models.LoadedModel` (its class names and normalization are used) or a module.
        x: a :class:`~fmapviz.inputs.LoadedImage` or a normalized ``(1, 3, H, W)`` tensor (the first image is used).
        layers: the layers to choose from (selectors, as in :func:`fmapviz.feature_maps`); default: every layer
            with ``(N, C, H, W)`` maps, the last one first shown.
        categories: class names (default: the loaded model's).
        methods: saliency methods to choose from (keys of ``fmapviz.engines.saliency.METHODS``).
        classes: how many of the top predicted classes to offer.
        actmax_steps, actmax_size: steps and size of each channel's activation-maximization image.

    Returns:
        An :class:`Interactive`; its ``computed`` counts say what was computed, ``.layer.value = ...`` drives it.

    Raises:
        ImportError: ipywidgets is not installed (the message names ``pip install 'fmapviz[notebook]'``).
        ValueError: an unknown method, or a model without spatial layers.

    Example:
        >>> view = fmapviz.interact(loaded, image, ["features.14", "features.18"], actmax_steps=4, actmax_size=48)
        >>> view.channel.value = 7  # as a click does: the channel's map and its actmax image update
        >>> dict(view.computed)
        {'maps': 1, 'actmax': 2, 'saliency': 1}
    """
    _widgets()
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown saliency method {unknown[0] if unknown else '(none)'}; use keys of METHODS.")
    loaded = model if isinstance(model, LoadedModel) else None
    module = loaded.model if loaded is not None else model
    mean = loaded.mean if loaded is not None else IMAGENET_MEAN
    std = loaded.std if loaded is not None else IMAGENET_STD
    categories = categories if categories is not None else (loaded.categories if loaded is not None else None)
    image = x if isinstance(x, LoadedImage) else LoadedImage(x[:1], denormalize(x[:1], mean, std), ["x"])
    if layers is None:
        names = LayerSearchCache().search(module, image.tensor[:1]).modules
    else:
        names = resolve_layers(module, [layers] if isinstance(layers, str) else list(layers))
    if not names:
        raise ValueError("The model has no layer with (N, C, H, W) maps; pass layers= to choose some.")
    model_size = fixed_model_size(loaded) if loaded is not None else None
    return Interactive(
        module, image, names, categories, methods, classes, actmax_steps, actmax_size, mean, std, model_size
    )
