"""Data sets by name; each module registers one set with `DATASETS` when it is imported.

See `nettle.train.data` for the public face of this package.
"""

from nettle.train.datasets import cifar, digit_lines, digit_scenes, digits, folder, mnist
from nettle.train.datasets.base import (
    DATASETS,
    DatasetEntry,
    DatasetInfo,
    create_dataset,
    get_dataset_info,
    list_datasets,
    register_dataset,
)
from nettle.train.datasets.cifar import ArrayUnpickler, read_cifar_binary, read_cifar_pickle
from nettle.train.datasets.mnist import read_idx

__all__ = [
    "DATASETS",
    "ArrayUnpickler",
    "DatasetEntry",
    "DatasetInfo",
    "cifar",
    "create_dataset",
    "digit_lines",
    "digit_scenes",
    "digits",
    "folder",
    "get_dataset_info",
    "list_datasets",
    "mnist",
    "read_cifar_binary",
    "read_cifar_pickle",
    "read_idx",
    "register_dataset",
]
