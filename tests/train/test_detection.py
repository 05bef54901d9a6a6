"""The digit-scenes data, the detector's loss and decoding, and COCO mAP against pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from nettle.models import create_model
from nettle.train.datasets.digit_scenes import (
    DIGIT_SCENES_INFO,
    MAX_OBJECTS,
    PAD,
    make_digit_scenes,
    split_boxes,
)
from nettle.train.datasets.digits import digits_split
from nettle.train.detection import (
    DetectionMetric,
    decode_boxes,
    detect,
    detection_loss,
    scenes_correct,
)
from nettle.train.detection_map import mean_average_precision

# --- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    images, labels, _ = digits_split("test")
    return images, labels, *make_digit_scenes(images, labels, 200, seed=3)


def test_scenes_are_deterministic_and_boxes_tight(scenes):
    images, labels, x, y = scenes
    x2, y2 = make_digit_scenes(images, labels, 200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    classes, boxes = split_boxes(y)
    assert x.shape == (200, 1, 32, 32) and y.shape == (200, MAX_OBJECTS, 5)
    counts = (classes >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() == MAX_OBJECTS
    for i in range(len(x)):
        lit = torch.zeros(32, 32, dtype=torch.bool)
        for c, (x1, y1, xe, ye) in zip(classes[i].tolist(), boxes[i].long().tolist()):
            if c == PAD:
                continue
            region = x[i, 0, y1:ye, x1:xe]
            # tight: lit pixels on every edge of the box, and boxes never overlap
            assert region[0].max() > 0 and region[-1].max() > 0
            assert region[:, 0].max() > 0 and region[:, -1].max() > 0
            assert not lit[y1:ye, x1:xe].any()
            lit[y1:ye, x1:xe] = True
        assert x[i, 0][~lit].max() == 0  # nothing lit outside the boxes


def test_scenes_use_only_their_split():
    # a scene made from test images only contains pixels of test digits
    images, labels, _ = digits_split("test")
    _x, y = make_digit_scenes(images[:5], labels[:5], 50, seed=0)
    assert set(y[..., 0][y[..., 0] >= 0].long().tolist()) <= set(labels[:5].tolist())


def test_digit_scenes_statistics_match_the_info():
    from nettle.train.data import create_dataset

    x, _y = create_dataset("digit-scenes", "train").tensors
    assert len(x) == DIGIT_SCENES_INFO.train_size
    assert round(float(x.mean()), 4) == DIGIT_SCENES_INFO.mean[0]
    assert round(float(x.std()), 4) == DIGIT_SCENES_INFO.std[0]


# --- loss and decoding ------------------------------------------------------------------------


def _perfect_output(y: torch.Tensor, grid: int = 8, classes: int = 10) -> torch.Tensor:
    """Raw outputs whose decoded boxes and classes are exactly the labels' objects."""
    out = torch.full((len(y), 5 + classes, grid, grid), 0.0)
    out[:, 0] = -20.0
    cls, boxes = split_boxes(y)
    for i, k in (cls >= 0).nonzero().tolist():
        x1, y1, x2, y2 = boxes[i, k].tolist()
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        r, c = int(cy // 4), int(cx // 4)
        out[i, 0, r, c] = 20.0
        out[i, 1, r, c] = torch.logit(torch.tensor(cx / 4 - c))
        out[i, 2, r, c] = torch.logit(torch.tensor(cy / 4 - r))
        out[i, 3, r, c], out[i, 4, r, c] = np.log(w / 4), np.log(h / 4)
        out[i, 5 + cls[i, k], r, c] = 20.0
    return out


def test_decode_of_a_hand_made_cell():
    out = torch.zeros(1, 15, 8, 8)
    out[0, 1:5, 2, 3] = torch.tensor([0.0, 0.0, np.log(2.0), 0.0])  # centre of cell, 8 x 4 px
    # cell (row 2, col 3): centre (3.5 * 4, 2.5 * 4) = (14, 10); width 8, height 4
    assert decode_boxes(out)[0, 2, 3].tolist() == pytest.approx([10.0, 8.0, 18.0, 12.0])


def test_perfect_predictions_have_near_zero_loss_and_full_map(scenes):
    *_, y = scenes
    y = y[:16]
    out = _perfect_output(y)
    _loss, parts = detection_loss(out, y)
    assert float(parts["box"]) < 1e-5 and float(parts["cls"]) < 1e-6 and float(parts["obj"]) < 1e-6
    found = detect(out)
    assert scenes_correct(found, y).all()
    metric = DetectionMetric()
    metric.update(out, y)
    result = metric.compute()
    assert result["acc"] == 1.0 and result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1.0)


def test_loss_per_image_and_parts_add_up(scenes):
    *_, y = scenes
    torch.manual_seed(0)
    out = torch.randn(4, 15, 8, 8)
    per_image, _ = detection_loss(out, y[:4], reduction="none")
    mean, _ = detection_loss(out, y[:4])
    assert per_image.shape == (4,) and float(per_image.mean()) == pytest.approx(float(mean))
    # the loss of one image does not depend on the other images of the batch
    alone, _ = detection_loss(out[1:2], y[1:2], reduction="none")
    assert float(alone[0]) == pytest.approx(float(per_image[1]), rel=1e-6)


