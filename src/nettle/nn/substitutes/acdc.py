"""`ACDC` / `ACDC_n`: stacked ACDC layers (Moczulski et al. 2016, arXiv:1511.05946) as a
convolution substitute, as in Gray et al. 2019 (FastStackedConvACDC of gngdb/pytorch-acdc).

k > 1: a dense depthwise k x k convolution (carries stride, padding, dilation), then the
structured 1x1 map; k = 1: the structured map alone (it carries stride and padding). The map is
square, N x N: for Co > Ci the input gets copies of its first a channels appended (a the
smallest with `Co % (Ci + a) == 0`) and is tiled `Co / (Ci + a)` times; for Co < Ci
(`Ci % Co == 0`) blocks of `Ci / Co` consecutive channels of the N = Ci outputs are summed.

The map is a product of L factors, each, per pixel,
`x -> a * IDCT(P(d * DCT(P x)))`, with orthonormal DCT-II / DCT-III computed through the FFT
(`dct.py`), trainable diagonals a, d in R^N (init N(1, 0.01^2)) and P the riffle permutation
(interleave the two halves of the channels: channel j goes to position `perm[j]`, `perm = [0, 2,
4, ..., 1, 3, ...]`). This is exactly the reference's per-pixel map `W = R(M_1) ... R(M_L)`,
`M_l = R(diag(a_l) C) diag(d_l) C^-1` (its norm=None DCT scalings cancel), applied factor L
first. As in the reference, `ACDC_n` builds n - 1 factors (`ACDC`: 12 requested, 11 factors).

Variants (same parameters and counted cost as `ACDC_n`):
- `OriginalACDC` / `OriginalACDC_n`: no permutation inside a factor (`x -> a * IDCT(d *
  DCT(P x))`), the reference's "original" parameterisation, which its log compared with the
  riffle one (WRN-28-10: 5.35% vs 5.23% error). The reference's code at HEAD ignored the flag
  (its fast path always riffled), so its count.py gives `OriginalACDC` the figures of `ACDC`,
  as nettle's formula does.
- `PermutedACDC` / `PermutedACDC_n`: fixed uniformly random permutations of the N channels in
  place of both riffles of every factor (seeded, saved with the model): the reference log's
  "random permutation" alternative to the riffle.

Execution: when a batch has more pixels than channels, the chain is pushed once through the N
basis vectors and the resulting N x N matrix is applied as a 1x1 convolution (the reference's
"fast stacked" path); otherwise every pixel goes through the FFT chain. Under `torch.fx`
tracing the structured map is one leaf call (`structured_map`, wrapped with `torch.fx.wrap`):
which path runs depends on the batch's pixel count, known only when it runs, so the traced
graph computes the same numbers as the module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nettle.measure.formulas import OpCount, register_formula
from nettle.nn.substitutes.base import SUBSTITUTES
from nettle.nn.substitutes.cache import WeightCached, cacheable
from nettle.nn.substitutes.dct import dct, idct
from nettle.nn.substitutes.separable import DepthwisePointwise

__all__ = ["ACDC", "acdc_chain", "riffle", "structured_map", "unriffle"]


def riffle(x: torch.Tensor) -> torch.Tensor:
    """Permute the last dimension: even positions first, then odd ones."""
    return torch.cat([x[..., ::2], x[..., 1::2]], dim=-1)


def unriffle(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `riffle`: interleave the first ceil(N/2) and the last floor(N/2) entries."""
    half = (x.shape[-1] + 1) // 2
    out = torch.empty_like(x)
    out[..., ::2] = x[..., :half]
    out[..., 1::2] = x[..., half:]
    return out


def _shuffle(x: torch.Tensor, perm: torch.Tensor | None, layer: int, slot: int) -> torch.Tensor:
    """P x: `unriffle` (perm None) or `x[..., perm[layer, slot]]`."""
    return unriffle(x) if perm is None else x.index_select(-1, perm[layer, slot])


