"""scikit-learn's bundled 8x8 handwritten digits: the offline default data set.

1,797 images of 10 digits with pixel values 0..16 (scaled to [0, 1] here), split once and for
all into 1,437 train and 360 test images: stratified by class, 80/20, with a fixed seed, so the
split is the same on every machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import DatasetInfo, register_dataset, resize_images
from nettle.train.datasets.digits_split import DIGITS_TEST_INDICES

__all__ = ["DIGITS_INFO", "digits_split", "digits_split_indices", "load_digits_arrays"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2
TOTAL_SIZE = 1797

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


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float32 with values 0..16, labels (1797,) int64) of the digits.

    Read straight from the file scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`:
    64 pixel columns and the label per row), without importing scikit-learn; its own loader
    is the fallback where the file is not found.
    """
    spec = importlib.util.find_spec("sklearn")
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of the fixed stratified 80/20 split of the digits.

    `labels` are the 1,797 digits' labels; the split is the stored `DIGITS_TEST_INDICES`
    (a stratified `train_test_split` with seed `SPLIT_SEED`) and the rest.
    """
    if len(labels) != TOTAL_SIZE:
        raise ValueError(f"the digits split needs the {TOTAL_SIZE} digits, got {len(labels)}")
    test = np.asarray(DIGITS_TEST_INDICES, dtype=np.int64)
    train = np.setdiff1d(np.arange(TOTAL_SIZE), test)
    return train, test


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (M, 8, 8) in [0, 1], labels, indices into the 1,797 digits) of a split."""
    images, labels = load_digits_arrays()
    train, test = digits_split_indices(labels)
    idx = train if split == "train" else test
    return images[idx] / np.float32(16.0), labels[idx], idx


@register_dataset(DIGITS_INFO)
def _load_digits(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    images, labels, _ = digits_split(split)
    x = torch.from_numpy(images).unsqueeze(1)
    return TensorDataset(resize_images(x, image_size), torch.from_numpy(labels))
