"""HashedNet substitutes (Chen et al. 2015, arXiv:1504.04788) as in Gray et al. 2019.

`HashedConv2d` keeps a vector of `budget` real weights; a fixed index table (a buffer saved with
the model, drawn once from a seeded generator) maps every position of the dense kernel to one of
them, and the forward pass gathers the dense kernel and convolves with it. Parameters fall,
multiply-adds do not: both the theoretical count (the reference's) and the executed one are the
dense convolution's. As in the reference the layer always has a bias (Co parameters, whatever
`bias` says) and there is no sign hash; unlike it, every real weight can be drawn (the
reference's table never uses the last one).

- `Hashed_s`: one hashed k x k conv with budget `int(s * Co*Ci*k^2)`.
- `HashedDecimate`: one hashed k x k conv with budget `Co*Ci*k^2 // 10`.
- `SepHashed_s`: dense depthwise k x k (k > 1) + a hashed 1x1 with budget `int(s * Ci*Co)`.
- `SepHashedDecimate`: a total of `Co*Ci*k^2 // 10` weights (as `HashedDecimate`): the dense
  depthwise k x k and a hashed 1x1 holding the rest (the reference's final version).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.cache import WeightCached
from nettle.nn.substitutes.separable import DepthwisePointwise, check_no_setting

__all__ = ["HashedConv2d", "HashedSeparable", "hash_index"]


def hash_index(
    size: int, budget: int, seed: int, device: torch.device | None = None
) -> torch.Tensor:
    """The fixed hash table: `size` indices uniform in [0, budget), from a generator seeded `seed`.

    Drawn on the CPU (the same table on every device), stored as int32 when it fits.
    """
    dtype = torch.int32 if budget < 2**31 else torch.int64
    g = torch.Generator(device="cpu").manual_seed(seed)
    index = torch.randint(0, budget, (size,), generator=g, dtype=dtype, device="cpu")
    return index.to(device if device is not None else torch.get_default_device())


class HashedConv2d(WeightCached):
    """A convolution whose kernel is gathered from `budget` shared weights.

    Cost: the dense convolution it emulates, `Co*(Ci/groups)*k^2*S_out` multiply-adds, both
    theoretical (the reference's count) and executed; Co bias additions per output pixel.
    In eval mode without a gradient to record, the gathered kernel is cached (`cache.py`), so
    inference runs at the dense convolution's speed; `to_dense()` is its deployable form.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as
            `nn.Conv2d` (square kernel).
        budget: the number of real weights, in [1, Co*Ci*k^2/groups].
        seed: the hash seed; `None` draws one from torch's global generator (so layers differ
            and a seeded run is reproducible).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        budget: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        seed: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        full = math.prod(self.shape)
        if not 1 <= budget <= full:
            raise ValueError(f"hashed budget must be in [1, {full}] for this layer, got {budget}")
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        self.seed = seed
        bound = 1.0 / math.sqrt(in_channels // groups * kernel_size**2)  # PyTorch's conv init
        self.hashed_weight = nn.Parameter(torch.empty(budget, **dd).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd).uniform_(-bound, bound))
        self.register_buffer("index", hash_index(full, budget, seed, device))

    @property
    def budget(self) -> int:
        """The number of real (shared) weights."""
        return self.hashed_weight.numel()

    def weight(self) -> torch.Tensor:
        """The dense kernel (Co, Ci/groups, k, k) gathered from the budget."""
        return self.hashed_weight.index_select(0, self.index).view(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.cached_weight("weight", self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def fast_form(self) -> nn.Conv2d:
        """The deployable form: the equivalent dense convolution (`to_dense`)."""
        return self.to_dense()

    def compressed_parameters(self) -> list[nn.Parameter]:
        """The shared weights (the bias stays in the normal group, as in the reference)."""
        return [self.hashed_weight]

    @torch.no_grad()
    def to_dense(self) -> nn.Conv2d:
        """The equivalent dense `nn.Conv2d` (with the gathered kernel and the bias)."""
        w = self.weight()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            device=w.device,
            dtype=w.dtype,
        )
        conv.weight.copy_(w)
        conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"budget={self.budget}, stride={self.stride}, seed={self.seed}"
        )


def _reference_size(size: int, module: HashedConv2d) -> int:
    """count.py's output size of a hashed conv: `(H + 2p - k) // s + 1`, dilation ignored."""
    return (size + 2 * module.padding - module.kernel_size) // module.stride + 1


