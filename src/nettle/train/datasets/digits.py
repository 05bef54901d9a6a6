"""scikit-learn's bundled 8x8 handwritten digits: the offline default data set.

1,797 images of 10 digits with pixel values 0..16 (scaled to [0, 1] here), split once and for
all into 1,437 train and 360 test images: stratified by class, 80/20, with a fixed seed, so the
split is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import DatasetInfo, register_dataset, resize_images

__all__ = ["DIGITS_INFO", "digits_split_indices"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2

# mean and std of the 1,437 training images at 8x8 (tests recompute them)
DIGITS_INFO = DatasetInfo(
    name="digits",
    num_classes=10,
    in_channels=1,
    image_size=(8, 8),
    mean=(0.3054,),
    std=(0.3761,),
    train_size=1437,
    test_size=360,
    classes=tuple(str(d) for d in range(10)),
)


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of the fixed stratified 80/20 split of `labels`."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=labels,
    )
    return np.sort(train), np.sort(test)


@register_dataset(DIGITS_INFO)
def _load_digits(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = digits_split_indices(bunch.target)
    idx = train if split == "train" else test
    x = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target[idx].astype(np.int64))
    return TensorDataset(resize_images(x, image_size), y)
