"""Optional integrations with training tools; each submodule needs its extra and is never imported by ``fmapviz``.

* :mod:`.tensorboard` (``pip install fmapviz[tensorboard]``): :class:`~.tensorboard.FeatureMapLogger`;
* :mod:`.lightning` (``pip install fmapviz[lightning]``): :class:`~.lightning.FeatureMapCallback`.
"""
