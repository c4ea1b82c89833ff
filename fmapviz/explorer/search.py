"""The model page's search index: every layer's channels, and the classes and photos that drive channels.

Written as ``search.js`` (a script, not JSON: a page opened from ``file://`` cannot fetch files) next to
``index.html``; ``assets/explore.js`` answers queries such as ``features.18 12``, ``features.18[12]``,
``tabby`` or ``cat.jpg`` from it without a server.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .layers import safe_name


def search_index(layers: dict[str, int], records: dict[str, dict]) -> dict[str, Any]:
    """The index: per layer its channel count and pages; per predicted class and per photo the channels that
    explain it (the top channels of each layer on its photos, most frequent first).

    Args:
        layers: layer name -> number of channels, shallow to deep.
        records: image id -> the image stage's record (file, prediction, explained channels per layer).

    Example:
        >>> search_index({"features.3": 16}, {})["layers"]["features.3"]["page"]
        'layers/features.3.html'
    """
    index: dict[str, Any] = {
        "layers": {
            name: {
                "channels": count,
                "page": f"layers/{safe_name(name)}.html",
                "folder": f"channels/{safe_name(name)}/",
            }
            for name, count in layers.items()
        },
        "drivers": [],
    }
    by_class: dict[str, Counter] = {}
    photos: dict[str, int] = Counter()
    for image_id, record in sorted(records.items(), key=lambda item: item[1]["file"]):
        channels = [
            [layer, channel] for layer in layers for channel in record["layers"].get(layer, {}).get("channels", [])
        ]
        label = record["prediction"][0][1]
        photos[label] += 1
        counted = by_class.setdefault(label, Counter())
        counted.update(tuple(item) for item in channels)
        index["drivers"].append(
            {
                "name": Path(record["file"]).name,
                "kind": "photo",
                "page": f"images/{image_id}.html",
                "channels": channels,
            }
        )
    for label, counted in sorted(by_class.items()):
        order = sorted(counted, key=lambda item: (-counted[item], list(layers).index(item[0]), item[1]))
        index["drivers"].append(
            {"name": label, "kind": f"class ({photos[label]} photos)", "channels": [list(item) for item in order]}
        )
    return index


def search_script(index: dict[str, Any]) -> str:
    """``index`` as the script ``search.js`` (sets ``window.FMAPVIZ_SEARCH``)."""
    return f"window.FMAPVIZ_SEARCH = {json.dumps(index, separators=(',', ':'))};\n"
