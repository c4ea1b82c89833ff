"""explore: a browsable static site of a model's layers, channels and photos (``fmapviz explore``).

* :mod:`.build` computes and caches (scan, explanations, channel examples, activation maximization, whose
  batches :mod:`.actmax_stage` makes); :mod:`.settings` holds :class:`ExploreSettings` and its quick preset;
* :mod:`.pages` turns the cache into HTML; :mod:`.cache` holds the atomic writes and cache keys;
* ``assets/`` holds the stylesheet and the small script the pages use (no network, no server).

Under ``torchrun``, ``torchrun --nproc-per-node 2 -m fmapviz explore MODEL DATA --layers L -o site/``
splits the work across processes (the scan shards as :func:`fmapviz.scan` does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from torch import nn

from ..data import list_photos
from ..devices import describe
from ..distributed import check_on_rank_zero
from ..files import FolderLock, write_json
from ..hooks import LayerSelectors
from ..inputs import default_transform
from ..models import LoadedModel
from .build import Site
from .cache import FORMAT, MARKER, check_same_site, claim_folder
from .layers import spatial_layers
from .settings import ExploreSettings

__all__ = ["ExploreSettings", "explore"]


def explore(
    model: nn.Module | LoadedModel,
    data: str | os.PathLike | Sequence[str | os.PathLike],
    layers: LayerSelectors,
    out: str | os.PathLike = "fmapviz-site",
    *,
    settings: ExploreSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or complete) an explorer site: model, layer, channel and photo pages, browsable from ``file://``.

    Every result is cached in ``out`` under keys of the model's weights and the settings, so a
    second run with more photos computes only what they need, and an interrupted run is finished
    by the next one.

    Args:
        model: a :class:`~fmapviz.models.LoadedModel` (its transform, class names and normalization
            are used) or an ``nn.Module`` (ImageNet preprocessing at 224 px, no class names).
        data: a folder of photos (searched recursively), a photo, or a list of photos.
        layers: one or many layer selectors with (N, C, H, W) outputs.
        out: the site folder. A folder that holds other files is refused unless ``force``
            (then the site is written into it; nothing is deleted).
        settings: an :class:`ExploreSettings` (defaults: an activation-maximization image for every channel,
            3 for the 16 of each layer that fire hardest, 128 steps at 128 px; 5 explained channels per layer
            and photo).
        force: write into a non-empty folder that is not an explorer site, or into a site of another model or
            other settings (its data is then replaced); without it both are refused and nothing is deleted.
        progress: progress bars on stderr, one per stage.

    Returns:
        The path of the site's ``index.html``.

    Raises:
        LayerNotFoundError: a selector matches no module.
        ImageLoadError: no photos in ``data``, or none of them can be read.
        FmapvizError: a layer without spatial maps, or ``out`` is not a site folder (and not ``force``).

    Example:
        >>> from fmapviz.explorer import ExploreSettings
        >>> quick = ExploreSettings(topk=2, crops=2, least=1, explain_top=1, actmax_top=1, actmax_copies=1,
        ...                         actmax_steps=8, actmax_size=64)  # a tiny site; the defaults show much more
        >>> loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
        >>> fmapviz.explore(loaded, "photos/", "features.14", "site/", settings=quick, progress=False)
        PosixPath('site/index.html')
    """
    from .pages import Pages

    settings = settings or ExploreSettings()
    if not isinstance(model, LoadedModel):
        model = LoadedModel(model, default_transform(), None, type(model).__name__, None)
    files = list_photos(data)
    first = model.transform(_first_readable(files))
    names = spatial_layers(model, layers, tuple(first.shape[-2:]))
    out = Path(out)
    site = Site(model, files, names, out, settings, progress)

    def claim(held: ExitStack) -> None:  # on rank 0; a refusal stops every rank, none waits for rank 0
        check_same_site(out, model.name, site.keys, force)
        claim_folder(out, force, files)
        held.enter_context(FolderLock(out))

    with ExitStack() as held:
        check_on_rank_zero(lambda: claim(held))
        seconds, results = {}, {}
        for stage in ("scan", "images", "channels", "actmax"):
            started = time.perf_counter()
            results[stage] = getattr(site, f"run_{stage}")()
            seconds[stage] = round(time.perf_counter() - started, 1)
        if site.rank != 0:
            return out / "index.html"
        started = time.perf_counter()
        index = Pages(site, results["channels"]).write()
        site.remove_stale()
        seconds["pages"] = round(time.perf_counter() - started, 1)
        description = {"format": FORMAT, "model": model.name, "weights": model.weights, **site.describe()}
        description["device"] = describe(model.device)  # where this run computed
        description["seconds"] = seconds  # of this run's stages: what the cache saved shows here
        write_json(out / MARKER, description)
    return index


def _first_readable(files: list[str]):
    """The first photo that opens, to learn the input size (the scan reports the unreadable ones)."""
    from ..errors import ImageLoadError
    from ..inputs import read_image_file

    for file in files:
        try:
            return read_image_file(file)
        except ImageLoadError:
            continue
    raise ImageLoadError(f"None of the {len(files)} photos could be read (first: {files[0]}).")
