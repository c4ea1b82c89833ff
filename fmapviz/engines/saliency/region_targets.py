"""Saliency targets for models that are not classifiers: object detectors and segmentation networks.

A target is a callable ``target(output) -> (N,)`` scores, one per image, that
:func:`fmapviz.saliency` differentiates (see
:mod:`fmapviz.engines.saliency.targets`). Those here:

* :class:`BoxScoreTarget` for torchvision detection models (``fasterrcnn_*``, ``retinanet_*``,
  ``fcos_*``, ``ssd*``), whose eval-mode output is a list of dicts with ``boxes``, ``labels``
  and ``scores``. It sets ``raw_output = True``, so saliency hands it that list as returned.
* :class:`MaskTarget` for segmentation models (torchvision's ``deeplabv3_*``, ``lraspp_*``, ``fcn_*``
  return ``{"out": (N, K, H, W)}``; :mod:`fmapviz.outputs` takes ``"out"`` from it).

Example:
    >>> detector = fasterrcnn_mobilenet_v3_large_fpn(weights="DEFAULT").eval()
    >>> found = detector(x)[0]  # x: (1, 3, H, W) in [0, 1]; detection models normalize inside
    >>> target = BoxScoreTarget(found["boxes"][:1], found["labels"][:1])
    >>> cam = fmapviz.saliency(detector, x, "gradcam", target=target, layers="backbone")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

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
