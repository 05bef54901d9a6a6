"""Structured substitutes for convolutions, selected by name (see `base.py`)."""

from nettle.nn.substitutes.base import (
    SUBSTITUTES,
    create_conv,
    get_conv_class,
    list_substitutes,
    parse_spec,
)

__all__ = ["SUBSTITUTES", "create_conv", "get_conv_class", "list_substitutes", "parse_spec"]
