"""Training and decoding of the single-stage detector (`nettle.models.yolo`).

Conventions: model outputs are (N, 5 + C, S, S) raw cell values `[objectness, tx, ty, tw, th,
class logits]` with cells of `STRIDE` pixels; labels are the rows of `digit-scenes`
(`nettle.train.datasets.digit_scenes`): (N, K, 5) `(class, x1, y1, x2, y2)`, class `PAD` for
no object.

Assignment (YOLOv1, Redmon et al. 2016): the cell holding a box's centre is responsible for it
(when two centres share a cell, the later box wins). Loss per image, averaged over the batch:
- objectness: binary cross-entropy over all cells (target 1 in responsible cells), summed;
- box: `OBJECT_WEIGHTS["box"]` x the generalised IoU loss (Rezatofighi et al. 2019,
  `torchvision.ops.generalized_box_iou_loss`) of each responsible cell's decoded box;
- class: cross-entropy of each responsible cell's class logits.

Decoding: score = sigmoid(objectness) x the top class probability; boxes with a score of at least
`score_threshold` go through class-wise non-maximum suppression (`torchvision.ops.batched_nms`,
IoU 0.5), at most `max_detections` per image.

Metrics: `DetectionMetric` gives `loss`, `map50` and `map` (COCO mAP@0.5 and @0.5:0.95,
`nettle.train.detection_map`) and `acc`, the fraction of scenes detected exactly: with the
detections of score >= 0.5, every object found once with its class at IoU >= 0.5 and nothing
else. Selected by `train.loss: detection`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.models.yolo import STRIDE
from nettle.train.datasets.digit_scenes import split_boxes
from nettle.train.detection_map import mean_average_precision

__all__ = [
    "OBJECT_WEIGHTS",
    "DetectionMetric",
    "DetectionObjective",
    "decode_boxes",
    "detect",
    "detection_loss",
    "missed_objects",
    "scenes_correct",
]

OBJECT_WEIGHTS = {"obj": 1.0, "box": 5.0, "cls": 1.0}  # YOLOv1's coordinate weight 5


def decode_boxes(out: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """(N, S, S, 4) xyxy boxes of every cell from raw outputs (N, 5 + C, S, S)."""
    _n, _, h, w = out.shape
    rows = torch.arange(h, device=out.device, dtype=out.dtype).view(1, h, 1)
    cols = torch.arange(w, device=out.device, dtype=out.dtype).view(1, 1, w)
    cx = (cols + out[:, 1].sigmoid()) * stride
    cy = (rows + out[:, 2].sigmoid()) * stride
    half_w = out[:, 3].clamp(max=6).exp() * stride / 2
    half_h = out[:, 4].clamp(max=6).exp() * stride / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)


def _assign(y: torch.Tensor, grid: tuple[int, int], stride: int) -> tuple[torch.Tensor, ...]:
    """(image, row, col, class, box) of every object, one per responsible cell."""
    classes, boxes = split_boxes(y)
    img, k = (classes >= 0).nonzero(as_tuple=True)
    box = boxes[img, k]
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    col = (cx / stride).long().clamp(0, grid[1] - 1)
    row = (cy / stride).long().clamp(0, grid[0] - 1)
    return img, row, col, classes[img, k], box


def detection_loss(
    out: torch.Tensor, y: torch.Tensor, stride: int = STRIDE, reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The detector's loss (see the module docstring) and its parts (detached batch means).

    `reduction="none"` gives the (N,) loss of every image (what attacks ascend).
    """
    n = len(out)
    img, row, col, cls, box = _assign(y, out.shape[-2:], stride)
    target = torch.zeros_like(out[:, 0])
    target[img, row, col] = 1.0
    obj = F.binary_cross_entropy_with_logits(out[:, 0], target, reduction="none").flatten(1).sum(1)
    pred = decode_boxes(out, stride)[img, row, col]
    from torchvision.ops import generalized_box_iou_loss  # torchvision loads in ~1 s: lazily

    per_box = generalized_box_iou_loss(pred, box, reduction="none")
    per_cls = F.cross_entropy(out[img, 5:, row, col], cls, reduction="none")
    count = torch.zeros(n, device=out.device, dtype=out.dtype).index_add_(
        0, img, torch.ones_like(per_box)
    )
    box_i = torch.zeros_like(count).index_add_(0, img, per_box) / count.clamp(min=1)
    cls_i = torch.zeros_like(count).index_add_(0, img, per_cls) / count.clamp(min=1)
    w = OBJECT_WEIGHTS
    per_image = w["obj"] * obj + w["box"] * box_i + w["cls"] * cls_i
    parts = {"obj": obj.mean().detach(), "box": box_i.mean().detach(), "cls": cls_i.mean().detach()}
    return (per_image if reduction == "none" else per_image.mean()), parts


