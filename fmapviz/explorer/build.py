"""The stages of an explorer site: scan, per-image explanations, channel examples, activation maximization.

Each stage writes what it computes into ``data/`` of the site folder, one file per unit of work
(written atomically), under a folder named by a hash of the model's weights and the stage's settings.
A stage skips the work whose files exist, so a re-run with more photos computes only what they need,
and a run stopped by Ctrl-C is completed by the next. Under ``torchrun`` the scan shards as
:func:`fmapviz.scan` does, and the other stages split their work by rank.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, astuple
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import read_input
from ..distributed import barrier, gather_objects, rank_and_world
from ..engines.explain import explain_channels, unit_gradients
from ..engines.saliency import saliency
from ..engines.scan import ScanResult, receptive_window, scan
from ..errors import FmapvizError, ImageLoadError
from ..files import write_json, write_tensors
from ..inputs import denormalize
from ..layers import summary
from ..models import LoadedModel
from ..plot.colors import heat_layer
from ..plot.saliency import DIVERGING
from ..progress import Progress
from . import cache
from .actmax_stage import actmax_chunks, actmax_work, chunk_label, optimize_chunk
from .layers import safe_name
from .settings import ExploreSettings
from .status import StageProgress

CHANNEL_BATCH = 16  # channels whose what-drives-it maps share one forward and backward pass
STORAGE = "crops by photo digest, 64 px maps"  # how pictures are laid out: a change rebuilds old caches
PICTURE = "webp"  # every picture of a site: a fifth of PNG, two thirds of JPEG at the same look (benchmarks/RESULTS.md)
# optimized images: quality 90 takes 1.4x the bytes of 80 (8.6 against 6.0 KB at 128 px) and looks the same at 2x zoom
ACTMAX_QUALITY = 80
DRIVE_ALPHA = 0.7  # opacity of the what-drives-it map where it peaks (none where it is 0: the photo shows)
# maps are stored as see-through layers the pages lay over their photo (stored once): Grad-CAM and attribution maps
# (layer resolution 7 to 112 for mobilenet_v2) and the input gradient of a channel's best photo (smoothed over 9 of
# 224 pixels: at 112 px it took 1.9x the bytes of 64 px and looked the same over the photo at 224)
MAP_PIXELS = (64, 64)
PHOTO_CACHE = 512  # photos kept in memory as model inputs while channel pages are made


class Site:
    """One explorer build: the model, the photos, the settings and the site folder they are cached in."""

    def __init__(
        self,
        loaded: LoadedModel,
        files: Sequence[str],
        layers: list[str],
        out: Path,
        settings: ExploreSettings,
        progress: bool = True,
    ) -> None:
        self.loaded, self.files, self.layers, self.out, self.settings = loaded, list(files), layers, out, settings
        self.progress = progress
        self.rank, self.world = rank_and_world()
        weights = cache.weights_digest(loaded.model)
        if len(set(gather_objects(weights))) > 1:
            raise FmapvizError(
                "The torchrun processes hold different weights (a randomly initialized model?); "
                "load a checkpoint or seed the model factory so every process builds the same model."
            )
        transform = repr(loaded.transform)
        actmax = [settings.actmax_steps, settings.actmax_size, settings.actmax_stop, settings.seed, loaded.mean]
        keys = {
            "scan": cache.key(weights, layers, transform, settings.topk),
            "images": cache.key(weights, layers, transform, settings.explain_top, settings.method, PICTURE, STORAGE),
            "actmax": cache.key(weights, *actmax, PICTURE, ACTMAX_QUALITY),
        }
        keys["channels"] = cache.key(keys["scan"], settings.crops, PICTURE, STORAGE)
        self.keys = keys
        self.scan_result: ScanResult | None = None
        self.records: dict[str, dict] = {}  # image id -> its record
        self.unreadable: list[tuple[str, str]] = []
        self._photos: dict[str, torch.Tensor] = {}  # file -> model input, at most PHOTO_CACHE of them
        self._digests: dict[str, str] = {}  # file -> hash of its bytes

    def folder(self, stage: str) -> Path:
        return self.out / "data" / f"{stage}-{self.keys[stage]}"

    def bar(self, total: int, stage: str) -> Progress:
        """The progress of one stage, also in the site's status file (silent on ranks other than 0)."""
        return StageProgress(self.out, stage, total, enabled=self.progress and self.rank == 0, status=self.rank == 0)

    def mine(self, items: Sequence[Any]) -> list[Any]:
        """The part of ``items`` this process works on under torchrun (all of them otherwise)."""
        return list(items)[self.rank :: self.world]

    # ------------------------------------------------------------------------------------------ scan

    def run_scan(self) -> ScanResult:
        """Scan the photos not yet in the cached scan, in chunks (each saved), and return the whole scan."""
        path = self.folder("scan") / "scan.pt"
        state = cache.read_tensors(path)
        result = ScanResult.from_state(state) if state else None
        if result is not None and not set(result.sources) <= set(self.files):
            result = None  # photos were removed: their statistics cannot be taken out again
        self.unreadable = [tuple(item) for item in (result.skipped if result else [])]
        done = set(result.sources if result else []) | {source for source, _ in self.unreadable}
        todo = [file for file in self.files if file not in done]
        chunk = self.settings.batch_size * 4
        with self.bar(len(todo), "scan") as bar:
            for start in range(0, len(todo), chunk):
                files = todo[start : start + chunk]
                part = scan(
                    self.loaded,
                    files,
                    self.layers,
                    topk=self.settings.topk,
                    batch_size=self.settings.batch_size,
                )
                result = part if result is None else ScanResult.concatenate(result, part)
                if self.rank == 0:
                    write_tensors(path, result.to_state())
                bar.done(f"{len(files)} photos", len(files))
        if result is None or not result.images:
            reasons = "; ".join(f"{Path(source).name}: {reason}" for source, reason in self.unreadable[:3])
            raise ImageLoadError(f"None of the {len(self.files)} photos could be read ({reasons}).")
        result.transform = self.loaded.transform
        self.unreadable = [(str(source), reason) for source, reason in result.skipped]
        self.scan_result = result
        return result

    # ------------------------------------------------------------------------------------------ images

    def photo_digest(self, file: str) -> str:
        """A hash of the photo's bytes (read once per build)."""
        if file not in self._digests:
            self._digests[file] = cache.file_digest(file)
        return self._digests[file]

    def image_id(self, file: str) -> str:
        """The photo's name in the site: its file name and a hash of its bytes."""
        return f"{safe_name(Path(file).stem)[:40]}-{self.photo_digest(file)}"

    def run_images(self) -> dict[str, dict]:
        """Prediction, Grad-CAM and the explanation through channels for every readable photo."""
        skipped = {source for source, _ in self.unreadable}
        files = [file for file in self.files if file not in skipped]
        ids = {file: self.image_id(file) for file in files}
        folder = self.folder("images")
        todo = [file for file in files if cache.read_json(folder / ids[file] / "record.json") is None]
        size = self.settings.batch_size
        with self.bar(len(todo), "images") as bar:
            # whole batches per rank: each photo's numbers come from the batch one process puts it in
            for batch in self.mine([todo[start : start + size] for start in range(0, len(todo), size)]):
                self._explain_images(batch, [ids[file] for file in batch], folder)
                bar.done(f"{len(batch)} photos", len(batch) * self.world)
        barrier()
        for file in files:
            record = cache.read_json(folder / ids[file] / "record.json")
            if record is not None:
                self.records[ids[file]] = record
        return self.records

    def _explain_images(self, files: list[str], ids: list[str], folder: Path) -> None:
        loaded, settings = self.loaded, self.settings
        x = torch.stack([self.photo(file) for file in files]).to(loaded.device)
        display = denormalize(x.detach().cpu(), loaded.mean, loaded.std).clamp(0, 1)
        found = explain_channels(
            loaded.model,
            x,
            self.layers,
            "top",
            top=settings.explain_top,
            method=settings.method,
            categories=loaded.categories,
        )
        gradcam = saliency(loaded.model, x, "gradcam", target="top", layers=self.layers)  # the predicted class
        # by requested layer: a ViT's last block, which only its class token leaves, gives the nearest layer's map
        used = dict(zip(self.layers, gradcam.layers))
        probabilities = found.logits.softmax(dim=1).cpu()
        for row, (file, image_id) in enumerate(zip(files, ids)):
            where = folder / image_id
            cache.write_picture(where / f"photo.{PICTURE}", _pixels(display[row]))
            record: dict[str, Any] = {
                "file": file,
                "id": image_id,
                "target": int(found.target[row]),
                "prediction": _top_classes(probabilities[row], loaded.categories),
                "layers": {},
            }
            for name in self.layers:
                layer = found[name]
                channels = layer.channels[row].tolist()
                spatial = layer.maps[row, channels].cpu()
                peak = float(spatial.abs().max()) or 1.0
                cam = gradcam.layer_maps[used[name]][row, 0].detach().cpu()
                cam_peak = float(cam.max()) or 1.0
                cache.write_picture(
                    where / f"gradcam_{safe_name(name)}.{PICTURE}",
                    heat_layer(cam, "jet", MAP_PIXELS, 0.5, vmax=cam_peak),
                )
                for slot, channel in enumerate(channels):
                    tile = heat_layer(spatial[slot], DIVERGING, MAP_PIXELS, 0.6, vmin=-peak, vmax=peak)
                    cache.write_picture(where / f"attribution_{safe_name(name)}_{channel}.{PICTURE}", tile)
                record["layers"][name] = {
                    "channels": channels,
                    "values": [round(v, 4) for v in layer.values[row].tolist()],
                    "total": round(float(layer.attributions[row].sum()), 4),
                    "activations": [round(v, 4) for v in layer.activations[row].tolist()],
                    "gradcam_layer": used[name],
                }
            write_json(where / "record.json", record, indent=None)  # a whole model's record: 2,816 activations

    # ------------------------------------------------------------------------------------------ actmax

    def actmax_channels(self, layer: str) -> list[int]:
        """The channels of ``layer`` that get activation maximization, those firing hardest (mean of per-image
        maxima over the data) first."""
        order = self.scan_result[layer].image_max.mean.argsort(descending=True, stable=True).tolist()
        return order if self.settings.actmax_top is None else order[: self.settings.actmax_top]

    def actmax_path(self, layer: str, channel: int, copy: int) -> Path:
        return self.folder("actmax") / safe_name(layer) / f"{channel}_{copy}.{PICTURE}"

    def run_actmax(self) -> None:
        """Activation-maximization images of the chosen channels, and alternatives (other seeds) for the
        channels of each layer that fire hardest, batched across layers and copies (:mod:`.actmax_stage`)."""
        settings = self.settings
        chosen = {layer: self.actmax_channels(layer) for layer in self.layers}
        work = actmax_work(chosen, settings, lambda image: self.actmax_path(*astuple(image)).is_file())
        chunks = actmax_chunks(self.loaded, work, settings.actmax_size)
        with self.bar(len(work), "actmax") as bar:
            for chunk in self.mine(chunks):
                for image, pixels in zip(chunk, optimize_chunk(self.loaded, chunk, settings)):
                    cache.write_picture(self.actmax_path(*astuple(image)), _pixels(pixels), ACTMAX_QUALITY)
                bar.done(chunk_label(chunk), len(chunk) * self.world)
        barrier()

    # ------------------------------------------------------------------------------------------ channels

    def channel_folder(self, layer: str, channel: int) -> Path:
        return self.folder("channels") / safe_name(layer) / str(channel)

    def run_channels(self) -> dict[tuple[str, int], dict]:
        """Per channel: its top dataset crops with receptive-field boxes, and what drives it on its best photo."""
        result = self.scan_result
        work = []
        for layer in self.layers:
            scanned = result[layer]
            count = min(self.settings.crops, scanned.top_values.shape[1])
            for channel in range(scanned.channels):
                signature = cache.key(
                    [result.sources[int(i)] for i in scanned.top_sources[channel, :count]],
                    scanned.top_values[channel, :count].tolist(),
                )
                record = cache.read_json(self.channel_folder(layer, channel) / "record.json")
                work.append((layer, channel, signature, record))
        todo = [
            (layer, channel, signature) for layer, channel, signature, record in work if not _fresh(record, signature)
        ]
        groups = [todo[i : i + CHANNEL_BATCH] for i in range(0, len(todo), CHANNEL_BATCH)]
        groups = [[item for item in group if item[0] == layer] for group in groups for layer in self.layers]
        with self.bar(len(todo), "channels") as bar:
            for group in self.mine([group for group in groups if group]):
                self._channel_examples(group)
                bar.done(f"{group[0][0]} {len(group)} channels", len(group) * self.world)
        barrier()
        return {
            (layer, channel): cache.read_json(self.channel_folder(layer, channel) / "record.json") or {}
            for layer, channel, *_ in work
        }

    def photo(self, file: str) -> torch.Tensor:
        """The model input ``(3, H, W)`` of a photo, kept in memory for the next channels that need it."""
        if file not in self._photos:
            if len(self._photos) >= PHOTO_CACHE:
                self._photos.pop(next(iter(self._photos)))
            self._photos[file] = read_input(file, self.loaded.transform)
        return self._photos[file]

    def _channel_examples(self, group: list[tuple[str, int, str]]) -> None:
        """Crops and the what-drives-it map for channels of one layer, the maps in one batched pass."""
        loaded, result = self.loaded, self.scan_result
        mean, std = torch.tensor(loaded.mean)[:, None, None], torch.tensor(loaded.std)[:, None, None]
        layer = group[0][0]
        scanned, geometry = result[layer], result.geometry.get(layer)
        count = min(self.settings.crops, scanned.top_values.shape[1])
        records, driven = {}, []
        for _, channel, signature in group:
            crops = []
            for rank in range(count):
                source = result.sources[int(scanned.top_sources[channel, rank])]
                size = tuple(self.photo(source).shape[-2:])
                row, col = (int(v) for v in scanned.top_positions[channel, rank])
                window = receptive_window(geometry, row, col, size)
                box = crop_box(window, size)
                # one picture per photo region, shared by every channel (and rank) that shows it; the page draws
                # the window's box over it
                name = f"crops/{self.photo_digest(source)}_{'_'.join(map(str, box))}.{PICTURE}"
                if not (self.folder("channels") / name).is_file():
                    display = (self.photo(source) * std + mean).clamp(0, 1)
                    cache.write_picture(self.folder("channels") / name, crop_picture(display, box))
                crops.append(
                    {
                        "source": source,
                        "value": round(float(scanned.top_values[channel, rank]), 4),
                        "picture": name,
                        "box": window_in_crop(window, box),
                    }
                )
            records[channel] = {"signature": signature, "crops": crops, "drive": None}
            if count and float(scanned.top_values[channel, 0]) > 0:
                driven.append(channel)
        if driven:
            best = [result.sources[int(scanned.top_sources[channel, 0])] for channel in driven]
            x = torch.stack([self.photo(source) for source in best]).to(loaded.device)
            gradients = unit_gradients(loaded.model, x, layer, driven).cpu()
            gradients = torch.nn.functional.avg_pool2d(gradients[:, None], 9, 1, 4, count_include_pad=False)[:, 0]
            for channel, source, gradient in zip(driven, best, gradients):
                peak = float(torch.quantile(gradient.flatten(), 0.995)) or 1.0
                cache.write_picture(
                    self.channel_folder(layer, channel) / f"drive.{PICTURE}",
                    heat_layer(gradient, "jet", MAP_PIXELS, DRIVE_ALPHA, vmax=peak, fade=True),
                )  # as opaque as it is strong: where nothing drives the channel, the photo shows unchanged
                records[channel]["drive"] = {"source": source}
        for channel, record in records.items():
            write_json(self.channel_folder(layer, channel) / "record.json", record, indent=None)

    # ------------------------------------------------------------------------------------------ model

    def layer_table(self) -> list[dict[str, Any]]:
        """Every layer of the model (summary rows), as plain values."""
        size = self.scan_result.input_size or (224, 224)
        rows = summary(self.loaded.model, (1, 3, *size))
        return [
            {
                "name": row.name,
                "type": row.type,
                "shape": list(row.output_shape),
                "parameters": row.parameters,
                "stride": list(row.stride) if row.stride else None,
                "receptive_field": list(row.receptive_field) if row.receptive_field else None,
            }
            for row in rows
        ]

    def remove_stale(self) -> None:
        """Delete cached data of other weights or settings (only folders this builder names)."""
        current = {f"{stage}-{value}" for stage, value in self.keys.items()}
        for folder in (self.out / "data").glob("*-*"):
            stage = folder.name.rsplit("-", 1)[0]
            if folder.is_dir() and stage in self.keys and folder.name not in current:
                shutil.rmtree(folder, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "keys": self.keys, "layers": self.layers}


