"""Digit scenes made offline from the 8x8 digits: the data of the single-stage detector.

Each scene is a black 32x32 canvas with 1 to 3 digits of one split of `digits` (its fixed
1,437/360 split), each drawn at 8x8 or, enlarged by pixel repetition, 16x16, at a random place
where its square does not overlap the others' (so every object is visible whole). Train scenes
use only train images and test scenes only test images: no test digit is ever seen in training.
The box of an object is the tight box of its lit pixels (value > 0), in pixel coordinates
`(x1, y1, x2, y2)` with exclusive upper corners, so a box's width is `x2 - x1` pixels.

The scenes are drawn once from a generator seeded by the split (`SCENE_SEED`), so they are the
same on every machine: 3,000 train and 600 test scenes.

Labels are a fixed-size float row per object so that a trainer batches them by indexing:
`Y[i, j] = (class, x1, y1, x2, y2)` for object `j` of scene `i`, and rows after the scene's
last object have class `PAD` (-1) and a zero box. `split_boxes(Y)` returns (classes, boxes).

Example:
    >>> from nettle.train.data import create_dataset
    >>> x, y = create_dataset("digit-scenes", "test").tensors
    >>> tuple(x.shape), tuple(y.shape)
    ((600, 1, 32, 32), (600, 3, 5))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import DatasetInfo, register_dataset
from nettle.train.datasets.digits import digits_split

__all__ = [
    "CANVAS",
    "DIGIT_SCENES_INFO",
    "MAX_OBJECTS",
    "PAD",
    "make_digit_scenes",
    "split_boxes",
]

CANVAS = 32
MAX_OBJECTS = 3
SCALES = (1, 2)  # 8x8 and 16x16 digits
PAD = -1
SCENE_SEED = {"train": 11, "test": 12}
SIZES = {"train": 3000, "test": 600}
_TRIES = 100  # placements tried per object before the scene keeps fewer objects

# mean and std of the 3,000 training scenes (tests recompute them)
DIGIT_SCENES_INFO = DatasetInfo(
    name="digit-scenes",
    num_classes=10,
    in_channels=1,
    image_size=(CANVAS, CANVAS),
    mean=(0.0758,),
    std=(0.2293,),
    train_size=SIZES["train"],
    test_size=SIZES["test"],
    classes=tuple(str(d) for d in range(10)),
)


def _tight_box(patch: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(patch > 0)
    return (
        x + int(cols.min()),
        y + int(rows.min()),
        x + int(cols.max()) + 1,
        y + int(rows.max()) + 1,
    )


def _overlaps(square: tuple[int, int, int], placed: list[tuple[int, int, int]]) -> bool:
    x, y, s = square
    return any(x < px + ps and px < x + s and y < py + ps and py < y + s for px, py, ps in placed)


def make_digit_scenes(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int, canvas: int = CANVAS
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` scenes of 1..`MAX_OBJECTS` digits drawn (with replacement) from `images`.

    Args:
        images: (M, 8, 8) float images in [0, 1], each with at least one lit pixel.
        labels: (M,) their digits.
        count: number of scenes.
        seed: seed of the numpy generator that draws counts, digits, scales and places.
        canvas: side of the square canvas (at least 16).

    Returns:
        (x (count, 1, canvas, canvas) in [0, 1], y (count, MAX_OBJECTS, 5) as described in the
        module docstring).
    """
    if canvas < 8 * max(SCALES):
        raise ValueError(f"canvas must be at least {8 * max(SCALES)} pixels, got {canvas}")
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 1, canvas, canvas), dtype=np.float32)
    y = np.zeros((count, MAX_OBJECTS, 5), dtype=np.float32)
    y[:, :, 0] = PAD
    for i in range(count):
        placed: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            k = int(rng.integers(0, len(images)))
            side = 8 * int(rng.choice(SCALES))
            for _ in range(_TRIES):
                px, py = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                if not _overlaps((px, py, side), placed):
                    break
            else:
                continue  # no free place for this size: the scene keeps fewer objects
            patch = np.kron(images[k], np.ones((side // 8, side // 8), dtype=np.float32))
            x[i, 0, py : py + side, px : px + side] = patch
            y[i, len(placed)] = (labels[k], *_tight_box(patch, px, py))
            placed.append((px, py, side))
    return torch.from_numpy(x), torch.from_numpy(y)


def split_boxes(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes (N, K) int64 with `PAD` rows, boxes (N, K, 4) xyxy) of scene labels."""
    if y.dim() != 3 or y.shape[-1] != 5:
        raise ValueError(f"scene labels must be (N, K, 5), got shape {tuple(y.shape)}")
    return y[..., 0].long(), y[..., 1:]


@register_dataset(DIGIT_SCENES_INFO)
def _load_digit_scenes(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    if image_size is not None:
        raise ValueError(
            f"data.image_size: digit-scenes has a fixed size ({CANVAS}x{CANVAS}); leave it unset"
        )
    images, labels, _ = digits_split(split)
    return TensorDataset(*make_digit_scenes(images, labels, SIZES[split], SCENE_SEED[split]))
