"""Orthonormal DCT-II and its inverse (DCT-III) along the last dimension, through the FFT.

Makhoul's reordering: an N-point DCT-II is the real part of a phase-shifted N-point FFT of the
even samples followed by the reversed odd samples, O(N log N) instead of a dense N x N product.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dct", "idct"]


def _twiddle(n: int, x: torch.Tensor) -> torch.Tensor:
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    return torch.exp(torch.complex(torch.zeros_like(k), -math.pi * k / (2 * n)))


def _scale(n: int, x: torch.Tensor) -> torch.Tensor:
    s = torch.full((n,), math.sqrt(2.0 / n), device=x.device, dtype=x.dtype)
    s[0] = math.sqrt(1.0 / n)
    return s


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II of the last dimension."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.fft.fft(v, dim=-1)
    return (spectrum * _twiddle(n, x)).real * _scale(n, x)


def idct(y: torch.Tensor) -> torch.Tensor:
    """Inverse of `dct` (an orthonormal DCT-III) along the last dimension."""
    n = y.shape[-1]
    raw = y / _scale(n, y)  # back to sum_j x_j cos(pi k (2j + 1) / 2N)
    mirrored = torch.cat([torch.zeros_like(raw[..., :1]), raw[..., 1:].flip(-1)], dim=-1)
    spectrum = torch.complex(raw, -mirrored) * _twiddle(n, y).conj()
    v = torch.fft.ifft(spectrum, dim=-1).real
    half = (n + 1) // 2
    out = torch.empty_like(v)
    out[..., ::2] = v[..., :half]
    out[..., 1::2] = v[..., half:].flip(-1)
    return out