@torch.no_grad()
def detect(
    out: torch.Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    stride: int = STRIDE,
) -> list[dict[str, torch.Tensor]]:
    """Per image `{"boxes": (D, 4), "scores": (D,), "labels": (D,)}` after class-wise NMS."""
    from torchvision.ops import batched_nms

    boxes = decode_boxes(out, stride).flatten(1, 2)
    probs = out[:, 5:].softmax(1).flatten(2)  # (N, C, S*S)
    top, labels = probs.max(1)
    scores = out[:, 0].flatten(1).sigmoid() * top
    found = []
    for b, s, c in zip(boxes, scores, labels):
        keep = (s >= score_threshold).nonzero().flatten()
        keep = keep[batched_nms(b[keep], s[keep], c[keep], iou_threshold)][:max_detections]
        found.append({"boxes": b[keep], "scores": s[keep], "labels": c[keep]})
    return found


def _targets(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    classes, boxes = split_boxes(y)
    return [{"boxes": b[c >= 0], "labels": c[c >= 0]} for c, b in zip(classes, boxes)]


def scenes_correct(
    found: list[dict[str, torch.Tensor]], y: torch.Tensor, score: float = 0.5
) -> torch.Tensor:
    """(N,) bool: every object detected once with its class at IoU >= 0.5, nothing else."""
    from torchvision.ops import box_iou

    ok = []
    for det, tgt in zip(found, _targets(y)):
        keep = det["scores"] >= score
        boxes, labels = det["boxes"][keep], det["labels"][keep]
        if len(boxes) != len(tgt["boxes"]):
            ok.append(False)
            continue
        hit = box_iou(boxes, tgt["boxes"]) >= 0.5
        hit &= labels[:, None] == tgt["labels"][None, :]
        ok.append(bool(hit.any(1).all() and hit.any(0).all()))
    return torch.tensor(ok, dtype=torch.bool)


def missed_objects(
    found: list[dict[str, torch.Tensor]], y: torch.Tensor, score: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(objects of each scene not detected with their class at IoU >= 0.5 and score >= `score`,
    objects of each scene)."""
    from torchvision.ops import box_iou

    missed, objects = [], []
    for det, tgt in zip(found, _targets(y), strict=True):
        keep = det["scores"] >= score
        hit = box_iou(det["boxes"][keep], tgt["boxes"]) >= 0.5
        hit &= det["labels"][keep][:, None] == tgt["labels"][None, :]
        missed.append(int((~hit.any(0)).sum()))
        objects.append(len(tgt["labels"]))
    return torch.tensor(missed), torch.tensor(objects)


class DetectionMetric:
    """Test metrics of a detector: `loss`, `acc` (exact scenes), `map50`, `map`.

    reset/update/compute; mAP needs every image's detections, so they are kept until `compute`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.loss, self.correct, self.seen = 0.0, 0, 0
        self.found: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, torch.Tensor]] = []

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of raw outputs (N, 5 + C, S, S) and scene labels (N, K, 5)."""
        loss, _ = detection_loss(out, y, reduction="none")
        found = [{k: v.cpu() for k, v in d.items()} for d in detect(out)]
        self.loss += float(loss.sum())
        self.correct += int(scenes_correct(found, y.cpu()).sum())
        self.seen += len(y)
        self.found += found
        self.targets += _targets(y.cpu())

    def compute(self) -> dict[str, float]:
        """{"loss": per image, "acc": exact scenes, "map50", "map"}."""
        n = max(self.seen, 1)
        result = mean_average_precision(self.found, self.targets)
        return {
            "loss": self.loss / n,
            "acc": self.correct / n,
            "map50": result.map50,
            "map": result.map,
        }


class DetectionObjective:
    """The detector's loss; training accuracy counts exactly detected scenes (see above)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: PhaseTimer
    ) -> LossOutput:
        with timer.phase("forward"):
            out = model(x)
            loss, parts = detection_loss(out, y)
        correct = scenes_correct(detect(out.detach()), y).to(y.device)
        return LossOutput(loss, out, parts=parts, correct=correct)

    def eval_metric(self) -> DetectionMetric:
        """A fresh metric for the trainer's evaluation."""
        return DetectionMetric()
