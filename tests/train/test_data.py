import gzip
import io
import os
import pickle
import struct
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import Dataset, Subset, TensorDataset

from nettle.config import DataConfig
from nettle.registry import UnknownNameError
from nettle.train.data import (
    create_dataset,
    get_dataset_info,
    list_datasets,
    read_cifar_binary,
    read_cifar_pickle,
    read_idx,
    stratified_subset,
    subset_sizes,
)
from nettle.train.datasets.digits import digits_split_indices, load_digits_arrays

# --- registry and errors ----------------------------------------------------------------------


def test_registry_names_and_errors():
    assert list_datasets() == [
        "cifar10",
        "digit-lines",
        "digit-lines-markov",
        "digit-scenes",
        "digits",
        "imagefolder",
        "mnist",
    ]
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; known: cifar10, digit-"):
        create_dataset("svhn")
    with pytest.raises(
        UnknownNameError,
        match="known: cifar10, digit-lines, digit-lines-markov, digit-scenes, digits, imagefolder",
    ):
        get_dataset_info("svhn")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        create_dataset("digits", "val")
    with pytest.raises(ValueError, match="'mnist' needs data.root"):
        create_dataset("mnist")
    assert get_dataset_info("DIGITS").name == "digits"  # case-insensitive


def test_published_statistics():
    cifar = get_dataset_info("cifar10")
    assert (cifar.mean, cifar.std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert cifar.classes[0] == "airplane" and cifar.classes[9] == "truck"
    assert (cifar.train_size, cifar.test_size, cifar.image_size) == (50000, 10000, (32, 32))
    net = get_dataset_info("imagefolder")
    assert (net.mean, net.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (net.in_channels, net.image_size) == (3, (224, 224))
    mnist = get_dataset_info("mnist", image_size=32)
    assert (mnist.mean, mnist.std, mnist.image_size) == ((0.1307,), (0.3081,), (32, 32))


# --- digits -----------------------------------------------------------------------------------


def test_digits_fixed_stratified_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train_idx, test_idx = digits_split_indices(bunch.target)
    assert (len(train_idx), len(test_idx)) == (1437, 360)
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))
    # stratified: each class's share of the test split is 20% of its count, rounded
    assert np.bincount(bunch.target[test_idx]).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    # the same split on every machine (a fixed seed; a change in sklearn would show here)
    assert test_idx[:12].tolist() == [21, 24, 28, 34, 35, 37, 39, 42, 45, 51, 57, 77]
    # the stored split is scikit-learn's stratified split with the fixed seed
    from sklearn.model_selection import train_test_split

    _, sklearn_test = train_test_split(
        np.arange(1797), test_size=0.2, random_state=0, stratify=bunch.target
    )
    assert test_idx.tolist() == sorted(sklearn_test.tolist())
    # the pixels read from scikit-learn's data file are its loader's
    images, labels = load_digits_arrays()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)

    xtr, ytr = create_dataset("digits", "train").tensors
    xte, yte = create_dataset("digits", "test").tensors
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert (xtr.dtype, ytr.dtype) == (torch.float32, torch.int64)
    expected = torch.from_numpy(bunch.images[test_idx] / 16.0).float().unsqueeze(1)
    assert torch.equal(xte, expected)
    assert yte.tolist() == bunch.target[test_idx].tolist()
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    assert xtr.min().item() == 0.0 and xtr.max().item() == 1.0


def test_digits_info_matches_recomputed_statistics():
    xtr, _ = create_dataset("digits", "train").tensors
    info = get_dataset_info("digits")
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (8, 8))
    assert (info.train_size, info.test_size) == (1437, 360)
    assert info.classes == tuple("0123456789")
    assert info.mean[0] == pytest.approx(xtr.mean().item(), abs=1e-3)
    assert info.std[0] == pytest.approx(xtr.std().item(), abs=1e-3)


def test_digits_resized_bilinear_without_antialiasing():
    small = create_dataset("digits", "test").tensors[0]
    for side in (28, 32, 4):
        x, y = create_dataset("digits", "test", image_size=side).tensors
        assert x.shape == (360, 1, side, side) and len(y) == 360
        ref = F.interpolate(small, size=(side, side), mode="bilinear", antialias=False)
        assert torch.equal(x, ref.clamp(0, 1))
        assert x.min().item() >= 0.0 and x.max().item() <= 1.0
    assert torch.equal(create_dataset("digits", "test", image_size=8).tensors[0], small)
    assert get_dataset_info("digits", image_size=28).image_size == (28, 28)


