"""CRNN: a conv stack, a bidirectional LSTM over the columns and CTC outputs (Shi et al. 2015,
"An End-to-End Trainable Neural Network for Image-based Sequence Recognition").

Three 3x3 conv-BN-ReLU stages (32, 64, 128 channels) with max-pools 2x2, 2x1 and 2x1 divide the
height by 8 and the width by 2; what is left of the height is averaged away (nothing for an
8-pixel line), so column `t` of the feature map becomes step `t` of a one-layer BiLSTM
(64 units each way), and a linear layer maps each step to `num_classes + 1` classes.

Output: log-probabilities of shape (N, num_classes + 1, T) with T = W // 2, class 0 the CTC
blank and class `k + 1` label `k` (the layout of `nettle.train.ctc`, which permutes to the
(T, N, C) that `F.ctc_loss` takes). Input height: a multiple of 8 works best, at least 8.
For one 8x84 line and 10 classes: 193,643 parameters.

Substitution: every conv except the first (the stem sees the raw image channels) is built
through `conv=`, as in the other zoo models; the LSTM and the classifier stay dense.
Attention-transfer points: the outputs of the two later stages.
"""

from __future__ import annotations

import torch
from torch import nn

from nettle.models.factory import MODELS
from nettle.nn.substitutes import get_conv_class

__all__ = ["CRNN"]


def _stage(conv, c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        conv(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool),
    )


class CRNN(nn.Module):
    """conv32 -> pool 2x2 -> conv64 -> pool 2x1 -> conv128 -> pool 2x1 -> BiLSTM -> linear.

    Args:
        num_classes: labels (the output has one more class, the blank, at index 0).
        in_channels: image channels.
        conv: substitute spec for the second and third convolutions.
        width: channels of the first conv (doubled twice).
        hidden: LSTM units per direction.
        layers: stacked BiLSTM layers.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        conv: str | None = None,
        width: int = 32,
        hidden: int = 64,
        layers: int = 1,
    ) -> None:
        super().__init__()
        sub = get_conv_class(conv)
        self.stem = _stage(get_conv_class(None), in_channels, width, (2, 2))
        self.stage1 = _stage(sub, width, 2 * width, (2, 1))
        self.stage2 = _stage(sub, 2 * width, 4 * width, (2, 1))
        self.collapse = nn.AdaptiveAvgPool2d((1, None))
        self.rnn = nn.LSTM(4 * width, hidden, num_layers=layers, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, num_classes + 1)
        self.at_layers = ["stage1", "stage2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> log-probabilities (N, num_classes + 1, W // 2)."""
        f = self.collapse(self.stage2(self.stage1(self.stem(x)))).squeeze(2)  # (N, C, T)
        h, _ = self.rnn(f.permute(2, 0, 1))  # (T, N, 2 * hidden)
        return self.fc(h).log_softmax(-1).permute(1, 2, 0)


@MODELS.register("crnn")
def crnn(
    num_classes: int = 10,
    in_channels: int = 1,
    conv: str | None = None,
    width: int = 32,
    hidden: int = 64,
    layers: int = 1,
) -> CRNN:
    """The text-line recogniser (see `CRNN`)."""
    return CRNN(num_classes, in_channels, conv, width, hidden, layers)
