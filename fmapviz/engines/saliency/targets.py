"""Saliency targets: what score a map explains.

Targets (the ``target`` argument, explained here once for every function that takes one):

* ``"top"``: the highest-scoring class of each image; ``"top:3"``: the three best, one map each.
* an ``int``: that class index for every image; a list or 1-D tensor of ints: one class per image;
  a 2-D ``(1, K)`` or ``(N, K)`` tensor or nested list: K classes per image, K maps from one forward.
* a ``str``: a class name, looked up case-insensitively in ``categories`` (e.g.
  ``LoadedModel.categories``) with :func:`fmapviz.vocabulary.class_index`; a miss lists the closest.
* a **unit** (:mod:`fmapviz.vocabulary`): ``"features.10[17]"`` or ``fmapviz.Unit("features.10", 17)``
  is the mean activation of channel 17 of ``features.10``, so the map shows which pixels drive that
  feature map; ``"features.10[17,7,7]"`` is the neuron at row 7, column 7, ``"features.10[17,center]"``
  the one in the middle of the map. A module that runs more than once is read at its last call unless
  the layer names one (``"layer4.1.relu#1[5]"``), as everywhere a layer is named.
* a callable ``fn(output) -> (N,) or (N, K) tensor``: any score (or K scores, one map each) computed
  from the model output (the output passes through :func:`fmapviz.outputs.output_tensor` first, unless the callable has
  ``raw_output = True``: then it gets the model's output as returned, e.g. a detection model's list
  of dicts). Methods that run expanded batches (SmoothGrad samples, IG steps) call it with those rows.
  Ready-made ones, for models that are not classifiers:

  * :class:`BoxScoreTarget` for torchvision detection models (``fasterrcnn_*``, ``retinanet_*``,
    ``fcos_*``, ``ssd*``), whose eval-mode output is a list of dicts with ``boxes``, ``labels``
    and ``scores``. It sets ``raw_output = True``, so saliency hands it that list as returned.
  * :class:`MaskTarget` for segmentation models (torchvision's ``deeplabv3_*``, ``lraspp_*``, ``fcn_*``
    return ``{"out": (N, K, H, W)}``; :mod:`fmapviz.outputs` takes ``"out"`` from it).

Class targets are scored on the raw output (logits), not on softmax probabilities.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ...hooks import layer_keys
from ...vocabulary import Unit, class_index, is_unit, parse_unit

TargetSpec = Any  # see the module docstring


@dataclass
class Target:
    """A parsed target: class indices (fixed or top-k), a score function, or a unit of a layer."""

    label: str
    classes: torch.Tensor | None = None  # (1, K) or (N, K) fixed class indices
    top: int = 0
    score: Callable[[Any], torch.Tensor] | None = None
    unit: Unit | None = None
    raw: bool = False  # the score function takes the model output as returned

    @property
    def needs_output(self) -> bool:
        """Whether the score reads the model output (not only a layer's map)."""
        return self.unit is None

    def indices(self, output: torch.Tensor) -> torch.Tensor | None:
        """``(N, K)`` class indices for this output, or None for score and unit targets."""
        if self.top:
            if self.top > output.shape[1]:
                raise ValueError(
                    f"target 'top:{self.top}' asks for more classes than the output has ({output.shape[1]})."
                )
            return output.topk(self.top, dim=1).indices
        if self.classes is None:
            return None
        classes = self.expanded_classes(output.shape[0], output.device)
        if int(classes.max()) >= output.shape[1] or int(classes.min()) < 0:
            raise ValueError(
                f"Class index {int(classes.max())} is out of range: the model has {output.shape[1]} outputs."
            )
        return classes

    def expanded_classes(self, batch: int, device: torch.device) -> torch.Tensor:
        """``(N, K)`` fixed class indices for a batch of ``batch`` images."""
        if self.classes.shape[0] not in (1, batch):
            raise ValueError(f"Got {self.classes.shape[0]} per-image class targets for a batch of {batch} images.")
        return self.classes.to(device).expand(batch, -1)

    def scores(
        self, output: Any, maps: Mapping[str, torch.Tensor], indices: torch.Tensor | None, rows: int
    ) -> list[torch.Tensor]:
        """One differentiable ``(rows,)`` score per target column."""
        if self.unit is not None:
            return [unit_score(maps, self.unit)]
        if self.score is not None:
            return score_columns(check_scores(self.score(output), rows))
        return [output.gather(1, indices[:, k : k + 1]).squeeze(1) for k in range(indices.shape[1])]


def unit_score(maps: Mapping[str, torch.Tensor], unit: Unit) -> torch.Tensor:
    """``(N,)`` score of a unit: its channel's mean, or one neuron, from the captured ``maps``."""
    keys = layer_keys(maps, unit.layer)
    if not keys:
        raise ValueError(f"Unit {unit}: layer {unit.layer} did not run before the forward ended; check its name.")
    if len(keys) != 1:
        example = f"'{keys[0]}[{unit.channel}]'"
        levels = ", ".join(keys)
        raise ValueError(f"Unit {unit} names a layer with {len(keys)} maps ({levels}); name one, e.g. {example}.")
    feature_map = maps[keys[0]]
    if not 0 <= unit.channel < feature_map.shape[1]:
        raise ValueError(f"Channel {unit.channel} is out of range: {unit.layer} has {feature_map.shape[1]} channels.")
    selected = feature_map[:, unit.channel]
    if unit.position is None:
        return selected.flatten(1).mean(1) if selected.dim() > 1 else selected
    if selected.dim() != 3:
        raise ValueError(
            f"Unit {unit} names a position, but {unit.layer} has no (H, W) map; use '{unit.layer}[{unit.channel}]'."
        )
    height, width = selected.shape[-2:]
    row, column = (height // 2, width // 2) if unit.position == "center" else unit.position
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"Unit {unit}: position ({row}, {column}) is outside the {height}x{width} map.")
    return selected[:, row, column]


def check_scores(scores: torch.Tensor, rows: int) -> torch.Tensor:
    """``scores`` if it is one score per row ``(rows,)`` or K per row ``(rows, K)``, else a ValueError saying so."""
    if (
        not isinstance(scores, torch.Tensor)
        or scores.dim() not in (1, 2)
        or scores.shape[0] != rows
        or scores.numel() == 0
    ):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"A callable target must return one score per image, shape ({rows},), or K scores per image "
            f"(one map each), shape ({rows}, K); got {shape}."
        )
    return scores


