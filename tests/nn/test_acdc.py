import math

import numpy as np
import pytest
import scipy.fft
import torch

from nettle.nn.substitutes.acdc import ACDC, riffle, unriffle
from nettle.nn.substitutes.dct import dct, idct


def dense_dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix Q (row k = frequency k), from its definition."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    q = torch.cos(math.pi * k * (2 * j + 1) / (2 * n)) * math.sqrt(2 / n)
    q[0] /= math.sqrt(2)
    return q


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 160])
def test_fft_dct_equals_the_dense_orthonormal_matrix_and_inverts_exactly(n):
    q = dense_dct_matrix(n)
    x = torch.randn(5, n, dtype=torch.float64)
    torch.testing.assert_close(dct(x), x @ q.t())
    torch.testing.assert_close(idct(x), x @ q)  # DCT-III = Q^T
    torch.testing.assert_close(idct(dct(x)), x)
    torch.testing.assert_close(dct(idct(x)), x)
    torch.testing.assert_close(q @ q.t(), torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(dct(x).norm(dim=-1), x.norm(dim=-1))


def test_riffle_puts_even_positions_first_and_unriffle_inverts_it():
    x = torch.arange(7)
    assert riffle(x).tolist() == [0, 2, 4, 6, 1, 3, 5]
    assert unriffle(riffle(x)).tolist() == list(range(7))
    assert riffle(unriffle(torch.arange(8))).tolist() == list(range(8))


def reference_stack(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """pytorch-acdc's FastStackedConvACDC weight, rebuilt from its description with scipy.

    C = DCT-II (norm=None) of the rows of I, Cinv its exact inverse; R(M) riffles M's columns;
    factor l: M_l = R(diag(a_l) C) diag(d_l) Cinv; weight W = R(M_1) ... R(M_L) (row = output).
    """
    n = a.shape[1]
    c = scipy.fft.dct(np.eye(n), axis=-1)
    c_inv = scipy.fft.idct(np.eye(n), axis=-1)
    perm = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])
    w = np.eye(n)
    for a_l, d_l in zip(a, d, strict=True):
        m = (np.diag(a_l) @ c)[:, perm] @ np.diag(d_l) @ c_inv
        w = w @ m[:, perm]
    return w


@pytest.mark.parametrize("n", [7, 8, 16])
def test_the_factor_stack_is_the_references_stacked_map(n):
    torch.manual_seed(0)
    layer = ACDC(n, n, 1, factors=3).double()
    with torch.no_grad():  # far from the N(1, 0.01^2) init, so every factor matters
        layer.A.normal_(1.0, 0.5)
        layer.D.normal_(1.0, 0.5)
    expected = reference_stack(layer.A.detach().numpy(), layer.D.detach().numpy())
    np.testing.assert_allclose(layer.square().detach().numpy(), expected, atol=1e-12)
    x = torch.randn(2, n, 2, 2, dtype=torch.float64)  # 8 pixels: the per-pixel FFT path
    y = torch.einsum("oi,nihw->nohw", torch.from_numpy(expected), x)
    torch.testing.assert_close(layer(x), y)


def test_basis_path_equals_the_per_pixel_path():
    torch.manual_seed(0)
    layer = ACDC(8, 16, 3, stride=2, padding=1, factors=3).double()
    x = torch.rand(2, 8, 5, 5, dtype=torch.float64)
    y = layer(x)  # 18 pixels > 16 channels: the N x N matrix is built from the basis
    torch.testing.assert_close(layer(x[:1]), y[:1])  # 9 pixels: every pixel through the FFTs


def test_channel_expansion_tiling_and_contraction():
    torch.manual_seed(0)
    grow = ACDC(16, 24, 1, factors=2).double()  # 8 channels appended: N = 24, no tiling
    w, m = grow.square(), grow.matrix()
    torch.testing.assert_close(m[:, :8], w[:, :8] + w[:, 16:])
    torch.testing.assert_close(m[:, 8:], w[:, 8:16])
    tiled = ACDC(8, 24, 1, factors=2).double()  # 8 divides 24: tiled 3 times
    w, m = tiled.square(), tiled.matrix()
    torch.testing.assert_close(m, w[:, :8] + w[:, 8:16] + w[:, 16:])
    shrink = ACDC(12, 4, 1, factors=2).double()  # sums of 3 consecutive outputs of N = 12
    w, m = shrink.square(), shrink.matrix()
    torch.testing.assert_close(m, w.reshape(4, 3, 12).sum(1))
    assert (shrink.width, shrink.A.shape) == (12, (2, 12))


def test_init_and_parameter_count():
    torch.manual_seed(0)
    layer = ACDC(160, 320, 3, factors=11)
    assert sum(p.numel() for p in layer.parameters()) == 160 * 9 + 11 * 2 * 320
    assert abs(layer.A.mean().item() - 1) < 1e-3 and abs(layer.D.std().item() - 1e-2) < 1e-3
