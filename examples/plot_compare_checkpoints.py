"""
Compare two checkpoints
=======================

Did fine-tuning keep the features the network learned before? Here is a fine-tune gone wrong: a
trained ``mobilenet_v2`` is trained for a few steps with a far too high learning rate on three
photos with wrong labels, and saved as a second checkpoint. :func:`fmapviz.compare` runs both
checkpoints over the same images and measures, layer against layer, how similar their feature maps
still are (linear CKA: 1 means the same representation), which channels died, and which predictions
changed. Background: :doc:`/concepts/dead_filters`.
"""

import copy
import tempfile
from pathlib import Path

import torch

import fmapviz

photos = Path("../assets")  # chelsea.png, coffee.png, astronaut.png (run from examples/)
folder = Path(tempfile.mkdtemp())
before = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
torch.save(before.model.state_dict(), folder / "before.pt")

# %%
# The bad fine-tune: 5 SGD steps at learning rate 0.5 towards class 0 ("tench").
tuned = copy.deepcopy(before.model).train()
x = fmapviz.load_image(photos, before.transform).tensor
optimizer = torch.optim.SGD(tuned.parameters(), lr=0.5)
for _ in range(5):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(tuned(x), torch.zeros(len(x), dtype=torch.long)).backward()
    optimizer.step()
torch.save(tuned.state_dict(), folder / "after.pt")

# %%
# Load both checkpoints into the same architecture and compare them over the photos.
model_a = fmapviz.load_model("mobilenet_v2", weights=None, checkpoint=folder / "before.pt")
model_b = fmapviz.load_model("mobilenet_v2", weights=None, checkpoint=folder / "after.pt")
result = fmapviz.compare(model_a, model_b, photos, names=("before", "after"))
print(f"predictions agree on {result.agreement:.0%} of the images")
for layer in ("features.2", "features.9", "features.17"):
    print(f"{layer}: CKA {result.similarity(layer, layer):.2f}")

# %%
# The CKA of every layer of one checkpoint against every layer of the other: a bright diagonal
# means each layer kept its representation; here it fades with depth.
cka = fmapviz.show_cka(result)

# %%
# Channel health of both checkpoints, layer by layer: channels the fine-tune killed show up in red.
health = fmapviz.show_compare_health(result)