def score_columns(scores: torch.Tensor) -> list[torch.Tensor]:
    """The ``(rows,)`` target columns of checked scores: one, or K of a ``(rows, K)`` callable's output."""
    return [scores] if scores.dim() == 1 else list(scores.unbind(1))


TARGET_FORMS = (
    "Pass 'top', 'top:k', a class index, a class name with categories=, a unit 'layer[channel]' or a callable."
)


def parse_target(target: TargetSpec, categories: Sequence[str] | None = None) -> Target:
    """Read a target (see this module's docstring) into a :class:`Target`.

    Raises:
        ValueError: an unknown class name (with the closest ones), ``top:0``, a bad unit.
        TypeError: a value of a type that is no target (the old ``(layer, channel)`` tuple included).
    """
    if isinstance(target, Unit) or (isinstance(target, str) and is_unit(target)):
        unit = parse_unit(target)
        return Target(label=str(unit), unit=unit)
    if isinstance(target, str):
        match = re.fullmatch(r"top(?::(\d+))?", target.strip())
        if match:
            top = int(match.group(1) or 1)
            if top < 1:
                raise ValueError("target 'top:k' needs k >= 1.")
            return Target(label=target, top=top)
        index = class_index(target, categories, what="target class")
        label = categories[index] if categories is not None else f"class {index}"
        return Target(label=label, classes=torch.tensor([[index]]))  # cpu: expanded_classes moves it
    if isinstance(target, bool):
        raise TypeError(f"target={target!r} is not a target. {TARGET_FORMS}")
    if isinstance(target, int):
        return Target(label=f"class {target}", classes=torch.tensor([[target]]))  # cpu: as above
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str) and isinstance(target[1], int):
        raise TypeError(
            f"target=({target[0]!r}, {target[1]}) is the old form of a unit; write '{target[0]}[{target[1]}]'."
        )
    if isinstance(target, (list, torch.Tensor)):
        classes = torch.as_tensor(target, dtype=torch.long)  # cpu: kept where given, moved by expanded_classes
        if classes.dim() == 2:  # (1, K) for every image or (N, K): K maps per image from one forward
            return Target(label="classes", classes=classes)
        return Target(label="per-image classes", classes=classes.reshape(-1, 1))
    if callable(target):
        label = getattr(target, "label", None) or getattr(target, "__name__", type(target).__name__)
        return Target(label=label, score=target, raw=bool(getattr(target, "raw_output", False)))
    raise TypeError(f"Cannot use a target of type {type(target).__name__}. {TARGET_FORMS}")


# ------------------------------------------------------------------------------ detection and segmentation

BoxesLike = torch.Tensor | Sequence[torch.Tensor]


def _per_image(value: BoxesLike, batch: int, what: str) -> list[torch.Tensor]:
    """``value`` as one tensor per image: a single tensor is shared by every image."""
    if isinstance(value, torch.Tensor):
        return [value] * batch
    values = list(value)
    if len(values) != batch:
        raise ValueError(f"Got {what} for {len(values)} images but the model returned {batch} detections lists.")
    return values


