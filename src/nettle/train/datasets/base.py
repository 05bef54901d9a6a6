"""The data set registry and its factory: `create_dataset(name, split)`, `get_dataset_info(name)`.

A data set is a loader function registered with the `DatasetInfo` that describes it:

    >>> @register_dataset(DatasetInfo("tiny", 2, 1, (4, 4), (0.5,), (0.5,)))  # doctest: +SKIP
    ... def _tiny(split, root, image_size, download):
    ...     return TensorDataset(torch.rand(8, 1, 4, 4), torch.arange(8) % 2)

Loaders return a `Dataset` of (float32 image (C, H, W) in [0, 1], int64 label) pairs. Sets that
fit in memory return a `TensorDataset`, whose `.tensors == (X, Y)` lets a trainer batch them by
indexing on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nettle.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "DatasetInfo",
    "Loader",
    "create_dataset",
    "get_dataset_info",
    "list_datasets",
    "register_dataset",
    "require_root",
    "resize_images",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a data set.

    Attributes:
        name: the registry name.
        num_classes: number of labels.
        in_channels: image channels.
        image_size: (H, W) of the images as loaded.
        mean: per-channel mean of the training images in [0, 1] (for normalisation).
        std: per-channel standard deviation of the training images.
        train_size: examples in the train split, where known.
        test_size: examples in the test split, where known.
        classes: class names in label order, where known.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int | None = None
    test_size: int | None = None
    classes: tuple[str, ...] | None = None


Loader = Callable[[str, Path | None, int | None, bool], Dataset]
"""`load(split, root, image_size, download) -> Dataset`."""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: its static description, its loader and, for sets whose classes
    depend on the files (image folders), a function refining the description from `root`."""

    info: DatasetInfo
    load: Loader
    describe: Callable[[DatasetInfo, Path], DatasetInfo] | None = None


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(
    info: DatasetInfo, describe: Callable[[DatasetInfo, Path], DatasetInfo] | None = None
) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under `info.name`."""

    def decorator(load: Loader) -> Loader:
        DATASETS.add(info.name, DatasetEntry(info, load, describe))
        return load

    return decorator


def list_datasets() -> list[str]:
    """The registered data set names, sorted."""
    return DATASETS.names()


def get_dataset_info(
    name: str, root: str | Path | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Classes, channels, image size and normalisation of data set `name`.

    Args:
        name: a registered name (see `list_datasets`).
        root: the folder of its files; image folders read their class names from it.
        image_size: the side the images will be resized to, if any.
    """
    entry = DATASETS.get(name)
    info = entry.info
    if entry.describe is not None and root is not None:
        info = entry.describe(info, Path(root))
    if image_size is not None:
        info = dataclasses.replace(info, image_size=(image_size, image_size))
    return info


def create_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
) -> Dataset:
    """The `split` of data set `name` as (float32 image (C, H, W) in [0, 1], int label) pairs.

    Args:
        name: a registered name (see `list_datasets`); unknown names raise `UnknownNameError`.
        split: "train" or "test".
        root: the folder of the files, for file-backed sets.
        image_size: resize images to `image_size` x `image_size`.
        download: fetch missing files into `root` where the set can be downloaded.

    Raises:
        FileNotFoundError: a file is missing; the message names the path expected.
        ValueError: a bad split, or a file that is not in the expected format.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    entry = DATASETS.get(name)
    return entry.load(split, None if root is None else Path(root), image_size, download)


def require_root(name: str, root: Path | None) -> Path:
    """`root`, or a `ValueError` saying that data set `name` needs `data.root`."""
    if root is None:
        raise ValueError(f"data set {name!r} needs data.root (the folder of its files)")
    return root


def resize_images(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize a batch (N, C, H, W) to `image_size` squared: bilinear, no antialiasing."""
    if image_size is None or tuple(x.shape[-2:]) == (image_size, image_size):
        return x
    out = F.interpolate(
        x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False
    )
    return out.clamp_(0.0, 1.0)
