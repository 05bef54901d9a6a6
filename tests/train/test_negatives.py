import pytest
import torch

from nettle.train.negatives import negative_targets, overlay, scramble


def _blocks(img, size):
    h, w = img.shape[-2:]
    return {
        tuple(img[0, r : r + size, c : c + size].flatten().tolist())
        for r in range(0, h, size)
        for c in range(0, w, size)
    }


def test_scramble_permutes_blocks_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = scramble(x, 2, g)
    for i in range(2):
        assert _blocks(x[i], 2) == _blocks(out[i], 2)  # the same tiles, intact, moved around
    px = scramble(x, 1, torch.Generator().manual_seed(1))
    assert sorted(px[0].flatten().tolist()) == sorted(x[0].flatten().tolist())
    assert not torch.equal(px, x)
    with pytest.raises(ValueError, match="not a multiple of block 3"):
        scramble(x, 3)


def test_scramble_deterministic_with_seed():
    x = torch.rand(3, 3, 8, 8)
    a = scramble(x, 2, torch.Generator().manual_seed(5))
    b = scramble(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_overlay_pairs_different_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 2, 2)
    for i in range(4):
        x[i, 0, i // 2, i % 2] = 1.0  # each image lights its own pixel
    y = torch.tensor([0, 0, 1, 1])
    out = overlay(x, y, g)
    assert out.shape == x.shape
    for i in range(4):
        lit = out[i].flatten() > 0
        assert int(lit.sum()) == 2  # its own pixel and its partner's
        partner = [j for j in range(4) if j != i and bool(lit[j])]
        assert len(partner) == 1 and y[partner[0]] != y[i]
        assert bool(lit[i]) and 0.7 <= out[i].flatten()[i] <= 1.0
    with pytest.raises(ValueError, match="two classes"):
        overlay(x, torch.zeros(4, dtype=torch.long), g)


def test_negative_targets_are_all_zero():
    t = negative_targets(3, 10)
    assert t.shape == (3, 10) and t.sum().item() == 0