# --- MNIST idx files --------------------------------------------------------------------------


def _write_idx(path, array, type_byte=0x08, gz=False):
    header = bytes([0, 0, type_byte, array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _mnist_files(folder, prefix, images, labels, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)


@pytest.mark.parametrize(("gz", "raw_dir"), [(False, False), (True, True), (True, False)])
def test_mnist_reads_idx_files_exactly(tmp_path, gz, raw_dir):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    folder = tmp_path / "MNIST" / "raw" if raw_dir else tmp_path
    _mnist_files(folder, "t10k", imgs, labels, gz)
    x, y = create_dataset("mnist", "test", root=tmp_path).tensors
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal((x * 255).round().to(torch.uint8).squeeze(1), torch.from_numpy(imgs))
    assert y.tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*download: true"):
        create_dataset("mnist", "train", root=tmp_path)


def test_mnist_missing_root_and_bad_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/t10k-images-idx3-ubyte.*download: true"):
        create_dataset("mnist", "test", root=tmp_path / "nowhere")
    imgs = np.zeros((3, 4, 4), dtype=np.uint8)
    _mnist_files(tmp_path, "t10k", imgs, np.array([1, 2], dtype=np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: expected 3 byte labels"):
        create_dataset("mnist", "test", root=tmp_path)
    _mnist_files(tmp_path, "t10k", imgs, np.array([1, 2, 10], dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 is not a digit"):
        create_dataset("mnist", "test", root=tmp_path)


def test_mnist_download_fetches_only_missing_files(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        labels = np.array([7, 2], dtype=np.uint8)
        _mnist_files(tmp_path / "MNIST" / "raw", "train", np.ones((2, 28, 28), np.uint8), labels)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    x, y = create_dataset("mnist", "train", root=tmp_path, download=True).tensors
    assert calls == [(str(tmp_path), True, True)] and y.tolist() == [7, 2]
    assert x.sum().item() == pytest.approx(2 * 28 * 28 / 255)
    create_dataset("mnist", "train", root=tmp_path, download=True)
    assert len(calls) == 1  # present: not fetched again


def test_read_idx_types_and_validation(tmp_path):
    ints = np.array([[1, -2, 70000], [0, 5, -70000]], dtype=np.int32)
    _write_idx(tmp_path / "ints", ints, type_byte=0x0C)
    got = read_idx(tmp_path / "ints")
    assert got.shape == (2, 3) and got.tolist() == ints.tolist()

    truncated = tmp_path / "truncated"
    truncated.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 2, 2) + b"\x00" * 5)
    with pytest.raises(ValueError, match=r"truncated: truncated idx file \(21 bytes, expected 24"):
        read_idx(truncated)
    padded = tmp_path / "padded"
    padded.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00" * 3)
    with pytest.raises(ValueError, match="padded: padded idx file"):
        read_idx(padded)
    short_header = tmp_path / "short_header"
    short_header.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="short_header: truncated idx header"):
        read_idx(short_header)
    magic = tmp_path / "magic"
    magic.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match=r"magic: not an idx file \(bad magic number 0x504b0304"):
        read_idx(magic)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 9))[:-6])
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(broken_gz)


# --- CIFAR-10 ---------------------------------------------------------------------------------


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def _write_cifar_bin(path, data, labels):
    records = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
    path.write_bytes(records.tobytes())


def _as_images(data):
    return torch.from_numpy(data.reshape(-1, 3, 32, 32))


