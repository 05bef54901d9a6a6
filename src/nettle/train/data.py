"""Data sets by name: `create_dataset(name, split)` yields (image in [0, 1], label) pairs.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (offline, the default): 1,797 images,
  a fixed stratified 80/20 split (1,437 train, 360 test), resizable with `image_size`.
- `digit-lines`: 3-8 digit text lines (8 x 84) made offline from the digits images of the same
  split (4,000 train, 1,000 test lines), labels `(length, digits..., -1 padding)` for a CTC
  model such as `crnn` (`train.loss: ctc`).
- `mnist`: the four idx files under `root` (or `root/MNIST/raw`), plain or gzipped, parsed
  and validated here; `download=True` fetches them with torchvision.
- `cifar10`: the binary version (`cifar-10-batches-bin`) read as bytes, or the python version
  (`cifar-10-batches-py`, what `download=True` fetches) through a restricted unpickler that
  only rebuilds numpy arrays.
- `imagefolder`: the ImageNet layout `root/train/<class>/*`, `root/val/<class>/*`, read from
  disk; the others are held in memory.

In-memory sets are `TensorDataset`s (`dataset.tensors == (X, Y)`), so a trainer can batch
them by indexing on the device. The loaders live in `nettle.train.datasets`, one module each;
a new set is a loader function decorated with `register_dataset(DatasetInfo(...))`.

`stratified_subset(dataset, n, seed)` keeps a seeded, class-balanced sample of a training set
(`data.subset`, for miniature debugging runs).

Example:
    >>> x, y = create_dataset("digits", "test").tensors
    >>> tuple(x.shape), x.dtype, y.dtype
    ((360, 1, 8, 8), torch.float32, torch.int64)
    >>> get_dataset_info("digits").mean
    (0.3054,)
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from nettle.train.datasets import (
    DATASETS,
    DatasetEntry,
    DatasetInfo,
    create_dataset,
    get_dataset_info,
    list_datasets,
    read_cifar_binary,
    read_cifar_pickle,
    read_idx,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "DatasetInfo",
    "create_dataset",
    "get_dataset_info",
    "list_datasets",
    "read_cifar_binary",
    "read_cifar_pickle",
    "read_idx",
    "register_dataset",
    "stratified_subset",
    "subset_sizes",
]


def subset_sizes(counts: list[int], n: int) -> list[int]:
    """How many of each class a subset of `n` keeps: shares proportional to `counts`, rounded
    by largest remainder (ties to the earlier class) so that they add up to exactly `n`.

    Example:
        >>> subset_sizes([5, 3, 2], 5)
        [3, 1, 1]
    """
    total = sum(counts)
    sizes = [n * c // total for c in counts]
    remainders = [n * c % total for c in counts]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def stratified_subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    """`n` examples of `dataset`, each class keeping its share (`subset_sizes`), drawn with
    `seed`: the same `n` and `seed` give the same examples, in the data set's order.

    Labels are read from `dataset.tensors[1]`, else `dataset.targets`, else the examples.
    Sequence labels (one row per example, e.g. `digit-lines`) have no classes: the subset is
    then a seeded uniform sample.

    Args:
        dataset: a training set of (image, label) pairs.
        n: examples to keep (`data.subset`).
        seed: seeds the draw (`train.seed`).

    Returns:
        A `TensorDataset` for an in-memory set (so it is still batched on the device), else a
        `torch.utils.data.Subset`.

    Raises:
        ValueError: `n` is not between 1 and the size of `dataset`.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if not 1 <= n <= size:
        raise ValueError(f"data.subset={n}: the training set has {size} examples")
    labels = _labels(dataset)
    g = torch.Generator().manual_seed(seed)
    if labels.dim() != 1:
        keep = torch.randperm(size, generator=g)[:n]
    else:
        classes, counts = labels.unique(return_counts=True)
        parts = []
        for c, k in zip(classes.tolist(), subset_sizes(counts.tolist(), n)):
            members = (labels == c).nonzero().flatten()
            parts.append(members[torch.randperm(len(members), generator=g)[:k]])
        keep = torch.cat(parts)
    keep = keep.sort().values
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and all(isinstance(t, torch.Tensor) for t in tensors):
        return TensorDataset(*(t[keep] for t in tensors))
    return Subset(dataset, keep.tolist())


def _labels(dataset: Dataset) -> torch.Tensor:
    """The labels of every example of `dataset`, as a tensor."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:
        return torch.as_tensor(tensors[1])
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]
