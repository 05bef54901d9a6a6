"""Mean average precision of box detections, as the COCO evaluation defines it.

Per class and IoU threshold `t` (0.50, 0.55, ..., 0.95): each image's detections of the class,
highest score first (at most `max_detections` per image and class), are matched greedily to
the not yet matched ground-truth box with the highest IoU of at least `t`; a matched detection
is a true positive, the others false positives. Over all images, detections sorted by score
give the precision-recall curve; precision is made non-increasing from the right, and the
average precision (AP) is its mean at the 101 recall points 0, 0.01, ..., 1 (a recall point
the curve never reaches counts 0). mAP@0.5 is the mean AP over classes at `t = 0.5`;
mAP@0.5:0.95 the mean over classes and the ten thresholds. Classes without a ground-truth box
are left out of the means. These are the rules of `pycocotools.cocoeval.COCOeval` for boxes
(area range "all", `maxDets` 100), and the results equal torchmetrics'
`MeanAveragePrecision` on the same predictions (tested), without its dependencies.

Boxes are (x1, y1, x2, y2) in pixels; IoU is `torchvision.ops.box_iou`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["COCO_IOU_THRESHOLDS", "MAPResult", "mean_average_precision"]

COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class MAPResult:
    """mAP over the IoU thresholds, at 0.5 and 0.75, and AP@0.5 per class (present ones)."""

    map: float
    map50: float
    map75: float
    per_class50: dict[int, float] = field(default_factory=dict)


def _match(ious: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(T, D) bool: whether each detection (rows of `ious`, best first) is matched at each t."""
    matched = np.zeros((len(thresholds), ious.shape[0]), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(ious.shape[1], dtype=bool)
        for d in range(ious.shape[0]):
            best, bar = -1, min(t, 1 - 1e-10)
            for g in range(ious.shape[1]):
                if taken[g] or ious[d, g] < bar:
                    continue
                bar, best = ious[d, g], g
            if best >= 0:
                taken[best], matched[ti, d] = True, True
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, positives: int) -> np.ndarray:
    """(T,) AP of one class from all its detections' scores and (T, D) match flags."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    out = np.zeros(len(matched))
    if matched.shape[1] == 0:  # no detection of the class: every recall point counts 0
        return out
    for ti in range(len(matched)):
        recall = tp[ti] / positives
        precision = tp[ti] / (tp[ti] + fp[ti] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, _RECALL_POINTS, side="left")
        q = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
        out[ti] = q.mean()
    return out


def mean_average_precision(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> MAPResult:
    """COCO-style mAP of per-image detections (see the module docstring).

    Args:
        predictions: per image, `{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`.
        targets: per image, `{"boxes": (G, 4), "labels": (G,)}`.
        iou_thresholds: the IoU thresholds averaged over (0.5 and 0.75 must be among them for
            `map50`/`map75`; missing ones give nan).
        max_detections: detections kept per image and class, highest scores first.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} target images")
    thresholds = [float(t) for t in iou_thresholds]
    from torchvision.ops import box_iou  # torchvision loads in ~1 s: lazily

    classes = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    ap = np.zeros((len(thresholds), len(classes)))
    for ci, c in enumerate(classes):
        scores, flags, positives = [], [], 0
        for pred, target in zip(predictions, targets):
            gt = target["boxes"][target["labels"] == c]
            keep = pred["labels"] == c
            det_scores = pred["scores"][keep].detach().cpu().numpy()
            order = np.argsort(-det_scores, kind="mergesort")[:max_detections]
            dets = pred["boxes"][keep].detach().cpu()[torch.from_numpy(order)]
            positives += len(gt)
            ious = box_iou(dets.double(), gt.detach().cpu().double()).numpy()
            scores.append(det_scores[order])
            flags.append(_match(ious, thresholds))
        ap[:, ci] = _average_precision(np.concatenate(scores), np.concatenate(flags, 1), positives)

    def at(t: float) -> float:
        return (
            float(ap[thresholds.index(t)].mean()) if t in thresholds and classes else float("nan")
        )

    return MAPResult(
        map=float(ap.mean()) if classes else float("nan"),
        map50=at(0.5),
        map75=at(0.75),
        per_class50={c: float(ap[thresholds.index(0.5), i]) for i, c in enumerate(classes)}
        if 0.5 in thresholds
        else {},
    )