def test_cifar10_binary_train_and_test(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    batches = [_cifar_arrays(2, seed) for seed in range(6)]
    for i, (data, labels) in enumerate(batches[:5], start=1):
        _write_cifar_bin(folder / f"data_batch_{i}.bin", data, labels)
    _write_cifar_bin(folder / "test_batch.bin", *batches[5])
    x, y = create_dataset("cifar10", "train", root=tmp_path).tensors
    assert x.shape == (10, 3, 32, 32) and (x.dtype, y.dtype) == (torch.float32, torch.int64)
    all_data = np.concatenate([b[0] for b in batches[:5]])
    assert torch.equal((x * 255).round().to(torch.uint8), _as_images(all_data))
    assert y.tolist() == np.concatenate([b[1] for b in batches[:5]]).tolist()
    # channel-major: byte 1024 of a record is the first green pixel
    assert x[0, 1, 0, 0].item() == pytest.approx(batches[0][0][0, 1024] / 255)
    xt, yt = create_dataset("cifar10", "test", root=tmp_path, image_size=16).tensors
    assert xt.shape == (2, 3, 16, 16) and yt.tolist() == batches[5][1].tolist()

    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.bin not found.*download: true"):
        create_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin \(or .*download: true"):
        create_dataset("cifar10", root=tmp_path / "empty")


def test_cifar10_binary_validation(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 3074)
    with pytest.raises(ValueError, match="bad.bin: 3074 bytes is not a whole number of 3073-byte"):
        read_cifar_binary(bad)
    data, _ = _cifar_arrays(1, 0)
    _write_cifar_bin(bad, data, np.array([12]))
    with pytest.raises(ValueError, match="bad.bin: labels must be integers 0..9"):
        read_cifar_binary(bad)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real CIFAR batches: str as BINSTRING, numpy
    globals under `numpy.core`; loaded with encoding='bytes' every string comes back as bytes."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = _save_str
    dispatch[type] = save_global


def _py2_dumps(obj):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol5"])
def test_cifar10_python_batches(tmp_path, writer):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data, labels = _cifar_arrays(3, 1)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(), b"data": data}
    if writer == "python2":
        raw = _py2_dumps({k.decode(): v for k, v in batch.items()})
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"U\x04data" in raw
    else:
        raw = pickle.dumps(batch, protocol=int(writer[-1]))
    (folder / "test_batch").write_bytes(raw)
    x, y = create_dataset("cifar10", "test", root=tmp_path).tensors
    assert y.tolist() == labels.tolist() and y.dtype == torch.int64
    assert torch.equal((x * 255).round().to(torch.uint8), _as_images(data))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_python_refuses_foreign_globals(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch \(refusing .*system"):
        create_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()
    for payload in (
        {b"data": print, b"labels": []},
        {b"data": _cifar_arrays(1, 0)[0], b"labels": [1], b"extra": _Evil(marker)},
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [1], b"cls": _Evil},
    ):
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch \(refusing"):
            read_cifar_pickle(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}))
    with pytest.raises(ValueError, match="test_batch: b'data' is not a uint8"):
        read_cifar_pickle(path)


def test_cifar10_prefers_binary_and_downloads_python(tmp_path, monkeypatch):
    import torchvision

    data, labels = _cifar_arrays(2, 3)
    calls = []

    def fake_cifar(root, train, download):
        calls.append(train)
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        batch = {"data": data, "labels": labels.tolist()}
        (folder / "test_batch").write_bytes(_py2_dumps(batch))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar)
    _, y = create_dataset("cifar10", "test", root=tmp_path, download=True).tensors
    assert calls == [False] and y.tolist() == labels.tolist()
    binary = tmp_path / "cifar-10-batches-bin"
    binary.mkdir()
    _write_cifar_bin(binary / "test_batch.bin", data, (labels + 1) % 10)
    _, y = create_dataset("cifar10", "test", root=tmp_path, download=True).tensors
    assert calls == [False] and y.tolist() == ((labels + 1) % 10).tolist()


# --- image folders ----------------------------------------------------------------------------


def _image_tree(root, splits=("train", "val"), classes=("cat", "dog")):
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255), "eel": (0, 255, 0)}
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (40, 30), colours[c]).save(d / "a.png")
            half = Image.new("RGB", (40, 30), (255, 255, 255))
            half.paste((0, 0, 0), (20, 0, 40, 30))  # right half black
            half.save(d / "b.png")


