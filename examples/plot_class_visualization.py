"""
Visualize a class
=================

What does a trained network think a "goldfish" looks like? Activation maximization starts from
noise and changes the image, step by step, until the class score is as high as it can make it.
Here with the real ``mobilenet_v2`` weights at a small size and few steps, so it runs in seconds;
``size=224, steps=256`` gives the sharper pictures of the README. Background:
:doc:`/concepts/techniques`, :doc:`/concepts/hierarchy`.
"""

import fmapviz

loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
classes = ["goldfish", "daisy", "volcano"]

# %%
# Class names are matched case-insensitively against the model's categories. The optimized images
# are made of jittered, rotated and rescaled copies (``transforms="standard"``), which keeps the
# optimizer from writing adversarial high-frequency noise.
objectives = [f"class:{name}" for name in classes]
result = fmapviz.maximize(
    loaded.model,
    objectives,
    size=96,
    steps=48,
    mean=loaded.mean,
    std=loaded.std,
    categories=loaded.categories,
    progress=False,
)
gallery = fmapviz.show_gallery(result, names=classes)

# %%
# Does the network agree? Classify each picture with the model itself. At 96 pixels and 48 steps
# not every class comes out: a picture the model gives to another class shows what the
# optimizer found first, and more steps and pixels usually fix it.
import torch  # noqa: E402

x = torch.nn.functional.interpolate(result.images, size=224, mode="bilinear")
mean, std = torch.tensor(loaded.mean).view(1, 3, 1, 1), torch.tensor(loaded.std).view(1, 3, 1, 1)
with torch.no_grad():
    probabilities = loaded.model((x - mean) / std).softmax(1)
for name, row in zip(classes, probabilities):
    print(f"{name:>10}: classified as {loaded.categories[int(row.argmax())]} ({float(row.max()):.2f})")
