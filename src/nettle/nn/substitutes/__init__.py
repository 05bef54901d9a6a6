"""Structured substitutes for convolutions, selected by name and setting (see `base.py`).

`Conv`, `Sep`, `Generic_r`, `LR_r`, `Shuffle_g`, `Hashed_s`, `HashedDecimate`, `SepHashed_s`,
`SepHashedDecimate`, `ACDC`/`ACDC_n`, `TensorTrain_s`, `Tucker_s`, `CP_s`.
"""

from nettle.nn.substitutes import acdc as _acdc
from nettle.nn.substitutes import hashed as _hashed
from nettle.nn.substitutes import lowrank as _lowrank
from nettle.nn.substitutes import separable as _separable
from nettle.nn.substitutes import shuffle as _shuffle
from nettle.nn.substitutes import tensor as _tensor
from nettle.nn.substitutes.base import (
    SUBSTITUTES,
    create_conv,
    get_conv_class,
    list_substitutes,
    parse_spec,
)

__all__ = ["SUBSTITUTES", "create_conv", "get_conv_class", "list_substitutes", "parse_spec"]
del _acdc, _hashed, _lowrank, _separable, _shuffle, _tensor
