"""MNIST from its four idx files, parsed and validated here (no pickle, no torchvision reader).

The files are looked up under `root` and `root/MNIST/raw` (where torchvision downloads them),
plain or gzipped: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`.

idx format: two zero bytes, a type byte (0x08 unsigned byte, ...), the number of dimensions,
then each dimension as a big-endian 32-bit integer, then the data, big-endian, row-major.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nettle.train.datasets.base import (
    DatasetInfo,
    register_dataset,
    require_root,
    resize_images,
)

__all__ = ["MNIST_INFO", "find_mnist_file", "read_idx"]

MAX_IDX_BYTES = 256 * 2**20
"""Largest idx file read, decompressed (MNIST's training images are 47 MB)."""
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"

# the usual constants, computed over the 60,000 training images
MNIST_INFO = DatasetInfo(
    name="mnist",
    num_classes=10,
    in_channels=1,
    image_size=(28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    train_size=60000,
    test_size=10000,
    classes=tuple(str(d) for d in range(10)),
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file, plain or gzipped, checking its magic number and its length.

    Raises:
        ValueError: naming the file, if the magic number is wrong or the size disagrees with
            the dimensions in the header (a truncated or padded file).
    """
    path = Path(path)
    if path.stat().st_size > MAX_IDX_BYTES:
        raise ValueError(f"{path}: larger than {MAX_IDX_BYTES:,} bytes; not an MNIST idx file")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(path, raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number 0x{raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "padded"
        raise ValueError(
            f"{path}: {kind} idx file ({len(raw)} bytes, expected {expected} for shape {dims})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _gunzip(path: Path, raw: bytes) -> bytes:
    """The decompressed bytes, stopping once they pass `MAX_IDX_BYTES` (a gzip bomb)."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(raw, MAX_IDX_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"{path}: broken gzip stream ({exc})") from None
    if len(out) > MAX_IDX_BYTES:
        raise ValueError(f"{path}: decompresses to more than {MAX_IDX_BYTES:,} bytes")
    if not inflate.eof:
        raise ValueError(f"{path}: broken gzip stream (it ends early)")
    return out


def find_mnist_file(root: Path, name: str) -> Path | None:
    """`name` or `name.gz` under `root` or `root/MNIST/raw`; None if absent."""
    for folder in (root, root / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _split_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    found = []
    for name in _split_names(split):
        path = find_mnist_file(root, name)
        if path is None:
            raise FileNotFoundError(
                f"{root / name}[.gz] not found (also looked in {root / 'MNIST' / 'raw'}); "
                "set data.download: true to fetch MNIST"
            )
        found.append(path)
    images_file, labels_file = found
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dtype != np.uint8 or images.ndim != 3 or min(images.shape[1:]) < 1:
        raise ValueError(f"{images_file}: expected unsigned bytes (N, H, W), got {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_file}: expected {len(images)} byte labels, got {labels.shape}")
    if labels.size and labels.max() >= MNIST_INFO.num_classes:
        raise ValueError(f"{labels_file}: label {labels.max()} is not a digit")
    return images, labels


@register_dataset(MNIST_INFO)
def _load_mnist(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> TensorDataset:
    root = require_root("mnist", root)
    if download and any(find_mnist_file(root, n) is None for n in _split_names(split)):
        import torchvision

        torchvision.datasets.MNIST(str(root), train=split == "train", download=True)
    images, labels = _read_split(root, split)
    if len(images) == 0:
        raise ValueError(f"mnist: the {split} files in {root} hold no images")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(resize_images(x, image_size), y)