class BoxScoreTarget:
    """Score of the detections that match reference boxes: explain why the detector found them.

    For each image and each reference box, every detection with the same label and an IoU of at
    least ``iou_threshold`` with it adds its score (plus that IoU when ``add_iou=True``, which
    also rewards box placement, as pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` does).

    Args:
        boxes: ``(M, 4)`` reference boxes ``(x1, y1, x2, y2)`` in input pixels, for every image,
            or a list of one such tensor per image (e.g. ``[d["boxes"] for d in model(x)]``).
        labels: ``(M,)`` class labels of ``boxes`` (or a list, one tensor per image).
        iou_threshold: the smallest IoU at which a detection counts as the same object.
        add_iou: add the IoU of each matching detection to its score.
        per_box: one score per reference box, ``(N, M)``, so one call gives one map per box from one
            forward pass (every image needs the same number of boxes); else one score per image, the sum.

    Raises:
        ValueError: (when called) no detection in any image matches a reference box; lower the
            model's ``box_score_thresh`` or ``iou_threshold``, or pick other boxes.

    Example:
        >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
        >>> small = dict(min_size=224, max_size=224, box_score_thresh=0.0)  # random weights, small input
        >>> detector = fasterrcnn_mobilenet_v3_large_fpn(weights_backbone=None, **small).eval()
        >>> with torch.no_grad():
        ...     found = detector(x)[0]
        >>> target = BoxScoreTarget(found["boxes"][:3], found["labels"][:3])
        >>> fmapviz.saliency(detector, x, "gradcam", target=target, layers="backbone").maps.shape
        torch.Size([1, 1, 224, 224])
    """

    raw_output: ClassVar[bool] = True

    def __init__(
        self,
        boxes: BoxesLike,
        labels: BoxesLike,
        iou_threshold: float = 0.5,
        add_iou: bool = False,
        per_box: bool = False,
    ) -> None:
        if not 0 <= iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}.")
        self.boxes, self.labels = boxes, labels
        self.iou_threshold, self.add_iou, self.per_box = iou_threshold, add_iou, per_box
        self.label = "box scores" if per_box else "box score"

    def __call__(self, output: Any) -> torch.Tensor:
        from torchvision.ops import box_iou

        if not isinstance(output, (list, tuple)) or not all(isinstance(d, Mapping) for d in output):
            raise TypeError(
                "BoxScoreTarget needs a detection model's output: a list of dicts with 'boxes', 'labels' and "
                f"'scores' (torchvision detection models in eval mode); got {type(output).__name__}."
            )
        boxes = _per_image(self.boxes, len(output), "boxes")
        labels = _per_image(self.labels, len(output), "labels")
        scores, matched = [], 0
        for found, reference, reference_labels in zip(output, boxes, labels):
            reference = reference.to(found["boxes"].device, found["boxes"].dtype).reshape(-1, 4)
            reference_labels = reference_labels.to(found["labels"].device).reshape(-1)
            if reference.shape[0] != reference_labels.shape[0]:
                raise ValueError(f"Got {reference.shape[0]} boxes but {reference_labels.shape[0]} labels.")
            ious = box_iou(reference, found["boxes"])  # (M, D)
            match = (ious >= self.iou_threshold) & (reference_labels[:, None] == found["labels"][None, :])
            matched += int(match.sum())
            per_match = found["scores"][None, :] + (ious if self.add_iou else 0)
            scores.append((per_match * match).sum(1))  # (M,): each reference box's matches
        if matched == 0:
            raise ValueError(
                f"No detection matches the reference boxes (same label, IoU >= {self.iou_threshold}). Lower the "
                "model's box_score_thresh (e.g. model.roi_heads.score_thresh = 0.0) or iou_threshold."
            )
        if not self.per_box:
            return torch.stack([score.sum() for score in scores])
        if len({score.shape[0] for score in scores}) > 1:
            counts = [score.shape[0] for score in scores]
            raise ValueError(f"per_box=True needs the same number of boxes for every image; got {counts}.")
        return torch.stack(scores)


class MaskTarget:
    """Sum of one class's logits over a mask: explain why a segmentation model labels that region.

    Args:
        category: the class index (channel of the ``(N, K, H, W)`` output).
        mask: ``(H, W)`` or ``(N, H, W)`` weights (bool or float) at the output's resolution; e.g.
            ``output.argmax(1) == category`` for the pixels the model gives that class.

    Raises:
        ValueError: (when called) the output is not 4-D, the class is out of range, or the mask
            does not match the output's height and width.

    Example:
        >>> segmenter = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights_backbone=None).eval()
        >>> with torch.no_grad():
        ...     out = segmenter(x)["out"]
        >>> target = MaskTarget(8, out.argmax(1) == 8)  # class 8 ("cat" in VOC), where it is predicted
        >>> fmapviz.saliency(segmenter, x, "gradcam", target=target, layers="backbone").maps.shape
        torch.Size([1, 1, 224, 224])
    """

    def __init__(self, category: int, mask: torch.Tensor) -> None:
        if mask.dim() not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}.")
        self.category, self.mask = int(category), mask
        self.label = f"class {self.category} in mask"

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4:
            raise ValueError(f"MaskTarget needs an (N, K, H, W) segmentation output, got {tuple(output.shape)}.")
        if not 0 <= self.category < output.shape[1]:
            raise ValueError(f"Class {self.category} is out of range: the model has {output.shape[1]} classes.")
        if tuple(self.mask.shape[-2:]) != tuple(output.shape[-2:]):
            raise ValueError(
                f"mask is {tuple(self.mask.shape[-2:])} but the output is {tuple(output.shape[-2:])}; "
                "make the mask at the output's resolution."
            )
        mask = self.mask.to(output.device, output.dtype)
        return (output[:, self.category] * mask).flatten(1).sum(1)
