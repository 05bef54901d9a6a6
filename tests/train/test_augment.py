import pytest
import torch
import torch.nn.functional as F

from nettle.config import AugmentConfig
from nettle.train.augment import (
    BatchAugment,
    Cutout,
    GaussianNoise,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomRotation,
    build_augment,
    cutout,
    gaussian_noise,
    random_crop,
    random_erasing,
    random_flip,
    random_rotation,
    rotate,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _zero_box(mask):
    """(top, left, height, width) of a 2-D mask if it is one filled rectangle, else None."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    if len(rows) == 0:
        return (0, 0, 0, 0)
    top, left = int(rows[0]), int(cols[0])
    hh, ww = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    if int(mask.sum()) != hh * ww or not mask[top : top + hh, left : left + ww].all():
        return None
    return top, left, hh, ww


ALL_OPS = [
    RandomCrop(2),
    RandomFlip(),
    RandomRotation(30),
    Cutout(5),
    RandomErasing(1.0),
    RandomErasing(1.0, value=0.0),
    GaussianNoise(0.3),
]


@pytest.mark.parametrize("op", ALL_OPS, ids=repr)
def test_shape_dtype_range_and_input_untouched(op):
    x = torch.rand(16, 3, 12, 10)
    before = x.clone()
    for dtype in (torch.float32, torch.float64):
        out = op(x.to(dtype), _g())
        assert out.shape == x.shape and out.dtype == dtype
        assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert torch.equal(x, before)


@pytest.mark.parametrize("op", ALL_OPS, ids=repr)
def test_seeded_and_per_example(op):
    x = torch.rand(1, 3, 12, 12).expand(32, -1, -1, -1).contiguous()
    a, b = op(x, _g(1)), op(x, _g(1))
    assert torch.equal(a, b)  # the same seed, the same output
    assert not torch.equal(a, op(x, _g(2)))
    distinct = {tuple(a[i].flatten().tolist()) for i in range(32)}
    assert len(distinct) > 1  # each example its own parameters


def test_crop_is_a_window_of_the_padded_input():
    x = torch.rand(64, 3, 8, 6)
    out = random_crop(x, 2, _g())
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(64):
        match = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 6])
        ]
        assert match, f"example {i} is not a window of its padded input"
        offsets.append(match[0])
    assert len(set(offsets)) > 10  # per example; 25 offsets possible
    assert {dy for dy, _ in offsets} == set(range(5))
    assert torch.equal(random_crop(x, 0, _g()), x)


def test_flip_flips_exactly_the_picked_examples():
    x = torch.rand(200, 2, 5, 5)
    out = random_flip(x, _g())
    mask = torch.rand(200, generator=_g()) < 0.5  # the draw random_flip makes
    for i in range(200):
        assert torch.equal(out[i], x[i].flip(-1) if mask[i] else x[i])
    assert 70 < int(mask.sum()) < 130
    assert torch.equal(random_flip(x, _g(), p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, _g(), p=0.0), x)


def test_cutout_zeroes_exactly_a_clipped_square():
    x = torch.rand(300, 2, 10, 9) * 0.9 + 0.1  # no zeros to begin with
    size = 4
    out = cutout(x, size, _g())
    clipped = 0
    for i in range(300):
        zero = out[i, 0] == 0
        assert torch.equal(zero, out[i, 1] == 0)  # the same square on every channel
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest untouched
        top, left, hh, ww = _zero_box(zero)
        # a size x size square, clipped only where it meets the border
        assert hh == size or (hh < size and (top == 0 or top + hh == 10))
        assert ww == size or (ww < size and (left == 0 or left + ww == 9))
        clipped += (hh, ww) != (size, size)
    # centres uniform over all 90 pixels; rows [cy - 2, cy + 2) fit for cy in 2..8 (7 of 10),
    # columns for cx in 2..7 (6 of 9): 42 of 90 centres keep the whole square
    assert clipped / 300 == pytest.approx(1 - 42 / 90, abs=0.08)
    assert torch.equal(cutout(x, 0, _g()), x)


def test_random_erasing_rectangles_follow_scale_and_ratio():
    h, w = 20, 30
    x = torch.rand(400, 3, h, w) * 0.9 + 0.1
    out = random_erasing(x, 1.0, _g(), value=0.0)
    areas, ratios = [], []
    for i in range(400):
        zero = out[i, 0] == 0
        box = _zero_box(zero)
        assert box is not None and torch.equal(zero, out[i, 2] == 0)
        _, _, hh, ww = box
        assert 0 < hh < h and 0 < ww < w
        areas.append(hh * ww / (h * w))
        ratios.append(hh / ww)
    # rounding a side to whole pixels moves area and ratio a little past the drawn bounds
    assert min(areas) >= 0.015 and max(areas) <= 0.36
    assert min(ratios) >= 0.25 and max(ratios) <= 4.0
    assert sum(areas) / 400 == pytest.approx((0.02 + 0.33) / 2, abs=0.03)
    half = random_erasing(x, 0.5, _g(), value=0.0)
    changed = sum(not torch.equal(half[i], x[i]) for i in range(400))
    assert 160 < changed < 240
    assert torch.equal(random_erasing(x, 0.0, _g()), x)
    noisy = random_erasing(x, 1.0, _g(3))
    assert all(not torch.equal(noisy[i], x[i]) for i in range(400))
    with pytest.raises(ValueError, match="value must be a number or 'random'"):
        random_erasing(x, 1.0, _g(), value="mean")


def test_random_erasing_skips_examples_where_nothing_fits():
    x = torch.rand(8, 1, 1, 1)  # no rectangle is smaller than a 1x1 image
    assert torch.equal(random_erasing(x, 1.0, _g(), value=0.0), x)


def test_rotation_is_in_pixel_space_and_counter_clockwise():
    x = torch.rand(2, 3, 6, 6)
    out = rotate(x, torch.tensor([90.0, -90.0]))
    torch.testing.assert_close(out[0], torch.rot90(x[0], 1, (-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.rot90(x[1], -1, (-2, -1)), atol=1e-5, rtol=0)
    wide = torch.rand(1, 1, 4, 8)  # not sheared: the central 4x4 square turns as a square
    turned = rotate(wide, torch.tensor([90.0]))
    torch.testing.assert_close(
        turned[0, :, :, 2:6], torch.rot90(wide[0, :, :, 2:6], 1, (-2, -1)), atol=1e-5, rtol=0
    )
    assert turned[0, :, :, :2].abs().max().item() == 0.0  # outside: zeros
    torch.testing.assert_close(rotate(x, torch.zeros(2)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(random_rotation(x, 1e-9, _g()), x, atol=1e-5, rtol=0)
    assert torch.equal(random_rotation(x, 0, _g()), x)


def test_rotation_angles_are_per_example_within_bounds():
    # the angles random_rotation draws, replayed through rotate()
    x = torch.rand(64, 1, 9, 9)
    out = random_rotation(x, 20, _g(5))
    angles = (2 * torch.rand(64, generator=_g(5)) - 1) * 20  # the draw it makes
    assert angles.abs().max() <= 20 and angles.std() > 5
    torch.testing.assert_close(out, rotate(x, angles))


def test_gaussian_noise_std_and_clamp():
    big = torch.full((1, 1, 400, 500), 0.5)
    noisy = gaussian_noise(big, 0.1, _g())
    assert (noisy - 0.5).std().item() == pytest.approx(0.1, rel=0.01)
    assert (noisy - 0.5).mean().item() == pytest.approx(0.0, abs=1e-3)
    clamped = gaussian_noise(torch.zeros(1, 1, 100, 100), 1.0, _g())
    assert clamped.min().item() == 0.0 and clamped.max().item() == 1.0
    assert (clamped == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(gaussian_noise(big, 0.0, _g()), big)


def test_build_augment_order_and_seeding():
    cfg = AugmentConfig(
        crop_padding=2, flip=True, cutout=3, random_erasing=0.5, rotation=10, noise_std=0.05
    )
    aug = build_augment(cfg)
    assert repr(aug) == (
        "BatchAugment(RandomCrop(padding=2), RandomFlip(p=0.5), RandomRotation(degrees=10.0), "
        "Cutout(size=3), RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), "
        "value='random'), GaussianNoise(std=0.05))"
    )
    x = torch.rand(8, 3, 16, 16)
    g = _g(1)
    manual = x
    for op in aug.ops:
        manual = op(manual, g)
    assert torch.equal(aug(x, _g(1)), manual)  # the ops in order, sharing one generator
    assert not torch.equal(aug(x, _g(1)), aug(x, _g(2)))
    assert build_augment(AugmentConfig()) is None
    assert len(build_augment(AugmentConfig(flip=True))) == 1


def test_generator_continues_across_batches():
    # a resumed run restores the generator's state and draws what an uninterrupted run draws
    aug = BatchAugment([RandomCrop(2), Cutout(4)])
    x = torch.rand(4, 1, 8, 8)
    g = _g(7)
    aug(x, g)
    state = g.get_state()
    expected = aug(x, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(aug(x, resumed), expected)


def test_generator_must_be_on_the_batch_device():
    x = torch.rand(2, 1, 4, 4, device="meta")
    with pytest.raises(ValueError, match="the generator is on cpu but the batch is on meta"):
        random_flip(x, _g())
    aug = BatchAugment([RandomFlip()])
    with pytest.raises(ValueError, match="torch.Generator\\(device=x.device\\)"):
        aug(x, _g())
    assert random_flip(torch.ones(2, 1, 2, 2), None).shape == (2, 1, 2, 2)  # global generator


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_all_ops_on_cuda_with_a_cuda_generator():
    x = torch.rand(16, 3, 12, 12, device="cuda")
    aug = BatchAugment(ALL_OPS)
    g1 = torch.Generator(device="cuda").manual_seed(0)
    g2 = torch.Generator(device="cuda").manual_seed(0)
    out = aug(x, g1)
    assert out.device == x.device and torch.equal(out, aug(x, g2))
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
