"""CIFAR-10 from its binary files, or from its python pickles through a restricted unpickler.

- Binary version, `root/cifar-10-batches-bin/`: `data_batch_1.bin` .. `data_batch_5.bin`,
  `test_batch.bin`, each a run of 3,073-byte records: 1 label byte, then 32x32 red, green and
  blue planes (channel-major, row-major).
- Python version, `root/cifar-10-batches-py/` (what torchvision downloads): `data_batch_1` ..
  `data_batch_5`, `test_batch`, each a pickled dict with `b"data"` (uint8 (N, 3072), same
  layout) and `b"labels"` (list of ints). Pickles can run arbitrary code, so they are read by an
  unpickler that resolves only the numpy functions that rebuild arrays and a few plain builtins;
  any other global is refused with an error naming the file.

The binary version is preferred when both are present.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import (
    DatasetInfo,
    register_dataset,
    require_root,
    resize_images,
)

__all__ = ["CIFAR10_INFO", "ArrayUnpickler", "read_cifar_binary", "read_cifar_pickle"]

_PIXELS = 3 * 32 * 32
_RECORD = 1 + _PIXELS
_FETCH = "set data.download: true to fetch CIFAR-10"

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    in_channels=3,
    image_size=(32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    train_size=50000,
    test_size=10000,
    classes=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # taken from numpy's own reductions, so they are right whatever numpy calls its modules
    reconstruct = np.zeros(0).__reduce_ex__(2)[0]
    frombuffer = np.zeros(0).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes as written by Python 3 at protocol 2
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 names
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    plain = ("bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "set")
    for name in (*plain, "str", "tuple", "bool"):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = getattr(builtins, name)  # Python 2 pickles
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers and refuses anything else.

    Globals are looked up in a fixed table, never imported by name, so a pickle cannot reach
    `os.system`, `builtins.eval` or any class's constructor.
    """

    def __init__(self, file: io.BufferedIOBase, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_cifar_pickle(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one python-version batch file."""
    path = Path(path)
    try:
        batch = ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (no b'data' and b'labels' entries)")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' is not a uint8 (N, {_PIXELS}) array")
    if data.shape[1] != _PIXELS or labels.shape != (len(data),):
        raise ValueError(f"{path}: data {data.shape} and labels {labels.shape} disagree")
    return data.reshape(-1, 3, 32, 32), _check_labels(path, labels)


def read_cifar_binary(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary-version batch file."""
    path = Path(path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {_RECORD}-byte records"
        )
    records = raw.reshape(-1, _RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), _check_labels(path, records[:, 0])


def _check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9
    ):
        raise ValueError(f"{path}: labels must be integers 0..9")
    return labels.astype(np.int64)


def _batch_files(root: Path, split: str) -> tuple[list[Path], Any]:
    """The files of `split` and their reader: binary if complete, else python if complete."""
    train = split == "train"
    versions = [
        ("cifar-10-batches-bin", read_cifar_binary),
        ("cifar-10-batches-py", read_cifar_pickle),
    ]
    for folder, read in versions:
        files = _expected(root, folder, train)
        if all(f.is_file() for f in files):
            return files, read
    for folder, _ in versions:
        if (root / folder).is_dir():
            missing = next(f for f in _expected(root, folder, train) if not f.is_file())
            raise FileNotFoundError(f"{missing} not found; {_FETCH}")
    raise FileNotFoundError(
        f"{root / 'cifar-10-batches-bin'} (or {root / 'cifar-10-batches-py'}) not found; {_FETCH}"
    )


def _expected(root: Path, folder: str, train: bool) -> list[Path]:
    suffix = ".bin" if folder.endswith("bin") else ""
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return [root / folder / f"{n}{suffix}" for n in names]


@register_dataset(CIFAR10_INFO)
def _load_cifar10(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    root = require_root("cifar10", root)
    if download:
        try:
            _batch_files(root, split)
        except FileNotFoundError:
            import torchvision

            torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
    files, read = _batch_files(root, split)
    parts = [read(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorDataset(resize_images(x, image_size), y)
