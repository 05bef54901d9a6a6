"""Stateless d-way tensor decompositions for the tensor substitutes: TT, Tucker and CP.

`tensor_dims` views a Co x Ci matrix as a (d1, ..., dd) tensor (d = 3 by default) by the rule
of Gray et al. 2019;
the `*_ranks` functions turn their continuous rank scale s into ranks; `tt_svd`, `tucker_hosvd`
and `cp_als` decompose a tensor to given ranks (zero-padded to exactly those shapes, so that
parameter counts follow the rank rule even where the tensor's own rank is lower); the
`*_full` functions rebuild the tensor by pairwise contractions whose multiply-adds
`*_full_macs` give.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "cp_als",
    "cp_full",
    "cp_full_macs",
    "cp_rank",
    "tensor_dims",
    "tt_full",
    "tt_full_macs",
    "tt_ranks",
    "tt_svd",
    "tucker_full",
    "tucker_full_macs",
    "tucker_hosvd",
    "tucker_ranks",
]

Dims = tuple[int, ...]


def _smallest_divisor_at_least(n: int, m: int) -> int:
    if n < m:
        return n
    return next(d for d in range(max(m, 1), n + 1) if n % d == 0)


def tensor_dims(c_out: int, c_in: int, order: int = 3) -> Dims:
    """The reference's `order`-way view of a Co x Ci matrix, e.g. 640 x 640 -> (80, 80, 64).

    With q the order-th root of Co*Ci and m = round(q): (m,) * order for a perfect power,
    otherwise each of the first order - 1 dims the smallest divisor >= m of what the earlier
    ones leave, and the last dim the rest (the reference's rule; it used order 3, and tried 4).
    """
    if order < 2:
        raise ValueError(f"a tensor view needs order >= 2, got {order}")
    nel = c_out * c_in
    q = math.exp(math.log(nel) / order)
    m = round(q)
    if abs(m - q) < 1e-6:
        return (m,) * order
    dims, rest = [], nel
    for _ in range(order - 1):
        dims.append(_smallest_divisor_at_least(rest, m))
        rest //= dims[-1]
    return (*dims, rest)


def _full_ranks(dims: Dims) -> list[int]:
    """The ranks of an exact TT: `min(prod(dims[:k]), prod(dims[k:]))` for k = 1 .. d-1."""
    return [min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))]


def tt_ranks(dims: Dims, scale: float) -> tuple[int, ...]:
    """TT ranks `max(1, round(s * min(d_k, d_k+1)))`, capped at the exact TT's ranks.

    For three dims the caps are `min(d1, d2*d3)` and `min(d3, d1*d2)`.
    """
    wanted = [max(1, round(scale * min(a, b))) for a, b in itertools.pairwise(dims)]
    return tuple(min(r, cap) for r, cap in zip(wanted, _full_ranks(dims), strict=True))


def tucker_ranks(dims: Dims, scale: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Tucker ranks `t_i = max(1, round(s * d_i))` (at most d_i) and the TT ranks of the core.

    The reference kept the core in TT form as its library left it after Tucker-rounding an
    exact TT: rank k is `min(d1 * t2 * ... * t_k, t_k+1 * ... * t_d)` (the first mode keeps
    its full size on the left), i.e. `min(d1, t2*t3)`, `min(t3, d1*t2)` for three dims.
    """
    ranks = tuple(min(d, max(1, round(scale * d))) for d in dims)
    left = (dims[0], *ranks[1:])
    core = [min(math.prod(left[:k]), math.prod(ranks[k:])) for k in range(1, len(dims))]
    return ranks, tuple(core)


def cp_rank(dims: Dims, scale: float) -> int:
    """CP rank `max(1, round(s * min(d)))` (exact representation needs the product of all
    dims but the largest)."""
    return max(1, round(scale * min(dims)))


def _truncated(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`mat ~= left @ right` with `rank` columns/rows (zero-padded beyond mat's size)."""
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = min(rank, s.numel())
    left, right = u[:, :r], s[:r, None] * vh[:r]
    if r < rank:
        left = torch.cat([left, left.new_zeros(left.shape[0], rank - r)], 1)
        right = torch.cat([right, right.new_zeros(rank - r, right.shape[1])], 0)
    return left, right


def tt_svd(t: torch.Tensor, ranks: tuple[int, ...]) -> list[torch.Tensor]:
    """TT cores (r_k-1, d_k, r_k), r_0 = r_d = 1, of a d-way tensor by truncated SVDs."""
    dims, cores, left = t.shape, [], 1
    rest = t.reshape(1, -1)
    for k, r in enumerate(ranks):
        core, rest = _truncated(rest.reshape(left * dims[k], -1), r)
        cores.append(core.reshape(left, dims[k], r))
        left = r
    cores.append(rest.reshape(left, dims[-1], 1))
    return cores


def tt_full(cores: list[torch.Tensor]) -> torch.Tensor:
    """The (d1, ..., dd) tensor of TT cores, contracted left to right."""
    full = cores[0].reshape(cores[0].shape[1], -1)  # (d1, r1)
    for core in cores[1:]:
        full = full @ core.reshape(core.shape[0], -1)  # (d1..dk, dk+1 * rk+1)
        full = full.reshape(-1, core.shape[2])
    return full.reshape([c.shape[1] for c in cores])


def tt_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `tt_full` for cores of these shapes."""
    macs, rows = 0, shapes[0][1]
    for left, d, right in shapes[1:]:
        macs += rows * left * d * right
        rows *= d
    return macs


def _mode_product(t: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """Contract mode `mode` of `t` with the first index of `matrix` (d_mode, r)."""
    return torch.tensordot(t, matrix, dims=([mode], [0])).movedim(-1, mode)


def tucker_hosvd(
    t: torch.Tensor, ranks: tuple[int, ...], core_ranks: tuple[int, ...]
) -> list[torch.Tensor]:
    """Truncated HOSVD: factors U_i (d_i, t_i), then the core (t1, ..., td) as TT cores."""
    factors = []
    for mode, r in enumerate(ranks):
        unfolded = t.movedim(mode, 0).reshape(t.shape[mode], -1)
        u = torch.linalg.svd(unfolded, full_matrices=False)[0][:, :r]
        if u.shape[1] < r:
            u = torch.cat([u, u.new_zeros(u.shape[0], r - u.shape[1])], 1)
        factors.append(u)
    core = t
    for mode, u in enumerate(factors):
        core = _mode_product(core, u, mode)
    return [*factors, *tt_svd(core, core_ranks)]


def tucker_full(parts: list[torch.Tensor]) -> torch.Tensor:
    """The tensor of Tucker factors U_1 .. U_d and the core's d TT cores."""
    order = len(parts) // 2
    full = tt_full(parts[order:])
    for mode, u in enumerate(parts[:order]):
        full = _mode_product(full, u.t(), mode)
    return full


def tucker_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `tucker_full` for parts of these shapes."""
    order = len(shapes) // 2
    factors = [tuple(s) for s in shapes[:order]]
    sizes = [r for _, r in factors]
    macs = tt_full_macs(shapes[order:])
    for mode, (d, r) in enumerate(factors):
        sizes[mode] = d
        macs += math.prod(sizes) * r
    return macs


def _exact_cp(t: torch.Tensor, rank: int) -> list[torch.Tensor]:
    """An exact CP form with one term per entry of all modes but the largest."""
    big = max(range(t.dim()), key=lambda i: t.shape[i])
    small = [i for i in range(t.dim()) if i != big]
    terms = math.prod(t.shape[i] for i in small)
    factors = [t.new_zeros(t.shape[i], rank) for i in range(t.dim())]
    index = torch.arange(terms, device=t.device)
    for i in reversed(small):
        factors[i][index % t.shape[i], torch.arange(terms, device=t.device)] = 1.0
        index = index // t.shape[i]
    factors[big][:, :terms] = t.permute(*small, big).reshape(terms, -1).t()
    return factors


def _khatri_rao(mats: list[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product (rows: the first matrix's index slowest)."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def cp_als(t: torch.Tensor, rank: int, iters: int = 100, seed: int = 0) -> list[torch.Tensor]:
    """CP factors (d_i, rank) of a d-way tensor by alternating least squares.

    Exact (by construction) when `rank` reaches the product of all dims but the largest;
    otherwise `iters` ALS sweeps from the leading singular vectors (padded with seeded noise).
    """
    if rank >= math.prod(sorted(t.shape)[:-1]):
        return _exact_cp(t, rank)
    g = torch.Generator(device="cpu").manual_seed(seed)
    factors = []
    for mode in range(t.dim()):
        u = torch.linalg.svd(t.movedim(mode, 0).reshape(t.shape[mode], -1), full_matrices=False)[0]
        noise = torch.randn(t.shape[mode], rank, generator=g, dtype=t.dtype).to(t.device)
        u = (
            torch.cat([u[:, :rank], noise[:, u.shape[1] :]], 1)
            if u.shape[1] < rank
            else u[:, :rank]
        )
        factors.append(u)
    for _ in range(iters):
        for mode in range(t.dim()):
            others = [factors[i] for i in range(t.dim()) if i != mode]
            gram = torch.ones(rank, rank, dtype=t.dtype, device=t.device)
            for f in others:
                gram = gram * (f.t() @ f)
            unfolded = t.movedim(mode, 0).reshape(t.shape[mode], -1)
            factors[mode] = (unfolded @ _khatri_rao(others)) @ torch.linalg.pinv(
                gram, hermitian=True
            )
    return factors


def cp_full(factors: list[torch.Tensor]) -> torch.Tensor:
    """The tensor `sum_r a_r (x) b_r (x) ...` of CP factors (d_i, rank)."""
    rows = _khatri_rao(factors[:-1])  # (d1 * ... * d_d-1, rank)
    return (rows @ factors[-1].t()).reshape([f.shape[0] for f in factors])


def cp_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `cp_full` for factors of these shapes."""
    rank, macs, rows = shapes[0][1], 0, shapes[0][0]
    for d, _ in shapes[1:-1]:
        rows *= d
        macs += rows * rank
    return macs + rows * shapes[-1][0] * rank
