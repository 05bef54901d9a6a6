"""Digit-string text lines made offline from the 8x8 digits: the data of the CRNN.

Each line is a horizontal concatenation of 3 to 8 digit images of one split of `digits` (its
fixed 1,437/360 split): a random left margin of 0..3 pixels, then the digits left to right
with 0..2 blank columns between neighbours, on a black line 8 pixels high and 84 wide (the
longest possible line, 81 columns, rounded up to a multiple of 4). Train lines use only train
images and test lines only test images, so no test image is ever seen in training.

The lines are drawn once from a generator seeded by the split (`LINE_SEED`), so they are the
same on every machine: 4,000 train and 1,000 test lines.

`digit-lines-markov` holds lines of the same layout whose digits follow a first-order Markov
chain (`DIGIT_CHAIN`): the first digit is uniform, then each digit `d` is followed by
`(3d + 1) mod 10` with probability 0.6, by `(7d + 2) mod 10` with probability 0.25, and by any
digit with the remaining 0.15 spread evenly; each digit's image is drawn uniformly among the
split's images of that digit. A character language model has structure to learn there
(`nettle.train.char_lm`), which the uniform digits of `digit-lines` lack.

Labels are a fixed-size int64 row per line, so a trainer batches them by indexing:
`Y[i, 0]` is the number of digits `L`, `Y[i, 1:1 + L]` the digits left to right (0..9) and
`Y[i, 1 + L:]` is `PAD` (-1). `split_line_labels(Y)` returns (digits, lengths). A CTC model
(`nettle.models.crnn`) predicts class `d + 1` for digit `d` and keeps class 0 for the blank.

Example:
    >>> from nettle.train.data import create_dataset
    >>> x, y = create_dataset("digit-lines", "test").tensors
    >>> tuple(x.shape), tuple(y.shape)
    ((1000, 1, 8, 84), (1000, 9))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import DatasetInfo, register_dataset
from nettle.train.datasets.digits import digits_split

__all__ = [
    "DIGIT_CHAIN",
    "DIGIT_LINES_INFO",
    "DIGIT_LINES_MARKOV_INFO",
    "LINE_WIDTH",
    "MAX_DIGITS",
    "MIN_DIGITS",
    "PAD",
    "DigitLines",
    "make_digit_lines",
    "split_line_labels",
]

MIN_DIGITS, MAX_DIGITS = 3, 8
MAX_GAP, MAX_MARGIN = 2, 3
DIGIT = 8
LINE_WIDTH = 84  # MAX_MARGIN + 8 * MAX_DIGITS + MAX_GAP * (MAX_DIGITS - 1) = 81, rounded up to x4
PAD = -1
LINE_SEED = 0
SIZES = {"train": 4000, "test": 1000}

# mean and std of the 4,000 training lines (tests recompute them)
DIGIT_LINES_INFO = DatasetInfo(
    name="digit-lines",
    num_classes=10,
    in_channels=1,
    image_size=(DIGIT, LINE_WIDTH),
    mean=(0.1588,),
    std=(0.3111,),
    train_size=SIZES["train"],
    test_size=SIZES["test"],
    classes=tuple(str(d) for d in range(10)),
)

# the same layout with Markov-chain digits (see the module docstring); its own statistics
DIGIT_LINES_MARKOV_INFO = replace(
    DIGIT_LINES_INFO, name="digit-lines-markov", mean=(0.1598,), std=(0.3119,)
)


def _digit_chain() -> np.ndarray:
    """(10, 10) transition probabilities of `digit-lines-markov` (rows sum to 1)."""
    chain = np.full((10, 10), 0.15 / 10)
    for d in range(10):
        chain[d, (3 * d + 1) % 10] += 0.6
        chain[d, (7 * d + 2) % 10] += 0.25
    return chain


DIGIT_CHAIN = _digit_chain()


def _chain_picks(
    rng: np.random.Generator, n: int, chain: np.ndarray, by_digit: list[np.ndarray]
) -> list[int]:
    """Image indices of `n` digits following `chain` from a uniform first digit."""
    digits = [int(rng.integers(0, 10))]
    for _ in range(n - 1):
        digits.append(int(rng.choice(10, p=chain[digits[-1]])))
    return [int(rng.choice(by_digit[d])) for d in digits]


@dataclass
class DigitLines:
    """Lines and where they came from.

    Attributes:
        x: images (N, 1, 8, width) in [0, 1].
        y: labels (N, 1 + max_digits): length, then the digits, then `PAD`.
        sources: (N, max_digits) index of each digit's image in the given images, `PAD` after
            the line's end.
        columns: (N, max_digits) first column of each digit in the line, `PAD` after the end.
    """

    x: torch.Tensor
    y: torch.Tensor
    sources: torch.Tensor
    columns: torch.Tensor


def make_digit_lines(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    min_digits: int = MIN_DIGITS,
    max_digits: int = MAX_DIGITS,
    width: int | None = None,
    chain: np.ndarray | None = None,
) -> DigitLines:
    """`count` lines of `min_digits..max_digits` digits drawn (with replacement) from `images`.

    Args:
        images: (M, 8, 8) float images in [0, 1].
        labels: (M,) their digits.
        count: number of lines.
        seed: seed of the numpy generator that draws lengths, digits, margins and gaps.
        min_digits: shortest line.
        max_digits: longest line.
        width: line width (default: the longest possible line, rounded up to a multiple of 4).
        chain: (10, 10) digit transition probabilities: the digits of a line follow this
            Markov chain from a uniform first digit, each drawn as an image of that digit;
            None draws the images (and so the digits) uniformly.
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    longest = MAX_MARGIN + DIGIT * max_digits + MAX_GAP * (max_digits - 1)
    width = -(-longest // 4) * 4 if width is None else width
    if width < longest:
        raise ValueError(f"width {width} is narrower than the longest line ({longest} columns)")
    rng = np.random.default_rng(seed)
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    if chain is not None and (chain.shape != (10, 10) or any(len(b) == 0 for b in by_digit)):
        raise ValueError("chain must be (10, 10) and images must hold every digit")
    x = np.zeros((count, 1, DIGIT, width), dtype=np.float32)
    y = np.full((count, 1 + max_digits), PAD, dtype=np.int64)
    sources = np.full((count, max_digits), PAD, dtype=np.int64)
    columns = np.full((count, max_digits), PAD, dtype=np.int64)
    for i in range(count):
        n = int(rng.integers(min_digits, max_digits + 1))
        if chain is None:
            picks = rng.integers(0, len(images), size=n)
        else:
            picks = _chain_picks(rng, n, chain, by_digit)
        col = int(rng.integers(0, MAX_MARGIN + 1))
        y[i, 0] = n
        for j, k in enumerate(picks):
            x[i, 0, :, col : col + DIGIT] = images[k]
            y[i, 1 + j], sources[i, j], columns[i, j] = labels[k], k, col
            col += DIGIT + int(rng.integers(0, MAX_GAP + 1))
    return DigitLines(
        torch.from_numpy(x),
        torch.from_numpy(y),
        torch.from_numpy(sources),
        torch.from_numpy(columns),
    )


def split_line_labels(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(digits (N, max_digits) padded with `PAD`, lengths (N,)) of labels laid out as above."""
    if y.dim() != 2 or y.shape[1] < 2:
        raise ValueError(f"line labels must be (N, 1 + max_digits), got shape {tuple(y.shape)}")
    return y[:, 1:], y[:, 0]


@register_dataset(DIGIT_LINES_INFO)
def _load_digit_lines(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    if image_size is not None:
        raise ValueError(
            f"data.image_size: digit-lines has a fixed size (8 x {LINE_WIDTH}); leave it unset"
        )
    images, labels, _ = digits_split(split)
    seed = LINE_SEED * 2 + (split == "test")
    lines = make_digit_lines(images, labels, SIZES[split], seed)
    return TensorDataset(lines.x, lines.y)


@register_dataset(DIGIT_LINES_MARKOV_INFO)
def _load_digit_lines_markov(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    if image_size is not None:
        raise ValueError(
            "data.image_size: digit-lines-markov has a fixed size "
            f"(8 x {LINE_WIDTH}); leave it unset"
        )
    images, labels, _ = digits_split(split)
    seed = 100 + LINE_SEED * 2 + (split == "test")
    lines = make_digit_lines(images, labels, SIZES[split], seed, chain=DIGIT_CHAIN)
    return TensorDataset(lines.x, lines.y)