def acdc_chain(
    x: torch.Tensor,
    a: torch.Tensor,
    d: torch.Tensor,
    inner: bool = True,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply L ACDC factors along the last dimension of `x` (..., N); a, d: (L, N).

    Factor l maps `x -> a_l * IDCT(P(d_l * DCT(P x)))`; factor L - 1 first. P is `unriffle`,
    or with `perm` (L, 2, N) the fixed permutations `perm[l, 0]` (outer) and `perm[l, 1]`
    (inner); `inner=False` drops the inner P (the reference's "original" parameterisation).
    """
    for layer in reversed(range(a.shape[0])):
        y = d[layer] * dct(_shuffle(x, perm, layer, 0))
        if inner:
            y = _shuffle(y, perm, layer, 1)
        x = a[layer] * idct(y)
    return x


def _square(
    a: torch.Tensor, d: torch.Tensor, inner: bool = True, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """The N x N map W (row = output channel) of the factors a, d: (L, N)."""
    eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
    return acdc_chain(eye, a, d, inner, perm).t()  # row j of the chain's output is W e_j


@torch.fx.wrap
def structured_map(
    x: torch.Tensor,
    a: torch.Tensor,
    d: torch.Tensor,
    inner: bool = True,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """The factor stack a, d: (L, N) applied to the channels of x: (n, N, h, w).

    With more pixels than channels the stack is pushed through the N basis vectors once and
    applied as a 1x1 convolution; otherwise every pixel goes through the FFT chain. A leaf
    under `torch.fx` tracing, since the choice depends on the input's size.
    """
    n, width, h, w = x.shape
    if n * h * w > width:
        return F.conv2d(x, _square(a, d, inner, perm)[:, :, None, None])
    return acdc_chain(x.permute(0, 2, 3, 1), a, d, inner, perm).permute(0, 3, 1, 2)


def _expansion(c_in: int, c_out: int) -> int:
    """Channels to append so that the padded input width divides the output width."""
    a = 0
    while c_out % (c_in + a):
        a += 1
    return a


class ACDC(WeightCached, DepthwisePointwise):
    """Depthwise k x k (k > 1) then a stack of `factors` ACDC layers (see the module docstring).

    Parameters `Ci*k^2*[k>1] + 2*N*L (+Co)`. Cost (count.py of the reference, "HEAD" rule):
    `4N + 5N*log2(N)` multiply-adds per factor and output pixel (two diagonal scalings, an
    FFT-based DCT and IDCT), plus the depthwise conv; channel expansion, tiling and summing
    count nothing. `macs` uses the true output size; the reference counted a strided k > 1
    layer at its *input* size (the 1x1 part's own stride is 1), which the formula returns as
    `reference_macs`, used by the `deficient-efficient` counting convention to reproduce the
    published figures (`count_at_input_size` switches that quirk off for a layer when False).
    `executed_macs`: the chain on N basis vectors plus a dense 1x1 (many pixels), or the chain
    on every pixel (few pixels).

    Inference: in eval mode without a gradient to record, the N x N map of the basis path is
    cached (`cache.py`), so a batch of any size costs the depthwise part and one 1x1
    convolution (the numbers of the basis path; the FFT chain agrees to rounding). At WRN-28-10's shapes this beats the FFT
    chain per pixel and the rebuild per call by far (`python bench/substitutes.py --eval`
    prints the three); `fast_form()` folds expansion and summing into a Co x Ci 1x1 as well.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as `nn.Conv2d`
            (for Co < Ci, Ci must be a multiple of Co).
        factors: L, the number of ACDC factors (>= 1).
        inner: keep the permutation between DCT and IDCT inside every factor (the reference's
            riffle ACDC); False is its "original" parameterisation (`OriginalACDC`).
        permutation: "riffle" (the reference's) or "random": fixed uniformly random
            permutations of the N channels, two per factor (a buffer drawn from `seed`), as in
            the permutation study of the reference's log (`PermutedACDC`).
        seed: seed of the random permutations (`None`: drawn from torch's global generator).
    """

    count_at_input_size = True  # the reference's spatial-size quirk in `reference_macs`

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        factors: int = 11,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        inner: bool = True,
        permutation: str = "riffle",
        seed: int | None = None,
    ) -> None:
        if permutation not in ("riffle", "random"):
            raise ValueError(f"ACDC permutation must be 'riffle' or 'random', got {permutation!r}")
        if factors < 1:
            raise ValueError(
                f"substitute 'ACDC' needs at least one factor (ACDC_n with n >= 2), got {factors}"
            )
        if out_channels < in_channels and in_channels % out_channels:
            raise ValueError(
                f"substitute 'ACDC': {in_channels} input channels do not sum into "
                f"{out_channels} outputs (Ci must be a multiple of Co when Co < Ci)"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, device, dtype
        )
        dd = {"device": device, "dtype": dtype}
        self.expand = _expansion(in_channels, out_channels) if out_channels > in_channels else 0
        self.tile = out_channels // (in_channels + self.expand) if out_channels > in_channels else 1
        self.width = max(out_channels, in_channels + self.expand)  # N
        self.A = nn.Parameter(torch.empty(factors, self.width, **dd).normal_(1.0, 1e-2))
        self.D = nn.Parameter(torch.empty(factors, self.width, **dd).normal_(1.0, 1e-2))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        self.inner = inner
        perm = None
        if permutation == "random":
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
            g = torch.Generator(device="cpu").manual_seed(seed)
            draws = [torch.randperm(self.width, generator=g) for _ in range(2 * factors)]
            perm = torch.stack(draws).view(factors, 2, self.width).to(device)
        self.register_buffer("perm", perm)  # None for the riffle

    @property
    def factors(self) -> int:
        """L, the number of ACDC factors."""
        return self.A.shape[0]

    def _widen(self, x: torch.Tensor) -> torch.Tensor:
        """Channel expansion and tiling to N channels (dim 1)."""
        if self.expand:
            x = torch.cat([x, x[:, : self.expand]], dim=1)
        return torch.cat([x] * self.tile, dim=1) if self.tile > 1 else x

    def _narrow(self, y: torch.Tensor) -> torch.Tensor:
        """Sum blocks of consecutive channels (dim 1) down to Co."""
        if self.out_channels == self.width:
            return y
        return y.unflatten(1, (self.out_channels, self.width // self.out_channels)).sum(2)

    def square(self) -> torch.Tensor:
        """The N x N map W (row = output channel) of the factor stack."""
        return _square(self.A, self.D, self.inner, self.perm)

    def matrix(self) -> torch.Tensor:
        eye = torch.eye(self.in_channels, device=self.A.device, dtype=self.A.dtype)
        rows = acdc_chain(self._widen(eye), self.A, self.D, self.inner, self.perm)
        return self._narrow(rows).t()  # row i of `rows`: the map applied to e_i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._widen(self.spatial(x))
        if self._use_cache(x):  # the N x N map as a 1x1 conv, built once (`cache.py`)
            square = self.cached_weight("square", lambda: self.square()[:, :, None, None])
            y = F.conv2d(x, square)
        else:
            y = structured_map(x, self.A, self.D, self.inner, self.perm)
        y = self._narrow(y)
        return y if self.bias is None else y + self.bias[:, None, None]

    def _use_cache(self, x: torch.Tensor) -> bool:
        """Whether the cached N x N map may serve this call (eval mode, no graph to record).

        Then it does at any batch: one 1x1 conv beats the FFT chain per pixel even for a
        single image at 8x8 with 640 channels, where `structured_map` would run the chain.
        """
        return not isinstance(x, torch.fx.Proxy) and cacheable(self)

    def fast_form(self) -> nn.Module:
        """The deployable form: depthwise conv and the Co x Ci map (`separable_form`)."""
        return self.separable_form()

    def compressed_parameters(self) -> list[nn.Parameter]:
        """The diagonals (the reference's `A`/`D` weight-decay group)."""
        return [self.A, self.D]


def _per_position(module: ACDC) -> float:
    n = module.width
    return module.factors * (4 * n + 5 * n * math.log2(n))


@register_formula(ACDC)
def _acdc_cost(module: ACDC, inputs: tuple, output: torch.Tensor) -> OpCount:
    n, c, h, w = output.shape
    positions, chain, dw = n * h * w, _per_position(module), module.depthwise_macs(output)
    ref_positions = positions
    if module.depthwise is not None and module.count_at_input_size:
        ref_positions = n * inputs[0].shape[-2] * inputs[0].shape[-1]
    if positions > module.width:  # basis path
        executed = dw + round(module.width * chain) + positions * module.width**2
    else:
        executed = dw + round(positions * chain)
    summed = positions * (module.width - c) if c < module.width else 0
    return OpCount(
        macs=dw + round(positions * chain),
        executed_macs=executed,
        reference_macs=dw + round(ref_positions * chain),
        bias=positions * c if module.bias is not None else 0,
        elementwise=summed,
    )


def _layers(setting: float | None, name: str) -> int:
    n = 12 if setting is None else round(setting)
    if n < 2:
        raise ValueError(
            f"substitute {name!r} needs a layer count n >= 2 (n - 1 factors), e.g. {name}_12; "
            f"got {setting}"
        )
    return n


def _register(name: str, options: dict, doc: str) -> None:
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
    ) -> ACDC:
        factors = _layers(setting, name) - 1
        shape = (in_channels, out_channels, kernel_size, stride, padding, dilation, bias)
        return ACDC(*shape, factors, device, dtype, **options)

    build.__name__, build.__doc__ = name.lower(), doc
    SUBSTITUTES.add(name, build)


_register("ACDC", {}, "`ACDC` (12 requested layers) or `ACDC_n` (n >= 2): n - 1 riffle factors.")
_register(
    "OriginalACDC",
    {"inner": False},
    "`OriginalACDC` / `OriginalACDC_n`: ACDC without the riffle inside each factor.",
)
_register(
    "PermutedACDC",
    {"permutation": "random"},
    "`PermutedACDC` / `PermutedACDC_n`: ACDC with fixed random permutations for riffles.",
)
