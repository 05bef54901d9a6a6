"""LeNet-5 (Caffe variant) built from group normal-Jeffreys layers, for Bayesian compression.

conv 5x5 (20) - max-pool - conv 5x5 (50) - adaptive max-pool to 4x4 - FC 500 - FC classes, every
conv and linear layer Bayesian (`nettle.nn.bayesian`), as in Louizos et al. 2017's LeNet-5
experiment; works for 8x8 digits and 28x28 MNIST. No `conv=` substitution (it has its own
compression).
"""

from __future__ import annotations

from torch import nn

from nettle.models.factory import MODELS
from nettle.nn.bayesian import Conv2dGroupNJ, LinearGroupNJ

__all__ = ["BayesLeNet"]


class BayesLeNet(nn.Sequential):
    """The Bayesian LeNet-5-Caffe."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, clip_var: float = 0.04) -> None:
        super().__init__(
            Conv2dGroupNJ(in_channels, 20, 5, padding=2, clip_var=clip_var),
            nn.ReLU(),
            nn.MaxPool2d(2),
            Conv2dGroupNJ(20, 50, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(4),
            nn.Flatten(),
            LinearGroupNJ(50 * 16, 500),
            nn.ReLU(),
            LinearGroupNJ(500, num_classes),
        )
        self.at_layers = ["2", "5"]


@MODELS.register("bayes-lenet")
def bayes_lenet(
    num_classes: int = 10, in_channels: int = 1, conv: str | None = None, clip_var: float = 0.04
) -> BayesLeNet:
    """LeNet-5-Caffe with group normal-Jeffreys layers (first-layer variance clip `clip_var`)."""
    if conv is not None:
        raise ValueError("bayes-lenet takes no conv= substitute")
    return BayesLeNet(num_classes, in_channels, clip_var)
