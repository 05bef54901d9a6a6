"""Data sets by name: `create_dataset(name, split)` yields (image in [0, 1], label) pairs.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (offline, the default): 1,797 images,
  a fixed stratified 80/20 split (1,437 train, 360 test), resizable with `image_size`.
- `mnist`: the four idx files under `root` (or `root/MNIST/raw`), plain or gzipped, parsed
  and validated here; `download=True` fetches them with torchvision.
- `cifar10`: the binary version (`cifar-10-batches-bin`) read as bytes, or the python version
  (`cifar-10-batches-py`) through a restricted unpickler that only rebuilds numpy arrays.
- `imagefolder`: the ImageNet layout `root/train/<class>/*`, `root/val/<class>/*`.

In-memory sets are `TensorDataset`s (`dataset.tensors == (X, Y)`), so a trainer can batch
them by indexing on the device.
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from nettle.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "create_dataset",
    "get_dataset_info",
    "list_datasets",
    "read_idx",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a data set."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int | None = None
    test_size: int | None = None


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    load: Callable[..., Dataset]


DATASETS: Registry[_Entry] = Registry("dataset")


def list_datasets() -> list[str]:
    """Registered data set names."""
    return DATASETS.names()


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _resize(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or x.shape[-1] == image_size:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)


def get_dataset_info(
    name: str, root: str | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Classes, channels, image size and normalisation of data set `name`."""
    info = DATASETS.get(name).info
    if info.name == "imagefolder" and root is not None:
        train = Path(root) / "train"
        if train.is_dir():
            classes = sum(1 for d in train.iterdir() if d.is_dir())
            info = DatasetInfo(**{**info.__dict__, "num_classes": classes})
    if image_size is not None:
        info = DatasetInfo(**{**info.__dict__, "image_size": (image_size, image_size)})
    return info


def create_dataset(
    name: str,
    split: str = "train",
    root: str | None = None,
    image_size: int | None = None,
    download: bool = False,
) -> Dataset:
    """The `split` of data set `name` as (float image (C, H, W) in [0, 1], int label) pairs."""
    _check_split(split)
    return DATASETS.get(name).load(split=split, root=root, image_size=image_size, download=download)


# --- digits -----------------------------------------------------------------------------------


def _digits(split: str, root: str | None, image_size: int | None, download: bool) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    y = torch.from_numpy(bunch.target[idx].astype(np.int64))
    return TensorDataset(_resize(x, image_size).clamp_(0, 1), y)


DATASETS.add(
    "digits",
    _Entry(DatasetInfo("digits", 10, 1, (8, 8), (0.3054,), (0.3761,), 1437, 360), _digits),
)

# --- MNIST ------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), plain or gzipped, validating its header."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: truncated or padded idx file ({len(raw)} bytes, expected {expected})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(root: Path, names: list[str], hint: str) -> Path:
    for name in names:
        for folder in (root, root / "MNIST" / "raw"):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"{root / names[0]} not found ({hint})")


def _require_root(name: str, root: str | None) -> Path:
    if root is None:
        raise ValueError(f"data set {name!r} needs data.root (the folder of its files)")
    return Path(root)


def _mnist(split: str, root: str | None, image_size: int | None, download: bool) -> Dataset:
    base = _require_root("mnist", root)
    if download:
        import torchvision

        torchvision.datasets.MNIST(str(base), train=split == "train", download=True)
    prefix = "train" if split == "train" else "t10k"
    hint = "set data.download: true to fetch MNIST"
    images = read_idx(_find(base, [f"{prefix}-images-idx3-ubyte"], hint))
    labels = read_idx(_find(base, [f"{prefix}-labels-idx1-ubyte"], hint))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{base}: MNIST images {images.shape} and labels {labels.shape} disagree")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(_resize(x, image_size), y)


DATASETS.add(
    "mnist",
    _Entry(DatasetInfo("mnist", 10, 1, (28, 28), (0.1307,), (0.3081,), 60000, 10000), _mnist),
)

# --- CIFAR-10 ---------------------------------------------------------------------------------

_CIFAR_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_CIFAR_PY = [f"data_batch_{i}" for i in range(1, 6)]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only; anything else is refused."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (no data/labels)")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def _load_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of 3073-byte CIFAR records")
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def _cifar10(split: str, root: str | None, image_size: int | None, download: bool) -> Dataset:
    base = _require_root("cifar10", root)
    if download:
        import torchvision

        torchvision.datasets.CIFAR10(str(base), train=split == "train", download=True)
    binary, python = base / "cifar-10-batches-bin", base / "cifar-10-batches-py"
    if binary.is_dir():
        files, load = (
            [binary / n for n in (_CIFAR_BIN if split == "train" else ["test_batch.bin"])],
            _load_cifar_bin,
        )
    elif python.is_dir():
        files, load = (
            [python / n for n in (_CIFAR_PY if split == "train" else ["test_batch"])],
            _load_cifar_py,
        )
    else:
        raise FileNotFoundError(
            f"{binary} (or {python}) not found; set data.download: true to fetch CIFAR-10"
        )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 file missing: {missing[0]}")
    parts = [load(f) for f in files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorDataset(_resize(x, image_size), y)


DATASETS.add(
    "cifar10",
    _Entry(
        DatasetInfo(
            "cifar10",
            10,
            3,
            (32, 32),
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            50000,
            10000,
        ),
        _cifar10,
    ),
)

# --- ImageNet-style folders -------------------------------------------------------------------


def _imagefolder(split: str, root: str | None, image_size: int | None, download: bool) -> Dataset:
    import torchvision
    from torchvision import transforms

    base = _require_root("imagefolder", root)
    folder = base / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found (expected root/train/<class>/ and root/val/<class>/)"
        )
    size = image_size or 224
    tf = transforms.Compose(
        [
            transforms.Resize(size * 8 // 7),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )
    return torchvision.datasets.ImageFolder(str(folder), transform=tf)


DATASETS.add(
    "imagefolder",
    _Entry(
        DatasetInfo(
            "imagefolder", 1000, 3, (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        ),
        _imagefolder,
    ),
)
