"""Stateless 3-way tensor decompositions for the tensor substitutes: TT, Tucker and CP.

`tensor_dims` views a Co x Ci matrix as a (d1, d2, d3) tensor by the rule of Gray et al. 2019;
the `*_ranks` functions turn their continuous rank scale s into ranks; `tt_svd`, `tucker_hosvd`
and `cp_als` decompose a tensor to given ranks (zero-padded to exactly those shapes, so that
parameter counts follow the rank rule even where the tensor's own rank is lower); the
`*_full` functions rebuild the tensor by pairwise contractions whose multiply-adds
`*_full_macs` give.
"""

from __future__ import annotations

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

Dims = tuple[int, int, int]


def _smallest_divisor_at_least(n: int, m: int) -> int:
    if n < m:
        return n
    return next(d for d in range(max(m, 1), n + 1) if n % d == 0)


def tensor_dims(c_out: int, c_in: int) -> Dims:
    """The reference's 3-way view of a Co x Ci matrix, e.g. 640 x 640 -> (80, 80, 64).

    With q the cube root of Co*Ci and m = round(q): (m, m, m) for a perfect cube, otherwise d1
    the smallest divisor of Co*Ci that is >= m, d2 the same for Co*Ci/d1, d3 the rest.
    """
    nel = c_out * c_in
    q = math.exp(math.log(nel) / 3)
    m = round(q)
    if abs(m - q) < 1e-6:
        return m, m, m
    d1 = _smallest_divisor_at_least(nel, m)
    d2 = _smallest_divisor_at_least(nel // d1, m)
    return d1, d2, nel // (d1 * d2)


def tt_ranks(dims: Dims, scale: float) -> tuple[int, int]:
    """TT ranks `max(1, round(s * min(d_i, d_i+1)))`, capped at `min(d1, d2*d3)`, `min(d3, d1*d2)`."""
    d1, d2, d3 = dims
    r1 = min(max(1, round(scale * min(d1, d2))), d1, d2 * d3)
    r2 = min(max(1, round(scale * min(d2, d3))), d3, d1 * d2)
    return r1, r2


def tucker_ranks(dims: Dims, scale: float) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """Tucker ranks `t_i = max(1, round(s * d_i))` (at most d_i) and the TT ranks of the core.

    The reference kept the core in TT form with ranks `min(d1, t2*t3)` and `min(t3, d1*t2)`
    (its library never rounded the core), which this reproduces.
    """
    d1 = dims[0]
    t1, t2, t3 = (min(d, max(1, round(scale * d))) for d in dims)
    return (t1, t2, t3), (min(d1, t2 * t3), min(t3, d1 * t2))


def cp_rank(dims: Dims, scale: float) -> int:
    """CP rank `max(1, round(s * min(d)))` (exact representation needs the product of the two
    smallest dims)."""
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


def tt_svd(t: torch.Tensor, ranks: tuple[int, int]) -> list[torch.Tensor]:
    """TT cores (1, d1, r1), (r1, d2, r2), (r2, d3, 1) of a 3-way tensor by truncated SVDs."""
    d1, d2, d3 = t.shape
    r1, r2 = ranks
    g1, rest = _truncated(t.reshape(d1, d2 * d3), r1)
    g2, g3 = _truncated(rest.reshape(r1 * d2, d3), r2)
    return [g1.reshape(1, d1, r1), g2.reshape(r1, d2, r2), g3.reshape(r2, d3, 1)]


def tt_full(cores: list[torch.Tensor]) -> torch.Tensor:
    """The (d1, d2, d3) tensor of three TT cores (left to right)."""
    g1, g2, g3 = cores
    d1, d2, d3 = g1.shape[1], g2.shape[1], g3.shape[1]
    left = g1.reshape(d1, -1) @ g2.reshape(g2.shape[0], -1)  # (d1, d2*r2)
    return (left.reshape(d1 * d2, -1) @ g3.reshape(g3.shape[0], d3)).reshape(d1, d2, d3)


def tt_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `tt_full` for cores of these shapes."""
    (_, d1, r1), (_, d2, r2), (_, d3, _) = shapes
    return d1 * r1 * d2 * r2 + d1 * d2 * r2 * d3


def tucker_hosvd(
    t: torch.Tensor, ranks: tuple[int, int, int], core_ranks: tuple[int, int]
) -> list[torch.Tensor]:
    """Truncated HOSVD: factors U_i (d_i, t_i), then the core (t1, t2, t3) as TT cores."""
    factors = []
    for mode, r in enumerate(ranks):
        unfolded = t.movedim(mode, 0).reshape(t.shape[mode], -1)
        u = torch.linalg.svd(unfolded, full_matrices=False)[0][:, :r]
        if u.shape[1] < r:
            u = torch.cat([u, u.new_zeros(u.shape[0], r - u.shape[1])], 1)
        factors.append(u)
    core = torch.einsum("ijk,ia,jb,kc->abc", t, *factors)
    return [*factors, *tt_svd(core, core_ranks)]


def tucker_full(parts: list[torch.Tensor]) -> torch.Tensor:
    """The tensor of Tucker factors U1, U2, U3 and the core's three TT cores."""
    u1, u2, u3, *cores = parts
    x = torch.tensordot(u1, tt_full(cores), dims=([1], [0]))  # (d1, t2, t3)
    x = torch.einsum("atc,bt->abc", x, u2)  # (d1, d2, t3)
    return torch.einsum("abt,ct->abc", x, u3)


def tucker_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `tucker_full` for parts of these shapes."""
    (d1, t1), (d2, t2), (d3, t3), *cores = shapes
    return tt_full_macs(cores) + d1 * t1 * t2 * t3 + d1 * d2 * t2 * t3 + d1 * d2 * d3 * t3


def _exact_cp(t: torch.Tensor, rank: int) -> list[torch.Tensor]:
    """An exact CP form with one term per entry pair of the two smallest modes."""
    modes = sorted(range(3), key=lambda i: t.shape[i])
    a, b, c = modes
    da, db = t.shape[a], t.shape[b]
    factors = [t.new_zeros(t.shape[i], rank) for i in range(3)]
    terms = torch.arange(da * db, device=t.device)
    factors[a][terms // db, terms] = 1.0
    factors[b][terms % db, terms] = 1.0
    factors[c][:, : da * db] = t.permute(a, b, c).reshape(da * db, -1).t()
    return factors


def cp_als(t: torch.Tensor, rank: int, iters: int = 100, seed: int = 0) -> list[torch.Tensor]:
    """CP factors (d_i, rank) of a 3-way tensor by alternating least squares.

    Exact (by construction) when `rank` reaches the product of the two smallest dims;
    otherwise `iters` ALS sweeps from the leading singular vectors (padded with seeded noise).
    """
    if rank >= sorted(t.shape)[0] * sorted(t.shape)[1]:
        return _exact_cp(t, rank)
    g = torch.Generator(device="cpu").manual_seed(seed)
    factors = []
    for mode in range(3):
        u = torch.linalg.svd(t.movedim(mode, 0).reshape(t.shape[mode], -1), full_matrices=False)[0]
        noise = torch.randn(t.shape[mode], rank, generator=g, dtype=t.dtype).to(t.device)
        u = (
            torch.cat([u[:, :rank], noise[:, u.shape[1] :]], 1)
            if u.shape[1] < rank
            else u[:, :rank]
        )
        factors.append(u)
    specs = ("ijk,jr,kr->ir", "ijk,ir,kr->jr", "ijk,ir,jr->kr")
    for _ in range(iters):
        for mode, spec in enumerate(specs):
            others = [factors[i] for i in range(3) if i != mode]
            gram = (others[0].t() @ others[0]) * (others[1].t() @ others[1])
            mttkrp = torch.einsum(spec, t, *others)
            factors[mode] = mttkrp @ torch.linalg.pinv(gram, hermitian=True)
    return factors


def cp_full(factors: list[torch.Tensor]) -> torch.Tensor:
    """The tensor `sum_r a_r (x) b_r (x) c_r` of CP factors (d_i, rank)."""
    a, b, c = factors
    pairs = (a[:, None, :] * b[None, :, :]).reshape(-1, a.shape[1])  # (d1*d2, rank)
    return (pairs @ c.t()).reshape(a.shape[0], b.shape[0], c.shape[0])


def cp_full_macs(shapes: list[torch.Size]) -> int:
    """Multiply-adds of `cp_full` for factors of these shapes."""
    (d1, r), (d2, _), (d3, _) = shapes
    return d1 * d2 * r + d1 * d2 * d3 * r
