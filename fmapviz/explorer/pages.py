"""The explorer's HTML pages: model, layer, channel and image pages, from what the build stages cached.

Pages are plain HTML with relative links, one stylesheet and one small script copied from
``fmapviz/explore/assets``, so a site opens from ``file://`` with no server and no network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..engines.scan import HISTOGRAM_EDGES
from ..files import write_text
from . import cache
from .build import PICTURE, Site
from .layers import safe_name
from .search import search_index, search_script

ASSETS = Path(__file__).parent / "assets"
CROPS_ON_IMAGE_PAGE = 3
PAGE_TILES = 240  # tiles a layer page shows at first (20 rows); the others come by scrolling (explore.js)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, root: str, crumbs: Iterable[tuple[str, str | None]] = ()) -> str:
    """A whole HTML page; ``root`` is the relative path back to the site folder (``""``, ``"../"``...)."""
    trail = "".join(
        f'<span class="crumb">{f"<a href={esc(link)!r}>{esc(text)}</a>" if link else esc(text)}</span>'
        for text, link in crumbs
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{root}assets/explore.css"></head>\n'
        f'<body><header><a href="{root}index.html">fmapviz explorer</a>{trail}</header>\n'
        f"<main>\n{body}\n</main>\n"
        f'<script src="{root}assets/explore.js"></script></body></html>\n'
    )


class Pages:
    """Writes every page of a built :class:`~fmapviz.explorer.build.Site`."""

    def __init__(self, site: Site, channels: dict[tuple[str, int], dict]) -> None:
        self.site, self.out, self.result, self.channels = site, site.out, site.scan_result, channels
        self.health = self.result.dead_channels()
        self.image_ids = {record["file"]: image_id for image_id, record in site.records.items()}

    # ---------------------------------------------------------------------------------------- links

    def layer_link(self, layer: str, root: str) -> str:
        return f"{root}layers/{safe_name(layer)}.html"

    def channel_link(self, layer: str, channel: int, root: str) -> str:
        return f"{root}channels/{safe_name(layer)}/{channel}.html"

    def image_link(self, image_id: str, root: str) -> str:
        return f"{root}images/{image_id}.html"

    def data_link(self, path: Path, root: str) -> str:
        return root + path.relative_to(self.out).as_posix()

    def layered(self, photo: Path, heat: Path, root: str, size: str, alt: str) -> str:
        """A map stored as a see-through layer (``heat``), shown over its photo (whose picture is stored once)."""
        return (
            f'<span class="layered"><img class="{size}" src="{esc(self.data_link(photo, root))}" alt="{esc(alt)}">'
            f'<img class="{size} heat" src="{esc(self.data_link(heat, root))}" alt=""></span>'
        )

    def photo_picture(self, source: str) -> Path:
        return self.site.folder("images") / self.image_ids[source] / f"photo.{PICTURE}"

    def actmax_image(self, layer: str, channel: int, copy: int = 0) -> Path | None:
        path = self.site.actmax_path(layer, channel, copy)
        return path if path.is_file() else None

    def tile_image(self, layer: str, channel: int, root: str) -> str:
        """The channel's picture: its activation-maximization image, else its best dataset crop."""
        path = self.actmax_image(layer, channel)
        crops = self.channels.get((layer, channel), {}).get("crops")
        if path is None and crops:
            path = self.site.folder("channels") / crops[0]["picture"]
        return self.data_link(path, root) if path is not None else ""

    def crop_html(self, crop: dict, root: str, size: str, alt: str) -> str:
        """A dataset crop (a picture shared by every channel showing that photo region) with the channel's
        receptive-field window drawn over it."""
        left, top, width, height = crop["box"]
        picture = self.data_link(self.site.folder("channels") / crop["picture"], root)
        return (
            f'<span class="crop"><img class="{size}" src="{esc(picture)}" alt="{esc(alt)}">'
            f'<i style="left:{left}%;top:{top}%;width:{width}%;height:{height}%"></i></span>'
        )

    def state(self, layer: str, channel: int) -> str:
        health = self.health[layer]
        return "dead" if bool(health.dead[channel]) else "weak" if bool(health.weak[channel]) else "ok"

    # ---------------------------------------------------------------------------------------- write

    def write(self) -> Path:
        """Write every page and the assets; returns the path of ``index.html``."""
        for asset in ASSETS.iterdir():
            if asset.suffix in (".css", ".js"):
                cache.write_bytes(self.out / "assets" / asset.name, asset.read_bytes())
        for layer in self.site.layers:
            write_text(Path(self.layer_link(layer, str(self.out) + "/")), self.layer_page(layer))
            for channel in range(self.result[layer].channels):
                write_text(
                    Path(self.channel_link(layer, channel, str(self.out) + "/")), self.channel_page(layer, channel)
                )
        for image_id, record in self.site.records.items():
            write_text(Path(self.image_link(image_id, str(self.out) + "/")), self.image_page(record))
        counts = {layer: self.result[layer].channels for layer in self.site.layers}
        write_text(self.out / "search.js", search_script(search_index(counts, self.site.records)))
        return write_text(self.out / "index.html", self.model_page())

    # ---------------------------------------------------------------------------------------- model page

    def model_page(self) -> str:
        site, loaded = self.site, self.site.loaded
        table = {row["name"]: row for row in site.layer_table()}
        rows = []
        for layer in site.layers:
            row, health = table.get(layer.split("#")[0], {}), self.health[layer]
            rows.append(
                f'<tr><td><a href="{esc(self.layer_link(layer, ""))}">{esc(layer)}</a></td>'
                f"<td>{esc(_shape(row.get('shape')))}</td><td>{esc(_pair(row.get('stride')))}</td>"
                f"<td>{esc(_pair(row.get('receptive_field')))}</td><td class=num>{health.channels}</td>"
                f"<td class=num>{len(health.dead_channels)}</td><td class=num>{len(health.weak_channels)}</td></tr>"
            )
        strip = "".join(
            f'<section><h2><a href="{esc(self.layer_link(layer, ""))}">{esc(layer)}</a></h2><div class="tiles">'
            + "".join(
                self.tile(layer, channel, "")
                for channel in site.actmax_channels(layer)[:6] or range(min(6, self.result[layer].channels))
            )
            + "</div></section>"
            for layer in site.layers
        )
        photos = "".join(
            f'<a class="tile" href="{esc(self.image_link(image_id, ""))}">'
            f'<img src="{esc(self.data_link(site.folder("images") / image_id / f"photo.{PICTURE}", ""))}" alt=""'
            ' loading="lazy" width="96" height="96">'
            f"<small>{esc(record['prediction'][0][1])}</small></a>"
            for image_id, record in sorted(site.records.items(), key=lambda item: item[1]["file"])
        )
        every = "".join(
            f"<tr><td>{esc(row['name'])}</td><td>{esc(row['type'])}</td><td>{esc(_shape(row['shape']))}</td>"
            f"<td class=num>{row['parameters']:,}</td><td>{esc(_pair(row['stride']))}</td>"
            f"<td>{esc(_pair(row['receptive_field']))}</td></tr>"
            for row in table.values()
        )
        unreadable = "".join(f"<li>{esc(source)}: {esc(reason)}</li>" for source, reason in site.unreadable)
        body = (
            f"<h1>{esc(loaded.name)}</h1><p>weights: {esc(loaded.weights or 'none')} · "
            f"{self.result.images} photos scanned at {esc(_pair(self.result.input_size))} · "
            f"explained with {esc(site.settings.method)}</p>"
            '<form id="search" class="controls"><label>find a channel <input type="search" id="search-query" '
            'size="36" placeholder="features.18 12 · features.18[12] · a class · a photo"></label>'
            '<button>go</button></form><ul id="search-results"></ul><script src="search.js"></script>'
            "<h2>Explored layers</h2><table><tr><th>layer</th><th>output</th><th>stride</th><th>receptive field</th>"
            f"<th>channels</th><th>dead</th><th>weak</th></tr>{''.join(rows)}</table>"
            '<p class="note">dead: never positive on any photo; weak: peak below a tenth of the layer\'s median.</p>'
            f'<h2>Shallow to deep</h2><div class="strip">{strip}</div>'
            f'<h2>Photos</h2><div class="tiles">{photos}</div>'
            + (f"<h2>Unreadable photos</h2><ul>{unreadable}</ul>" if unreadable else "")
            + "<details><summary>All layers</summary><table><tr><th>layer</th><th>type</th><th>output</th>"
            f"<th>parameters</th><th>stride</th><th>receptive field</th></tr>{every}</table></details>"
        )
        return page(f"{loaded.name}: fmapviz explorer", body, "", [(loaded.name, None)])

    def tile(self, layer: str, channel: int, root: str, **data: float) -> str:
        """A channel's tile (``explore.js`` makes the same from a layer page's ``tile-data``)."""
        attributes = "".join(f' data-{name}="{value:.6g}"' for name, value in data.items())
        image = self.tile_image(layer, channel, root)
        picture = (
            f'<img src="{esc(image)}" alt="channel {channel}" loading="lazy" width="96" height="96">'
            if image
            else '<div class="small"></div>'
        )
        return (
            f'<a class="tile" href="{esc(self.channel_link(layer, channel, root))}" data-channel="{channel}"'
            f' data-state="{self.state(layer, channel)}"{attributes}>{picture}<span>{channel}</span>'
            + (f"<small>max {data['max']:.3g}</small>" if "max" in data else "")
            + "</a>"
        )

    # ---------------------------------------------------------------------------------------- layer page

    def layer_page(self, layer: str) -> str:
        stats, health = self.result.stats(layer), self.health[layer]
        values = {
            channel: {
                "mean": float(stats.mean[channel]),
                "max": float(stats.max[channel]),
                "positive": float(stats.fraction_positive[channel]),
            }
            for channel in range(health.channels)
        }
        tiles = "".join(self.tile(layer, c, "../", **values[c]) for c in range(min(PAGE_TILES, health.channels)))
        data = [
            [
                c,
                self.state(layer, c),
                *(float(f"{v:.6g}") for v in values[c].values()),
                self.tile_image(layer, c, "../"),
            ]
            for c in range(health.channels)
        ]  # every tile, for sorting, filtering and the pages after the first (a script: file:// cannot fetch)
        script = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        url = self.channel_link(layer, 0, "../").rsplit("/", 1)[0] + "/CHANNEL.html"
        body = (
            f"<h1>{esc(layer)}</h1><p>{health.channels} channels · {len(health.dead_channels)} dead · "
            f"{len(health.weak_channels)} weak · tiles show the activation-maximization image where one was made, "
            "else the best dataset crop.</p>"
            '<div class="controls"><label>sort by <select id="sort"><option value="channel">channel</option>'
            '<option value="mean">mean</option><option value="max">max</option>'
            '<option value="positive">fraction positive</option></select></label>'
            '<label><input type="checkbox" id="hide-dead"> hide dead</label>'
            '<label><input type="checkbox" id="hide-weak"> hide weak</label>'
            '<form id="jump">channel <input type="number" id="jump-to" min="0" '
            f'max="{health.channels - 1}"> <button>go</button></form><span id="shown" class="note"></span></div>'
            f'<div class="tiles" id="tiles" data-channel-url="{esc(url)}" data-page="{PAGE_TILES}">{tiles}</div>'
            f'<p><button id="more" hidden>show more</button></p><script type="application/json" id="tile-data">'
            f"{script}</script>"
        )
        return page(f"{layer}: fmapviz explorer", body, "../", [(self.site.loaded.name, None), (layer, None)])

    # ---------------------------------------------------------------------------------------- channel page

    def channel_page(self, layer: str, channel: int) -> str:
        site, root = self.site, "../../"
        stats, scanned = self.result.stats(layer), self.result[layer]
        record = self.channels.get((layer, channel), {})
        names = [
            ("mean", stats.mean),
            ("std", stats.std),
            ("max", stats.max),
            ("min", stats.min),
            ("fraction positive", stats.fraction_positive),
            ("mean of per-photo maxima", scanned.image_max.mean),
        ]
        table = "".join(f"<tr><td>{name}</td><td class=num>{float(v[channel]):.4g}</td></tr>" for name, v in names)
        table += f"<tr><td>status</td><td>{self.state(layer, channel)}</td></tr>"
        actmax = [self.actmax_image(layer, channel, copy) for copy in range(site.settings.actmax_copies)]
        actmax_html = (
            '<div class="row">'
            + "".join(
                f'<figure><img class="{"big" if copy == 0 else "mid"}" src="{esc(self.data_link(path, root))}" '
                f'alt="activation maximization"><figcaption>{"seed " + str(site.settings.seed + copy)}'
                "</figcaption></figure>"
                for copy, path in enumerate(actmax)
                if path is not None
            )
            + "</div>"
            if actmax[0] is not None
            else self.best_crop(layer, channel, root)
        )
        crops = "".join(
            self.photo_figure(
                crop["source"],
                root,
                self.crop_html(crop, root, "small", Path(crop["source"]).name),
                f"{crop['value']:.3g}",
            )
            for crop in record.get("crops", [])
        )
        least = self.least_activating(layer, channel, root)
        drive = record.get("drive")
        drive_html = (
            "<figure>"
            + self.layered(
                self.photo_picture(drive["source"]),
                site.channel_folder(layer, channel) / f"drive.{PICTURE}",
                root,
                "big",
                "input gradient",
            )
            + "<figcaption>|d mean activation / d pixel| on the best photo, smoothed</figcaption></figure>"
            if drive and drive["source"] in self.image_ids
            else '<p class="note">The channel never fires, so no photo drives it.</p>'
        )
        count = scanned.channels
        neighbours = " · ".join(
            f'<a href="{esc(self.channel_link(layer, other, root))}">{text}</a>'
            for text, other in (("previous", channel - 1), ("next", channel + 1))
            if 0 <= other < count
        )
        body = (
            f"<h1>{esc(layer)}[{channel}]</h1><p>{neighbours} · "
            f'<a href="{esc(self.layer_link(layer, root))}">all channels of {esc(layer)}</a></p>'
            f'<div class="row"><div><h2>Activation maximization</h2>{actmax_html}</div>'
            f"<div><h2>Statistics</h2><table>{table}</table></div>"
            "<div><h2>Per-photo maxima</h2>"
            + histogram_svg(
                scanned.histogram[channel], float(scanned.image_max.min[channel]), float(scanned.image_max.max[channel])
            )
            + "</div></div>"
            f'<h2>Top dataset examples</h2><p class="note">Receptive field of the strongest position (box), '
            f'with the peak value.</p><div class="row">{crops}</div>'
            f'<h2>Least activating photos</h2><div class="row">{least}</div>'
            f"<h2>What drives it on its best photo</h2>{drive_html}"
        )
        crumbs = [(site.loaded.name, None), (layer, self.layer_link(layer, root)), (str(channel), None)]
        return page(f"{layer}[{channel}]: fmapviz explorer", body, root, crumbs)

    def best_crop(self, layer: str, channel: int, root: str) -> str:
        """What stands in for a missing activation-maximization image: the channel's best dataset crop."""
        crops = self.channels.get((layer, channel), {}).get("crops")
        if not crops:
            return '<p class="note">No activation-maximization image and no dataset example.</p>'
        return (
            f"<figure>{self.crop_html(crops[0], root, 'big', 'best dataset crop')}"
            f"<figcaption>its best dataset crop: only the {self.site.settings.actmax_top} channels of each layer "
            "that fire hardest are optimized (--actmax-top N or all)</figcaption></figure>"
        )

    def photo_figure(self, source: str, root: str, image: str, caption: str) -> str:
        """``image`` (HTML) linked to the page of the photo ``source`` when the site has one, with a caption."""
        image_id = self.image_ids.get(source)
        linked = f'<a href="{esc(self.image_link(image_id, root))}">{image}</a>' if image_id else image
        return f"<figure>{linked}<figcaption>{caption}</figcaption></figure>"

    def least_activating(self, layer: str, channel: int, root: str) -> str:
        records = [r for r in self.site.records.values() if layer in r["layers"]]
        records.sort(key=lambda r: r["layers"][layer]["activations"][channel])
        figures = []
        for r in records[: self.site.settings.least]:
            picture = self.data_link(self.photo_picture(r["file"]), root)
            image = f'<img class="small" src="{esc(picture)}" alt="{esc(Path(r["file"]).name)}">'
            figures.append(
                self.photo_figure(r["file"], root, image, f"mean {r['layers'][layer]['activations'][channel]:.3g}")
            )
        return "".join(figures)

    # ---------------------------------------------------------------------------------------- image page

    def image_page(self, record: dict) -> str:
        site, root = self.site, "../"
        folder = site.folder("images") / record["id"]
        prediction = "".join(
            f"<tr><td>{esc(name)}</td><td class=num>{probability:.1%}</td></tr>"
            for _, name, probability in record["prediction"]
        )
        photo = folder / f"photo.{PICTURE}"
        cams = "".join(
            "<figure>"
            + self.layered(photo, folder / f"gradcam_{safe_name(layer)}.{PICTURE}", root, "big", f"Grad-CAM at {layer}")
            + f"<figcaption>Grad-CAM at {esc(_gradcam_layer(record, layer))}</figcaption></figure>"
            for layer in site.layers
        )
        target = record["prediction"][0][1] if record["prediction"][0][0] == record["target"] else record["target"]
        sections = []
        for layer in site.layers:
            explained = record["layers"][layer]
            rows = []
            peak = max((abs(v) for v in explained["values"]), default=1.0) or 1.0
            for channel, value in zip(explained["channels"], explained["values"]):
                attribution = folder / f"attribution_{safe_name(layer)}_{channel}.{PICTURE}"
                actmax = self.actmax_image(layer, channel)
                channel_record = self.channels.get((layer, channel), {})
                crops = "".join(
                    self.crop_html(crop, root, "small", f"top example {rank}")
                    for rank, crop in enumerate(channel_record.get("crops", [])[:CROPS_ON_IMAGE_PAGE])
                )
                rows.append(
                    f'<tr><td><a href="{esc(self.channel_link(layer, channel, root))}">{esc(layer)}[{channel}]</a></td>'
                    f'<td class=num>{value:+.3g}<br><span class="bar" style="width:{60 * abs(value) / peak:.0f}px">'
                    f"</span></td><td>{self.layered(photo, attribution, root, 'mid', 'where')}</td><td>"
                    + (
                        f'<img class="mid" src="{esc(self.data_link(actmax, root))}" alt="activation maximization">'
                        if actmax
                        else '<span class="note">not optimized</span>'
                    )
                    + f"</td><td>{crops}</td></tr>"
                )
            sections.append(
                f"<h2>{esc(layer)}</h2><p class=note>all channels together: {explained['total']:+.3g}</p>"
                '<table class="explain"><tr><th>channel</th><th>attribution</th><th>where (red adds, blue takes)</th>'
                f"<th>what it looks for</th><th>top dataset examples</th></tr>{''.join(rows)}</table>"
            )
        body = (
            f"<h1>{esc(Path(record['file']).name)}</h1>"
            f'<div class="row"><figure><img class="big" src="{esc(self.data_link(photo, root))}" '
            f'alt="photo"></figure><div><h2>Prediction</h2><table>{prediction}</table></div>{cams}</div>'
            f"<h2>Explanation through channels: why '{esc(target)}'</h2>"
            f'<p class="note">{esc(site.settings.method)}: each channel\'s contribution to the class logit, '
            "summed over positions (Building Blocks); the map shows where it contributes.</p>" + "".join(sections)
        )
        crumbs = [(site.loaded.name, None), (Path(record["file"]).name, None)]
        return page(f"{Path(record['file']).name}: fmapviz explorer", body, root, crumbs)