def test_nms_keeps_the_best_of_duplicates():
    out = torch.full((1, 15, 8, 8), -20.0)
    for col, logit in ((3, 5.0), (4, 2.0)):  # two cells predicting the same 16x16 box
        out[0, 0, 3, col] = logit
        out[0, 1, 3, col] = 0.0 if col == 3 else -20.0  # same centre x = 14 for both
        out[0, 2, 3, col], out[0, 3, 3, col], out[0, 4, 3, col] = 0.0, np.log(4), np.log(4)
        out[0, 5 + 7, 3, col] = 20.0
    out[0, 1, 3, 4] = torch.logit(torch.tensor(0.5)) - 1e9  # centre x -> 16 (cell 4 start)
    (found,) = detect(out)
    assert found["labels"].tolist() == [7] and found["scores"].numel() == 1
    assert float(found["scores"][0]) == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


# --- mAP --------------------------------------------------------------------------------------


def test_map_hand_computed():
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    # a box [0, 0, 10, 6] inside the 10x10 target: IoU = 60 / 100 = 0.6
    pred = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 6.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    r = mean_average_precision(pred, gt)
    assert r.map50 == pytest.approx(1.0) and r.map75 == 0.0
    assert r.map == pytest.approx(0.3)  # matched at 0.50, 0.55 and 0.60 of ten thresholds
    # a detection of a class without ground truth is left out of the mean
    pred[0] = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]),
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([2, 1]),
    }
    assert mean_average_precision(pred, gt).map == pytest.approx(1.0)  # class 2 has no gt
    pred[0]["labels"] = torch.tensor([1, 1])  # a duplicate: a false positive after the hit
    assert mean_average_precision(pred, gt).map == pytest.approx(1.0)
    pred[0]["scores"] = torch.tensor([0.8, 0.9])  # same boxes: the first kept is the hit
    assert mean_average_precision(pred, gt).map == pytest.approx(1.0)
    none = [{k: v[:0] for k, v in pred[0].items()}]
    assert mean_average_precision(none, gt).map == 0.0


def _coco_map(preds, targets):
    """mAP@0.5:0.95 and @0.5 by pycocotools' own COCOeval (the reference implementation)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({int(c) for t in targets for c in t["labels"]} | {0})
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in classes]}
    dets, aid = [], 1

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    for i, (p, t) in enumerate(zip(preds, targets)):
        gt["images"].append({"id": i})
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            area = (b[2] - b[0]) * (b[3] - b[1])
            ann = {"id": aid, "image_id": i, "category_id": c, "bbox": xywh(b), "area": area}
            gt["annotations"].append(ann | {"iscrowd": 0})
            aid += 1
        for b, c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()):
            dets.append({"image_id": i, "category_id": c, "bbox": xywh(b), "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools_on_the_same_predictions(seed):
    pytest.importorskip("pycocotools")
    g = torch.Generator().manual_seed(seed)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 24
        return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 12], 1)

    preds, targets = [], []
    for _ in range(40):
        n_gt, n_extra = (
            int(torch.randint(0, 4, (1,), generator=g)),
            int(torch.randint(0, 6, (1,), generator=g)),
        )
        gt_boxes, gt_labels = boxes(n_gt), torch.randint(0, 4, (n_gt,), generator=g)
        near = gt_boxes + torch.randn(n_gt, 4, generator=g)
        near = torch.cat([near[:, :2], torch.maximum(near[:, 2:], near[:, :2] + 1)], 1)
        flip = torch.rand(n_gt, generator=g) < 0.2
        labels = torch.where(flip, torch.randint(0, 4, (n_gt,), generator=g), gt_labels)
        preds.append(
            {
                "boxes": torch.cat([near, boxes(n_extra)]),
                "scores": torch.rand(n_gt + n_extra, generator=g),
                "labels": torch.cat([labels, torch.randint(0, 4, (n_extra,), generator=g)]),
            }
        )
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
    ours = mean_average_precision(preds, targets)
    coco_map, coco_map50 = _coco_map(preds, targets)
    assert ours.map == pytest.approx(coco_map, abs=1e-9)
    assert ours.map50 == pytest.approx(coco_map50, abs=1e-9)
    assert 0.05 < ours.map < ours.map50 < 0.9  # a non-trivial case


# --- training ---------------------------------------------------------------------------------


def test_the_detector_learns_a_few_scenes(scenes, one_thread):
    *_, x, y = scenes
    x, y = x[:32], y[:32]
    torch.manual_seed(0)
    model = create_model("tiny-yolo", num_classes=10, in_channels=1, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(60):
        loss, _ = detection_loss(model(x), y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
    metric = DetectionMetric()
    metric.update(out, y)
    assert float(detection_loss(out, y)[0]) < first / 4
    assert metric.compute()["map50"] > 0.5  # memorised: most training boxes found


def test_pgd_on_the_detector_breaks_scenes_through_the_detection_objective(scenes):
    from nettle.attack import create_attack
    from nettle.attack.objectives import objective_for

    *_, x, y = scenes
    x, y = x[:16], y[:16]
    torch.manual_seed(0)
    model = create_model("tiny-yolo", num_classes=10, in_channels=1, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        loss, _ = detection_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    objective = objective_for("detection")
    with torch.no_grad():
        clean = objective.success_fn(model(x), y)
    attack = create_attack(
        "pgd",
        model,
        eps=0.3,
        alpha=0.05,
        steps=10,
        loss_fn=objective.loss_fn,
        success_fn=objective.success_fn,
    )
    result = attack(x, y)
    with torch.no_grad():
        adv_loss = detection_loss(model(result.x_adv), y, reduction="none")[0]
        clean_loss = detection_loss(model(x), y, reduction="none")[0]
    assert (adv_loss > clean_loss).all()
    assert int(result.success.sum()) > int(clean.sum())
    missed, objects = objective.errors(model(result.x_adv), y)
    assert torch.equal(objects, (y[..., 0] >= 0).sum(1)) and int(missed.sum()) > 0
