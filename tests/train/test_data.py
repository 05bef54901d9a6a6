import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nettle.registry import UnknownNameError
from nettle.train.data import create_dataset, get_dataset_info, list_datasets, read_idx


def test_digits_fixed_split_and_stats():
    train, test = create_dataset("digits", "train"), create_dataset("digits", "test")
    xtr, ytr = train.tensors
    xte, yte = test.tensors
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.min() >= 0 and xtr.max() <= 1
    assert set(ytr.tolist()) == set(range(10)) and set(yte.tolist()) == set(range(10))
    # disjoint and complete: every one of the 1797 images lands in exactly one split
    from sklearn.datasets import load_digits

    all_imgs = {tuple((im / 16.0).astype(np.float32).ravel()) for im in load_digits().images}
    seen_tr = [tuple(x.ravel().tolist()) for x in xtr.numpy()]
    seen_te = [tuple(x.ravel().tolist()) for x in xte.numpy()]
    assert len(seen_tr) + len(seen_te) == 1797
    assert set(seen_tr) | set(seen_te) == all_imgs
    info = get_dataset_info("digits")
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (8, 8))
    assert info.mean[0] == pytest.approx(xtr.mean().item(), abs=1e-3)
    assert info.std[0] == pytest.approx(xtr.std().item(), abs=1e-3)
    # the same split on every call
    assert torch.equal(create_dataset("digits", "test").tensors[1], yte)


def test_digits_resized():
    ds = create_dataset("digits", "test", image_size=28)
    assert ds.tensors[0].shape == (360, 1, 28, 28)
    assert get_dataset_info("digits", image_size=28).image_size == (28, 28)


def _idx(path, array, magic_type, gz=False):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _idx(raw / f"t10k-images-idx3-ubyte{suffix}", imgs, 0x08, gz)
    _idx(raw / f"t10k-labels-idx1-ubyte{suffix}", labels, 0x08, gz)
    ds = create_dataset("mnist", "test", root=str(tmp_path))
    x, y = ds.tensors
    assert x.shape == (5, 1, 28, 28)
    torch.testing.assert_close(x[2, 0], torch.from_numpy(imgs[2]).float() / 255)
    assert y.tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download: true"):
        create_dataset("mnist", "train", root=str(tmp_path))


def test_idx_validation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x00" * 5)
    with pytest.raises(ValueError, match="bad: truncated"):
        read_idx(bad)
    worse = tmp_path / "worse"
    worse.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(worse)


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    data, labels = _cifar_arrays(4, 0)
    records = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    x, y = create_dataset("cifar10", "test", root=str(tmp_path)).tensors
    assert x.shape == (4, 3, 32, 32) and y.tolist() == labels.tolist()
    torch.testing.assert_close(x[1], torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255)


def test_cifar10_python_pickles_and_refusal(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data, labels = _cifar_arrays(3, 1)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(), b"data": data}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    x, y = create_dataset("cifar10", "test", root=str(tmp_path)).tensors
    assert y.tolist() == labels.tolist()
    torch.testing.assert_close(x[2], torch.from_numpy(data[2].reshape(3, 32, 32)).float() / 255)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(
        ValueError, match="test_batch: not a CIFAR-10 batch .*refusing to load builtins.print"
    ):
        create_dataset("cifar10", "test", root=str(tmp_path))


def test_imagefolder(tmp_path):
    for split in ("train", "val"):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (40, 30), colour).save(d / "a.png")
    ds = create_dataset("imagefolder", "test", root=str(tmp_path), image_size=16)
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and y == 1
    torch.testing.assert_close(x[:, 8, 8], torch.tensor([0.0, 0.0, 1.0]))
    assert get_dataset_info("imagefolder", root=str(tmp_path)).num_classes == 2


def test_errors():
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; known: cifar10, digits"):
        create_dataset("svhn")
    with pytest.raises(ValueError, match="needs data.root"):
        create_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin"):
        create_dataset("cifar10", root="/nonexistent")
    with pytest.raises(ValueError, match="split must be"):
        create_dataset("digits", "val")
    assert list_datasets() == ["cifar10", "digits", "imagefolder", "mnist"]