def _gradcam_layer(record: dict, layer: str) -> str:
    """The layer whose Grad-CAM an image page shows for ``layer``: a ViT's last block gives the nearest one reached."""
    used = record["layers"][layer].get("gradcam_layer", layer)
    return layer if used == layer else f"{used} (nearest to {layer} that the class reaches)"


def histogram_svg(counts: torch.Tensor, low: float, high: float, width: int = 280, height: int = 110) -> str:
    """An inline SVG bar chart of one channel's histogram over the scan's signed-log bins (non-empty range),
    its axis labelled with the data's own range ``low`` to ``high`` (not the outer bin edges, which go past it)."""
    nonzero = torch.nonzero(counts).flatten()
    if nonzero.numel() == 0:
        return '<p class="note">no photos</p>'
    first, last = int(nonzero[0]), int(nonzero[-1])
    shown = counts[first : last + 1].double()
    top = float(shown.max())
    bar = width / shown.numel()
    edges = HISTOGRAM_EDGES.tolist()
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 18 - (height - 24) * float(c) / top:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{(height - 24) * float(c) / top:.1f}"><title>{int(c)} photos{_bin_range(edges, first + i)}</title>'
        "</rect>"
        for i, c in enumerate(shown)
        if c  # an empty bin draws nothing (a whole model's pages held 1.6 KB of empty bars each)
    )
    return (
        f'<svg class="histogram" width="{width}" height="{height}" viewBox="0 0 {width} {height}">{rects}'
        f'<text x="0" y="{height - 4}" font-size="11">{low:.4g}</text>'
        f'<text x="{width}" y="{height - 4}" font-size="11" text-anchor="end">{high:.4g}</text></svg>'
        f'<p class="note">{int(counts.sum())} photos, per-photo maxima from {low:.4g} to {high:.4g}</p>'
    )


def _bin_range(edges: list[float], index: int) -> str:
    below = f"{edges[index - 1]:.3g}" if index > 0 else "−∞"
    above = f"{edges[index]:.3g}" if index < len(edges) else "∞"
    return f" in ({below}, {above}]"


def _shape(shape: list[int] | None) -> str:
    return "×".join(str(v) for v in shape[1:]) if shape else "?"


def _pair(pair: Any) -> str:
    if not pair:
        return "?"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"
