"""Counting conventions: which parts of a module's cost count as "MACs".

Papers and tools disagree on what a multiply-add count includes, so nettle names its
conventions. A convention maps (module, OpCount) to the number reported for that module. The
dispatch-level fallback (matmul/conv/attention ops run inside modules without a formula) counts
their multiply-adds under every convention. All counts are per example; one fused multiply-add
is one MAC (FLOPs, as torch's `FlopCounterMode` reports them, are 2 x MACs).

- `default`: multiply-adds of multiply-add ops only: convolutions, linear and bilinear layers,
  matrix products, recurrent gate mat-vecs, attention projections and products. No bias
  additions, activations, normalisation, pooling, upsampling or elementwise ops. This is what
  torchvision's "GFLOPS", fvcore and `FlopCounterMode`/2 report for conv/linear networks.
  WRN-28-10 at 32x32: 5,243,328,768; ResNet-50 at 224x224: 4,089,184,256.
- `deficient-efficient`: the count of Gray et al. 2019's `count.py` (BayesWatch/deficient-
  efficient): convolution MACs without bias, plus one op per element entering an `nn.ReLU`
  module, plus output elements x window for `AvgPool2d`/`MaxPool2d` modules, plus the bias
  additions of `Linear` layers (`N * (weight + bias)` per Linear); batch norm, other
  activations and functional ops other than multiply-adds count 0; a substitute whose formula
  gives `reference_macs` (ACDC at its input size, hashed convs at count.py's dilation-blind
  output size) counts that. Adaptive pooling counts 0 (count.py matched class names, and the
  reference's DARTS pools adaptively, its WRN functionally) unless the module is marked
  `reference_window = True`: the reference's ResNets (WRN-50-2) end in a fixed `AvgPool2d(7)`,
  so nettle's ResNets, which pool adaptively to run at any input size, mark their head pool
  and it counts its window (input elements; 2048 x 7 x 7 = 100,352 for WRN-50-2 at 224x224).
  Layers the script did not know (recurrent, attention, Conv1d/3d) count their MACs as under
  `default`. WRN-28-10 at 32x32: 5,245,638,922 (5.24564E+09).
- `macs+elementwise`: everything a formula reports: MACs plus bias additions, activations,
  normalisation, pooling, upsampling and other elementwise ops of modules (close to ptflops'
  "MACs" and thop's counts). Functional elementwise ops (`F.relu`, `x + y`) are not seen.
  WRN-28-10 at 32x32: 5,250,300,170, which is ptflops 0.7.5's 5,252,651,274 less its double
  count of `nn.ReLU` and pooling modules (2,351,104).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from nettle.measure.formulas import OpCount
from nettle.registry import Registry

__all__ = [
    "CONVENTIONS",
    "REFERENCE_WINDOW",
    "Convention",
    "get_convention",
    "list_conventions",
]

REFERENCE_WINDOW = "reference_window"
"""Attribute marking an adaptive average pool that a reference network had as a fixed window."""

Convention = Callable[[nn.Module, OpCount], int]
CONVENTIONS: Registry[Convention] = Registry("counting convention")


@CONVENTIONS.register("default")
def _default(module: nn.Module, cost: OpCount) -> int:
    return cost.macs


def _window_pool(module: nn.Module) -> bool:
    """A fixed-window pool, or an adaptive average pool standing for one (`REFERENCE_WINDOW`)."""
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        return True
    return isinstance(module, nn.AdaptiveAvgPool2d) and getattr(module, REFERENCE_WINDOW, False)


@CONVENTIONS.register("deficient-efficient")
def _deficient_efficient(module: nn.Module, cost: OpCount) -> int:
    total = cost.macs if cost.reference_macs is None else cost.reference_macs
    if type(module) is nn.ReLU:
        total += cost.relu
    elif _window_pool(module):
        total += cost.pool
    elif isinstance(module, nn.Linear):
        total += cost.bias
    return total


@CONVENTIONS.register("macs+elementwise")
def _everything(module: nn.Module, cost: OpCount) -> int:
    return (
        cost.macs
        + cost.bias
        + cost.relu
        + cost.activation
        + cost.pool
        + cost.norm
        + cost.upsample
        + cost.elementwise
    )


def get_convention(name: str) -> Convention:
    """The convention named `name` (unknown names list the known ones)."""
    return CONVENTIONS.get(name)


def list_conventions() -> list[str]:
    """Names of the counting conventions."""
    return CONVENTIONS.names()
