"""The digit-lines data set: shapes, label layout, pixels that are the labelled digits, no test
image in the train lines, determinism and the recorded normalisation."""

import functools

import numpy as np
import pytest
import torch

from nettle.train.data import create_dataset, get_dataset_info
from nettle.train.datasets.digit_lines import (
    LINE_WIDTH,
    MAX_DIGITS,
    MIN_DIGITS,
    PAD,
    digits_split,
    make_digit_lines,
    split_line_labels,
)


@functools.cache
def _loaded(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return create_dataset("digit-lines", split).tensors


def test_shapes_dtypes_and_label_layout():
    for split, n in (("train", 4000), ("test", 1000)):
        x, y = _loaded(split)
        assert (x.shape, x.dtype) == ((n, 1, 8, LINE_WIDTH), torch.float32)
        assert (y.shape, y.dtype) == ((n, 1 + MAX_DIGITS), torch.int64)
        assert x.min() >= 0.0 and x.max() <= 1.0
        digits, lengths = split_line_labels(y)
        assert lengths.min() == MIN_DIGITS and lengths.max() == MAX_DIGITS
        inside = torch.arange(MAX_DIGITS) < lengths[:, None]
        assert ((digits >= 0) & (digits <= 9))[inside].all()
        assert (digits[~inside] == PAD).all()
        # columns right of the last digit are blank padding
        assert x[lengths == MIN_DIGITS][..., -30:].abs().sum() == 0


def test_every_length_and_digit_occurs():
    _, y = _loaded("train")
    digits, lengths = split_line_labels(y)
    assert sorted(lengths.unique().tolist()) == list(range(MIN_DIGITS, MAX_DIGITS + 1))
    assert sorted(digits[digits != PAD].unique().tolist()) == list(range(10))


def test_pixels_are_the_labelled_digit_images():
    images, labels, _ = digits_split("test")
    lines = make_digit_lines(images, labels, 50, seed=1)
    x, y = _loaded("test")
    assert torch.equal(lines.x, x[:50]) and torch.equal(lines.y, y[:50])  # the loader's lines
    for i in range(50):
        n = int(lines.y[i, 0])
        for j in range(n):
            k, col = int(lines.sources[i, j]), int(lines.columns[i, j])
            assert int(lines.y[i, 1 + j]) == labels[k]
            assert np.array_equal(lines.x[i, 0, :, col : col + 8].numpy(), images[k])
        gaps = np.diff(lines.columns[i, :n].numpy()) - 8
        assert gaps.min() >= 0 and gaps.max() <= 2  # digits never overlap
        assert 0 <= int(lines.columns[i, 0]) <= 3


def test_train_and_test_lines_share_no_image():
    tr_images, tr_labels, tr_idx = digits_split("train")
    te_images, te_labels, te_idx = digits_split("test")
    assert not set(tr_idx) & set(te_idx)
    train = make_digit_lines(tr_images, tr_labels, 4000, seed=0)
    test = make_digit_lines(te_images, te_labels, 1000, seed=1)
    assert torch.equal(train.x, _loaded("train")[0]) and torch.equal(test.x, _loaded("test")[0])
    used_train = set(tr_idx[train.sources[train.sources != PAD].numpy()])
    used_test = set(te_idx[test.sources[test.sources != PAD].numpy()])
    assert used_train <= set(tr_idx) and used_test <= set(te_idx)
    assert not used_train & used_test
    # by content too: no digit cut out of a test line is any train image
    train_bytes = {img.tobytes() for img in tr_images}
    for i, j in zip(*np.nonzero(test.sources.numpy() != PAD), strict=True):
        col = int(test.columns[i, j])
        cut = test.x[i, 0, :, col : col + 8].numpy()
        assert cut.tobytes() not in train_bytes


def test_deterministic_and_seed_dependent():
    images, labels, _ = digits_split("train")
    a = make_digit_lines(images, labels, 20, seed=5)
    b = make_digit_lines(images, labels, 20, seed=5)
    c = make_digit_lines(images, labels, 20, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)


def test_info_matches_the_training_lines():
    info = get_dataset_info("digit-lines")
    x, _ = _loaded("train")
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (8, LINE_WIDTH))
    assert info.mean[0] == pytest.approx(x.mean().item(), abs=1e-4)
    assert info.std[0] == pytest.approx(x.std().item(), abs=1e-4)


def test_errors_name_the_problem():
    images, labels, _ = digits_split("test")
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        make_digit_lines(images, labels, 3, seed=0, min_digits=4, max_digits=2)
    with pytest.raises(ValueError, match="narrower than the longest line"):
        make_digit_lines(images, labels, 3, seed=0, width=40)
    with pytest.raises(ValueError, match="data.image_size: digit-lines has a fixed size"):
        create_dataset("digit-lines", "test", image_size=16)
    with pytest.raises(ValueError, match=r"must be \(N, 1 \+ max_digits\)"):
        split_line_labels(torch.zeros(3, dtype=torch.long))