@register_formula(HashedConv2d)
def _hashed_cost(module: HashedConv2d, inputs: tuple, output: torch.Tensor) -> OpCount:
    """Dense cost; `reference_macs` at count.py's size, which ignores dilation.

    The reference's rule for HashedConv2d computes the output size from kernel, padding and
    stride only, so a dilated hashed conv (DARTS' dilated 3x3, dilation 2, padding 2) is
    counted at (H + 2)^2 positions instead of H^2 (its Conv2d rule had this fixed in 2019).
    """
    n, c, h, w = output.shape
    dense = n * h * w * math.prod(module.shape)
    x = inputs[0]
    ref_h, ref_w = _reference_size(x.shape[-2], module), _reference_size(x.shape[-1], module)
    return OpCount(
        macs=dense,
        executed_macs=dense,
        bias=n * c * h * w,
        reference_macs=n * ref_h * ref_w * math.prod(module.shape),
    )


class HashedSeparable(DepthwisePointwise):
    """Dense depthwise k x k (k > 1) then a hashed 1x1 convolution (child `hashed`).

    Cost: that of the separable layer it emulates, `(Ci*k^2*[k>1] + Ci*Co) * S_out`, both
    theoretical and executed; one formula for the block. Its hashed weights and bias are
    compressed (both sit under `hashed.` in the reference).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation: as `nn.Conv2d`.
        budget: real weights of the hashed 1x1, in [1, Ci*Co].
        seed: hash seed of the 1x1 (see `HashedConv2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        budget: int = 1,
        seed: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        self.hashed = HashedConv2d(
            in_channels, out_channels, 1, budget, seed=seed, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hashed(self.spatial(x))

    def matrix(self) -> torch.Tensor:
        return self.hashed.weight()[:, :, 0, 0]

    def output_bias(self) -> torch.Tensor | None:
        return self.hashed.bias

    def compressed_parameters(self) -> list[nn.Parameter]:
        return list(self.hashed.parameters())

    def fast_form(self) -> nn.Module:
        """The deployable form: depthwise conv and the gathered 1x1 (`separable_form`)."""
        return self.separable_form()


@register_formula(HashedSeparable)
def _hashed_separable_cost(module: HashedSeparable, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    macs = module.depthwise_macs(output) + n * h * w * module.in_channels * c
    return OpCount(macs=macs, executed_macs=macs, bias=n * c * h * w)


def _fraction(setting: float | None, name: str) -> float:
    if setting is None or not 0 < setting <= 1:
        raise ValueError(
            f"substitute {name!r} needs a budget fraction s in (0, 1], e.g. {name}_0.1; "
            f"got {setting}"
        )
    return setting


def _hashed_budget(setting: float | None, c_in: int, c_out: int, k: int) -> int:
    return max(1, int(_fraction(setting, "Hashed") * (c_out * c_in * k * k)))


def _decimate_budget(setting: float | None, c_in: int, c_out: int, k: int) -> int:
    check_no_setting(setting, "HashedDecimate")
    return max(1, c_out * c_in * k * k // 10)


def _sep_hashed_budget(setting: float | None, c_in: int, c_out: int, k: int) -> int:
    return max(1, int(_fraction(setting, "SepHashed") * c_out * c_in))


def _sep_decimate_budget(setting: float | None, c_in: int, c_out: int, k: int) -> int:
    check_no_setting(setting, "SepHashedDecimate")
    total = c_out * c_in * k * k // 10
    rest = total - (c_in * k * k if k > 1 else 0)
    if rest < 1:
        raise ValueError(
            f"substitute 'SepHashedDecimate': a tenth of the dense kernel ({total}) does not "
            f"cover the depthwise conv of {c_in}x{k}x{k}"
        )
    return rest


def _register(name: str, budget: Callable[..., int], separable: bool, doc: str) -> None:
    def build(
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        setting: float | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Module:
        size = budget(setting, in_channels, out_channels, kernel_size)
        shape, dd = (in_channels, out_channels, kernel_size), {"device": device, "dtype": dtype}
        if separable:
            return HashedSeparable(*shape, stride, padding, dilation, size, **dd)
        return HashedConv2d(*shape, size, stride, padding, dilation, **dd)

    build.__name__, build.__doc__ = name.lower(), doc
    SUBSTITUTES.add(name, build)


_register("Hashed", _hashed_budget, False, "`Hashed_s`: a hashed k x k conv, budget s*Co*Ci*k^2.")
_register(
    "HashedDecimate", _decimate_budget, False, "`HashedDecimate`: a tenth of the dense weights."
)
_register("SepHashed", _sep_hashed_budget, True, "`SepHashed_s`: depthwise + hashed 1x1, s*Ci*Co.")
_register(
    "SepHashedDecimate",
    _sep_decimate_budget,
    True,
    "`SepHashedDecimate`: a tenth of the dense k x k weights, depthwise + hashed 1x1.",
)
