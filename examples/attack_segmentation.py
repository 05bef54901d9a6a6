"""Attacking a segmentation model: any model's loss and success criterion.

nettle's attacks take `loss_fn(output, y) -> (N,)` (what they ascend) and
`success_fn(output, y) -> (N,) bool` (where they count as successful), so a model that labels
every pixel is attacked like a classifier. Here:

- the model: a tiny fully-convolutional network (no pooling, every pixel keeps its place)
  giving logits (N, K, H, W) for images (N, 1, H, W) in [0, 1];
- the data: noisy grey images with a brighter square; the mask (N, H, W) marks its pixels;
- loss: per-pixel cross-entropy, averaged over each image's pixels;
- success: the image's mean intersection-over-union (over the classes present in the image or
  its prediction) drops below `threshold`.

The same objective drives `evaluate_robustness`, which reports the fraction of images still
segmented well ("robust accuracy") per epsilon, with the masking checks.

Run: python examples/attack_segmentation.py  (a few seconds on a CPU)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from nettle.attack import create_attack, evaluate_robustness, format_robustness
from nettle.attack.objectives import Objective

CLASSES = 2


def squares(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) with one brighter square each, and their masks (n, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.2 * torch.rand(n, 1, size, size, generator=g)
    mask = torch.zeros(n, size, size, dtype=torch.long)
    side = size // 3
    corners = torch.randint(0, size - side, (n, 2), generator=g).tolist()
    for i, (r, c) in enumerate(corners):
        x[i, 0, r : r + side, c : c + side] += 0.4
        mask[i, r : r + side, c : c + side] = 1
    return x.clamp(0, 1), mask


def tiny_fcn(width: int = 16) -> nn.Module:
    """Three 3x3 convolutions, padded: per-pixel logits (N, CLASSES, H, W)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, CLASSES, 3, padding=1),
    )


def pixel_cross_entropy(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) cross-entropy of logits (N, K, H, W) to masks (N, H, W), averaged over pixels."""
    return F.cross_entropy(output, mask, reduction="none").flatten(1).mean(1)


def mean_iou(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) mean IoU per image over the classes present in its mask or its prediction."""
    pred = output.argmax(1)
    ious = []
    for k in range(output.shape[1]):
        p, t = pred == k, mask == k
        inter = (p & t).flatten(1).sum(1).float()
        union = (p | t).flatten(1).sum(1).float()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.nan))
    return torch.stack(ious, 1).nanmean(1)


def segmentation_objective(threshold: float = 0.5) -> Objective:
    """Per-pixel cross-entropy; success when an image's mean IoU falls below `threshold`."""
    return Objective(
        name="segmentation",
        loss_fn=pixel_cross_entropy,
        success_fn=lambda output, mask: mean_iou(output, mask) < threshold,
    )


def train(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, steps: int) -> nn.Module:
    """Full-batch Adam on the per-pixel cross-entropy."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        pixel_cross_entropy(model(x), mask).mean().backward()
        opt.step()
    return model.eval()


def main(
    n: int = 256,
    steps: int = 150,
    eps: tuple[float, ...] = (0.02, 0.1, 0.3),
    seed: int = 0,
    checks: bool = True,
) -> dict:
    """Train the tiny model, attack it with PGD and evaluate it (with the gradient-masking
    checks unless `checks` is False); returns the numbers."""
    torch.manual_seed(seed)
    x, mask = squares(n, seed=seed)
    model = train(tiny_fcn(), x, mask, steps)
    xt, mt = squares(64, seed=seed + 1)
    objective = segmentation_objective()
    with torch.no_grad():
        clean_iou = mean_iou(model(xt), mt)
    pgd = create_attack(
        "pgd",
        model,
        seed=seed,
        eps=max(eps),
        alpha=max(eps) / 4,
        steps=10,
        loss_fn=objective.loss_fn,
        success_fn=objective.success_fn,
    )
    result = pgd(xt, mt)
    with torch.no_grad():
        adv_iou = mean_iou(model(result.x_adv), mt)
    robustness = evaluate_robustness(
        model,
        (xt, mt),
        {"fgsm": {}, "pgd": {"steps": 10}},
        list(eps),
        objective=objective,
        checks=checks,
    )
    return {
        "clean_iou": float(clean_iou.mean()),
        "adversarial_iou": float(adv_iou.mean()),
        "success": result.success,
        "iou_after": adv_iou,
        "robustness": robustness,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = main(seed=args.seed)
    print(f"mean IoU: clean {out['clean_iou']:.3f}, under PGD {out['adversarial_iou']:.3f}")
    print(f"PGD succeeded on {float(out['success'].float().mean()):.1%} of the images")
    print(format_robustness(out["robustness"]))
