"""A single-stage, YOLO-style detector for small scenes (Redmon et al. 2016, "You only look
once: unified, real-time object detection", arXiv:1506.02640), anchor-free.

A conv backbone divides the image by 4 into a grid (8x8 cells for the 32x32 `digit-scenes`);
every cell predicts one object: an objectness logit, the object's centre inside the cell, its
size and its class. The cell holding an object's centre is the one responsible for it (YOLOv1's
assignment); without anchors, the size is predicted directly as a log-multiple of the stride
(as anchor-free detectors such as YOLOX and FCOS do). Training and decoding live in
`nettle.train.detection`.

Backbone: conv3x3(w) at full resolution, then two stages that each halve the resolution with a
stride-2 conv3x3 and add a conv3x3 (2w, then 4w channels), one more conv3x3 (4w) on the grid,
every conv followed by BatchNorm and ReLU; the receptive field of a cell is 29 pixels, enough
for the 16-pixel digits. A 1x1 conv head gives `5 + num_classes` channels per cell.

Output: (N, 5 + num_classes, H / 4, W / 4) raw values per cell: `[objectness, tx, ty, tw, th,
class logits...]`, decoded as centre `((j + sigmoid(tx)) * 4, (i + sigmoid(ty)) * 4)` and size
`(exp(tw) * 4, exp(th) * 4)` (see `nettle.train.detection.decode_boxes`).
For width 16 and 10 classes: 145,983 parameters.

Substitution: every conv except the stem is built through `conv=`, as in the other zoo models;
the head stays dense. Attention-transfer points: the outputs of the two stages.
"""

from __future__ import annotations

import torch
from torch import nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["STRIDE", "TinyYOLO"]

STRIDE = 4  # pixels per grid cell


def _conv(conv, c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        conv(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class TinyYOLO(nn.Module):
    """Backbone of stride 4 and a per-cell head (see the module docstring).

    Args:
        num_classes: object classes.
        in_channels: image channels.
        conv: substitute spec for every conv after the stem.
        width: channels of the stem (doubled twice).
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, conv: str | None = None, width: int = 16
    ) -> None:
        super().__init__()
        sub = get_conv_class(conv)
        self.num_classes = num_classes
        self.stem = _conv(get_conv_class(None), in_channels, width)
        self.stage1 = nn.Sequential(
            _conv(sub, width, 2 * width, 2), _conv(sub, 2 * width, 2 * width)
        )
        self.stage2 = nn.Sequential(
            _conv(sub, 2 * width, 4 * width, 2),
            _conv(sub, 4 * width, 4 * width),
            _conv(sub, 4 * width, 4 * width),
        )
        self.head = nn.Conv2d(4 * width, 5 + num_classes, 1)
        self.at_layers = ["stage1", "stage2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> raw cell predictions (N, 5 + num_classes, H / 4, W / 4)."""
        return self.head(self.stage2(self.stage1(self.stem(x))))


@MODELS.register("tiny-yolo")
def tiny_yolo(
    num_classes: int = 10, in_channels: int = 1, conv: str | None = None, width: int = 16
) -> TinyYOLO:
    """The single-stage detector (see `TinyYOLO`)."""
    return TinyYOLO(num_classes, in_channels, conv, width)
