import pytest
import torch

from nettle.config import AugmentConfig
from nettle.train.augment import (
    build_augment,
    cutout,
    gaussian_noise,
    random_crop,
    random_erasing,
    random_flip,
    random_rotation,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_is_a_window_of_the_padded_input():
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, 2, _g())
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(16):
        match = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert match, f"example {i} is not a window"
        offsets.add(match[0])
    assert len(offsets) > 1  # each example its own offset


def test_flip_flips_exactly_the_picked_examples():
    x = torch.rand(64, 1, 4, 4)
    out = random_flip(x, _g())
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(32, 2, 10, 10)
    out = cutout(x, 4, _g())
    for i in range(32):
        zero = out[i, 0] == 0
        assert torch.equal(zero, out[i, 1] == 0)  # same square on all channels
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert int(zero.sum()) == len(rows) * len(cols)  # a full rectangle
        if rows.min() > 0 and rows.max() < 9 and cols.min() > 0 and cols.max() < 9:
            assert int(zero.sum()) == 16  # unclipped: exactly size x size


def test_erasing_rotation_noise_stay_in_range():
    x = torch.rand(32, 3, 12, 12)
    for out in (
        random_erasing(x, 1.0, _g()),
        random_rotation(x, 30, _g()),
        gaussian_noise(x, 0.3, _g()),
    ):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
    erased = random_erasing(x, 1.0, _g())
    assert all((erased[i] != x[i]).any() for i in range(32))
    assert torch.equal(random_erasing(x, 0.0, _g()), x)


def test_rotation_by_zero_and_noise_std():
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(random_rotation(x, 1e-9, _g()), x, atol=1e-5, rtol=0)
    big = torch.full((100_000,), 0.5).view(1, 1, 100, 1000)
    noisy = gaussian_noise(big, 0.1, _g())
    assert (noisy - 0.5).std().item() == pytest.approx(0.1, rel=0.02)


def test_seeded_and_per_example():
    cfg = AugmentConfig(
        crop_padding=2, flip=True, cutout=3, random_erasing=0.5, rotation=10, noise_std=0.05
    )
    aug = build_augment(cfg)
    assert repr(aug) == "BatchAugment(crop, flip, rotation, cutout, erasing, noise)"
    x = torch.rand(8, 3, 16, 16)
    assert torch.equal(aug(x, _g(1)), aug(x, _g(1)))
    assert not torch.equal(aug(x, _g(1)), aug(x, _g(2)))
    same = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    out = aug(same, _g(3))
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 8))
    assert build_augment(AugmentConfig()) is None
