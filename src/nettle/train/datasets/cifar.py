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
import io
import math
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


_MAX_FILE = 64 * 2**20  # a python-version batch is 31 MB: 10,000 x 3,072 bytes and labels
_MAX_BYTES = _MAX_FILE  # the most bytes any array or bytes object of a batch may claim
_DTYPE_KINDS = "biuf"  # booleans, integers, floats: no objects, strings or records


class _Dtype:
    """A numpy dtype named by a pickle. numpy's own `dtype.__setstate__` never sees the file's
    state: only the byte order is taken from it, and only plain number kinds are accepted."""

    def __init__(self, spec: Any, align: bool = False, copy: bool = False) -> None:
        dtype = np.dtype(spec.decode() if isinstance(spec, bytes) else spec)
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None:
            raise pickle.UnpicklingError(f"refusing dtype {dtype} (numbers only)")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or any(x is not None for x in state[2:5]):
            raise pickle.UnpicklingError("refusing a dtype with fields or sub-arrays")
        order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, _Dtype):
        return value.dtype
    return _Dtype(value).dtype  # the type codes numpy's _reconstruct passes (b"b")


def _from_bytes(raw: Any, dtype: Any, shape: Any, order: str = "C") -> np.ndarray:
    """An array of `shape` over exactly the bytes given; sizes must agree before any copy."""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    raw = memoryview(raw).cast("B")
    dt = _dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) and 0 <= n <= _MAX_BYTES for n in shape):
        raise pickle.UnpicklingError(f"refusing an array of shape {shape}")
    if math.prod(shape) * dt.itemsize != len(raw):
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and {dt} needs {math.prod(shape) * dt.itemsize} bytes, "
            f"the file gives {len(raw)}"
        )
    order = order.decode() if isinstance(order, bytes) else order
    return np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if order == "F" else "C")


class _Array:
    """An array being rebuilt from numpy's `_reconstruct` + state; `.array` once complete."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("refusing an array state that numpy did not write")
        _, shape, dtype, fortran, raw = state
        if not isinstance(raw, bytes | bytearray | str):
            raise pickle.UnpicklingError("refusing an array of objects")
        self.array = _from_bytes(raw, dtype, shape, "F" if fortran else "C")


class _NamedOnly:
    """Stands for numpy.ndarray: a pickle may name it (for `_reconstruct`), never call it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray")


_NDARRAY = _NamedOnly()


def _reconstruct(cls: Any, shape: Any, code: Any) -> _Array:
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("refusing to rebuild anything but a numpy array")
    _dtype(code)
    return _Array()


def _scalar(dtype: Any, raw: Any) -> Any:
    return _from_bytes(raw, dtype, ())[()]


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin-1")


def _sized(kind: type) -> Any:
    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int) and not 0 <= args[0] <= _MAX_BYTES:
            raise pickle.UnpicklingError(f"refusing {kind.__name__}({args[0]})")
        return kind(*args)

    return build


def _numpy_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _latin1,  # bytes as written by Python 3 at protocol 2
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 names
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _from_bytes
    plain = ("complex", "dict", "float", "frozenset", "int", "list", "set", "str", "tuple", "bool")
    for module in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        for name in plain:
            allowed[(module, name)] = getattr(builtins, name)
        allowed[(module, "bytes")] = _sized(bytes)
        allowed[(module, "bytearray")] = _sized(bytearray)
    return allowed


class ArrayUnpickler(pickle._Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers and refuses anything else.

    Globals are looked up in a fixed table, never imported by name, so a pickle cannot reach
    `os.system`, `builtins.eval` or any class's constructor. Arrays are rebuilt here from the
    bytes in the file, so a pickle cannot claim an array larger than itself, and dtypes are
    plain numbers. It is Python's own unpickler (not the C one, whose memo a 10-byte file can
    grow to gigabytes); call `load_arrays` for the result with every array complete.
    """

    def __init__(self, file: io.BufferedIOBase, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def load_arrays(self) -> Any:
        """`load()`, with every rebuilt array in place of its placeholder."""
        return _finish(self.load())


def _finish(obj: Any) -> Any:
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without its data")
        return obj.array
    if isinstance(obj, dict):
        return {_finish(k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_finish(v) for v in obj)
    return obj


def read_cifar_pickle(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one python-version batch file.

    Raises:
        ValueError: naming the file, for anything but a batch of numbers of a sane size.
    """
    path = Path(path)
    if path.stat().st_size > _MAX_FILE:
        raise ValueError(f"{path}: not a CIFAR-10 batch (larger than {_MAX_FILE:,} bytes)")
    try:
        reader = ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes")
        batch = reader.load_arrays()
    except Exception as exc:  # a hostile pickle can make the unpickler raise anything
        reason = next(iter(str(exc).splitlines()), "") or type(exc).__name__
        raise ValueError(f"{path}: not a CIFAR-10 batch ({reason})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (no b'data' and b'labels' entries)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' is not a uint8 (N, {_PIXELS}) array")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise ValueError(f"{path}: b'labels' is not a list of {len(data)} labels")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{path}: b'labels' is not a list of integers 0..9") from None
    if data.shape[1] != _PIXELS or labels.shape != (len(data),):
        raise ValueError(f"{path}: data {data.shape} and labels {labels.shape} disagree")
    return data.reshape(-1, 3, 32, 32), _check_labels(path, labels)


def read_cifar_binary(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary-version batch file."""
    path = Path(path)
    if path.stat().st_size > _MAX_FILE:
        raise ValueError(f"{path}: not a CIFAR-10 batch (larger than {_MAX_FILE:,} bytes)")
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
    if len(images) == 0:
        raise ValueError(f"cifar10: the {split} batches in {files[0].parent} hold no images")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorDataset(resize_images(x, image_size), y)
