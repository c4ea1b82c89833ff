"""Faithfulness of explain_channels: zero the channels it ranks highest and watch the class logit fall.

    .venv/bin/python benchmarks/explain_channels.py

The real mobilenet_v2 (IMAGENET1K_V1 from $TORCH_HOME) over the 100 photos in
../shared/imagenet-samples (resize 256, centre-crop 224). For each photo and its predicted class,
5 channels of ``features.14`` are set to zero (a forward hook) and the drop of that class's logit
is measured, for three choices of channels: the 5 that ``explain_channels`` ranks highest
(activation x gradient summed over space), the 5 with the largest mean activation on that photo,
and 5 random ones (a seeded generator per photo). A faithful ranking drops the logit the most.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import SHARED, markdown_table, setup, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402

LAYER = "features.14"
COUNT = 5


def logit_drops(model: torch.nn.Module, x: torch.Tensor, count: int = COUNT, seed: int = 0) -> dict[str, torch.Tensor]:
    """``(N,)`` drop of the predicted class's logit when ``count`` channels of LAYER are zeroed, per ranking."""
    found = fmapviz.explain_channels(model, x, LAYER, "top", top=count)
    layer = found[LAYER]
    generator = torch.Generator().manual_seed(seed)
    random = torch.stack([torch.randperm(layer.attributions.shape[1], generator=generator)[:count] for _ in x])
    choices = {
        "explain_channels top 5": layer.channels,
        "5 most active": layer.activations.topk(count, dim=1).indices,
        "5 random": random,
    }
    module = dict(model.named_modules())[LAYER]
    rows = torch.arange(x.shape[0])[:, None]
    base = found.logits.gather(1, found.target[:, None])[:, 0]
    drops = {}
    for name, channels in choices.items():
        handle = module.register_forward_hook(lambda _m, _i, out, c=channels: out.index_put((rows, c), torch.zeros(())))
        try:
            with torch.no_grad():
                logits = model(x)
        finally:
            handle.remove()
        drops[name] = base - logits.gather(1, found.target[:, None])[:, 0]
    return drops


def main() -> None:
    setup()
    loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    files = sorted(str(p) for p in (SHARED / "imagenet-samples").glob("*.JPEG"))
    drops: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(files), 20):
        x = fmapviz.load_image(files[start : start + 20], loaded.transform).tensor
        for name, value in logit_drops(loaded.model, x, seed=start).items():
            drops.setdefault(name, []).append(value)
    joined = {name: torch.cat(values) for name, values in drops.items()}
    explained = joined["explain_channels top 5"]
    rows = [
        [name, f"{values.mean():.2f}", f"{values.median():.2f}", f"{(explained >= values).float().mean():.0%}"]
        for name, values in joined.items()
    ]
    rows[0][3] = "-"
    body = (
        f"mobilenet_v2 IMAGENET1K_V1, {len(files)} photos of ../shared/imagenet-samples at 224 px; "
        f"{COUNT} channels of `{LAYER}` zeroed; target: each photo's predicted class. "
        "The last column is how often the explain_channels choice drops the logit at least as much.\n\n"
        + markdown_table(["channels zeroed", "mean logit drop", "median drop", "explain_channels >= this"], rows)
    )
    print(body)
    write_section(
        "explain_channels",
        "Channel explanations: logit drop when zeroing channels (issue 14)",
        "python benchmarks/explain_channels.py",
        body,
    )


if __name__ == "__main__":
    main()
