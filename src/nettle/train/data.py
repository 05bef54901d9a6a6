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

Example:
    >>> x, y = create_dataset("digits", "test").tensors
    >>> tuple(x.shape), x.dtype, y.dtype
    ((360, 1, 8, 8), torch.float32, torch.int64)
    >>> get_dataset_info("digits").mean
    (0.3054,)
"""

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
]
