"""Structured substitutes for convolutions, selected by name and setting (see `base.py`).

`Conv`, `Sep`, `Generic_r`, `LR_r`, `Shuffle_g`, `Hashed_s`, `HashedDecimate`, `SepHashed_s`,
`SepHashedDecimate`, `ACDC`/`ACDC_n`, `TensorTrain_s`, `Tucker_s`, `CP_s` (Gray, Crowley, Storkey
2019, "Separable Layers Enable Structured Efficient Linear Substitutions", arXiv:1906.00859),
and the variants the reference compared: `OriginalACDC`/`OriginalACDC_n` (no riffle inside a
factor), `PermutedACDC`/`PermutedACDC_n` (random fixed permutations for the riffles) and the
order-4 tensor views `TensorTrain4_s`, `Tucker4_s`, `CP4_s` (a variant is a name of its own;
the setting keeps its meaning). Layers that rebuild a weight cache it for inference
(`cache.py`) and give their plain-layer form with `fast_form()`.
Importing this package registers every substitute and its cost formula.
"""

from nettle.nn.substitutes.acdc import ACDC
from nettle.nn.substitutes.base import (
    SUBSTITUTES,
    create_conv,
    get_conv_class,
    list_substitutes,
    parse_spec,
)
from nettle.nn.substitutes.hashed import HashedConv2d, HashedSeparable
from nettle.nn.substitutes.lowrank import GenericLowRank, TiedLowRank
from nettle.nn.substitutes.separable import DepthwisePointwise, Separable, separable_split
from nettle.nn.substitutes.shuffle import LinearShuffleNet
from nettle.nn.substitutes.tensor import CP, Decomposed1x1, TensorTrain, Tucker

__all__ = [
    "ACDC",
    "CP",
    "SUBSTITUTES",
    "Decomposed1x1",
    "DepthwisePointwise",
    "GenericLowRank",
    "HashedConv2d",
    "HashedSeparable",
    "LinearShuffleNet",
    "Separable",
    "TensorTrain",
    "TiedLowRank",
    "Tucker",
    "create_conv",
    "get_conv_class",
    "list_substitutes",
    "parse_spec",
    "separable_split",
]