def crop_box(window: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region of a photo of ``size`` (H, W) shown for a receptive-field ``window`` (top, left, bottom, right):
    the window with a quarter of its size as context, inside the photo, as (left, top, right, bottom) pixels."""
    top, left, bottom, right = window
    height, width = size
    margin = max(bottom - top, right - left) // 4 + 2
    return max(0, left - margin), max(0, top - margin), min(width, right + margin + 1), min(height, bottom + margin + 1)


def window_in_crop(window: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> list[float]:
    """Where ``window`` lies in the crop ``box``: [left, top, width, height] in percent of the crop (drawn by CSS)."""
    top, left, bottom, right = window
    width, height = box[2] - box[0], box[3] - box[1]
    return [
        round(100 * (left - box[0]) / width, 1),
        round(100 * (top - box[1]) / height, 1),
        round(100 * (right + 1 - left) / width, 1),
        round(100 * (bottom + 1 - top) / height, 1),
    ]


def crop_picture(image: torch.Tensor, box: tuple[int, int, int, int], size: int = 112) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of ``image`` (3,H,W), resized so that its longer side is ``size``."""
    from PIL import Image

    picture = Image.fromarray(_pixels(image)).crop(box)
    scale = size / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    return np.asarray(picture)


def _fresh(record: dict | None, signature: str) -> bool:
    return record is not None and record.get("signature") == signature


def _top_classes(probabilities: torch.Tensor, categories: Sequence[str] | None, count: int = 5) -> list[list]:
    values, indices = probabilities.topk(min(count, probabilities.numel()))
    return [
        [int(i), categories[int(i)] if categories else f"class {int(i)}", round(float(v), 4)]
        for v, i in zip(values, indices)
    ]


def _pixels(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
