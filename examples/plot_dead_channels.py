"""
Which channels of my layer are dead?
====================================

A channel is *dead* when it is never positive: after a ReLU it outputs zero for every image and
every position, so it passes nothing on and its weights get no gradient. Here we measure every
channel of a few layers of a trained ``mobilenet_v2`` over the photos in ``assets/``, and draw each
channel's peak. Background: :doc:`/concepts/dead_filters`.
"""

from pathlib import Path

import fmapviz

ASSETS = Path("../assets")  # chelsea.png, coffee.png, astronaut.png (run from examples/)
loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")

# %%
# ``channel_stats`` streams the photos through the model once and keeps, per channel, the mean, the
# peak and the fraction of positive values. The layers are the ReLU6 after each expansion convolution.
stats = fmapviz.channel_stats(
    ASSETS,
    loaded.model,
    ["features.1.conv.0.2", "features.10.conv.0.2", "features.17.conv.0.2"],
    transform=loaded.transform,
)
for name, layer in stats.items():
    print(f"{name}: {layer.channels} channels, dead {layer.dead_channels[:8]}, weak {layer.weak_channels[:8]}")

# %%
# Red lines are dead channels, orange ones weak (their peak is below a tenth of the layer's median
# peak); the gray curve is how often each channel is positive at all.
health = fmapviz.show_channel_stats(stats)

# %%
# Three photos are too few to call a channel dead for good: a channel may wait for something none of
# them shows. Run the same measurement over a few hundred images of your own data (a folder, a glob or a
# ``DataLoader``) before pruning anything; ``fmapviz scan`` does it from the command line.
