"""Structured substitutes for convolutions, selected by name and setting (see `base.py`).

`Conv`, `Sep`, `Generic_r`, `LR_r`, `Shuffle_g`, `Hashed_s`, `HashedDecimate`, `SepHashed_s`,
`SepHashedDecimate`, `ACDC`/`ACDC_n`, `TensorTrain_s`, `Tucker_s`, `CP_s` (Gray, Crowley, Storkey
2019, "Separable Layers Enable Structured Efficient Linear Substitutions", arXiv:1906.00859).
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