def test_imagefolder_reads_resizes_and_crops(tmp_path):
    _image_tree(tmp_path)
    ds = create_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    assert len(ds) == 4 and not hasattr(ds, "tensors")
    x, y = ds[2]  # dog/a.png
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    assert torch.equal(x, torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 16, 16))
    x, y = ds[1]  # cat/b.png: 30x40 -> 18x24 -> centre 16x16, white left, black right
    assert y == 0 and x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.equal(x[:, :, 0], torch.ones(3, 16)) and torch.equal(
        x[:, :, -1], torch.zeros(3, 16)
    )
    info = get_dataset_info("imagefolder", root=tmp_path, image_size=16)
    assert (info.num_classes, info.classes, info.image_size) == (2, ("cat", "dog"), (16, 16))
    assert create_dataset("imagefolder", "train", root=tmp_path)[0][0].shape == (3, 224, 224)


def test_imagefolder_errors(tmp_path):
    _image_tree(tmp_path, splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"val not found \(expected .*/train/<class>/"):
        create_dataset("imagefolder", "test", root=tmp_path)
    _image_tree(tmp_path, splits=("val",), classes=("cat", "eel"))
    with pytest.raises(ValueError, match="class folders differ"):
        create_dataset("imagefolder", "test", root=tmp_path)


# --- stratified subsets (data.subset) ---------------------------------------------------------


def _counted(counts):
    """A TensorDataset whose x is the example's index and whose y has `counts` per class."""
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return TensorDataset(torch.arange(len(y)).float().view(-1, 1), y)


def test_subset_sizes_round_to_exactly_n():
    assert subset_sizes([50, 30, 15, 5], 10) == [5, 3, 2, 0]  # 1.5 and 0.5 tie: earlier first
    assert subset_sizes([50, 30, 15, 5], 7) == [4, 2, 1, 0]  # remainders .5 .1 .05 .35
    assert subset_sizes([50, 30, 15, 5], 100) == [50, 30, 15, 5]
    assert subset_sizes([3, 3, 3], 1) == [1, 0, 0]


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    data = _counted([50, 30, 15, 5])
    sub = stratified_subset(data, 10, seed=3)
    x, y = sub.tensors
    assert isinstance(sub, TensorDataset) and len(sub) == 10
    assert torch.bincount(y, minlength=4).tolist() == [5, 3, 2, 0]
    index = x.flatten().long()
    assert index.tolist() == sorted(set(index.tolist()))  # distinct, in the data set's order
    assert torch.equal(data.tensors[1][index], y)  # each example keeps its own label
    again = stratified_subset(data, 10, seed=3)
    assert torch.equal(again.tensors[0], x) and torch.equal(again.tensors[1], y)
    other = stratified_subset(data, 10, seed=4)
    assert not torch.equal(other.tensors[0], x)
    assert torch.bincount(other.tensors[1], minlength=4).tolist() == [5, 3, 2, 0]


def test_stratified_subset_of_a_set_without_tensors_reads_targets():
    class Listed(Dataset):
        targets: ClassVar[list[int]] = [0, 1, 1, 1, 2, 2]

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.zeros(1), self.targets[i]

    sub = stratified_subset(Listed(), 4, seed=0)
    assert isinstance(sub, Subset) and len(sub) == 4
    # shares 4 * (1, 3, 2) / 6 = .67, 2, 1.33 -> 1, 2, 1
    assert sorted(Listed.targets[i] for i in sub.indices) == [0, 1, 1, 2]


def test_stratified_subset_of_sequence_labels_is_a_seeded_sample():
    y = torch.tensor([[2, 1, 3], [1, 4, -1], [2, 5, 6], [1, 7, -1], [2, 8, 9]])
    data = TensorDataset(torch.arange(5).float(), y)
    sub = stratified_subset(data, 3, seed=1)
    x = sub.tensors[0]
    assert len(sub) == 3 and torch.equal(sub.tensors[1], y[x.long()])
    assert torch.equal(stratified_subset(data, 3, seed=1).tensors[0], x)


def test_stratified_subset_refuses_more_than_the_data_set():
    with pytest.raises(ValueError, match="^data.subset=101: the training set has 100 examples$"):
        stratified_subset(_counted([50, 50]), 101, seed=0)
    assert DataConfig().subset is None and DataConfig(subset=12).subset == 12
    with pytest.raises(ValidationError, match="subset"):
        DataConfig(subset=0)
