"""Hostile data files: one line naming the file (or the set and its folder), exit 2."""

import codecs
import gzip
import pickle
import resource
import struct
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from nettle.cli import main
from nettle.errors import ExitCode
from nettle.train.data import create_dataset
from nettle.train.datasets import mnist
from nettle.train.datasets.cifar import read_cifar_pickle

_RECONSTRUCT = np.zeros(0).__reduce_ex__(2)[0]


class _Reduce:
    """Pickles as `func(*args)`, then `state` (numpy's own array layout) if given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _batch(data, labels=()):
    return pickle.dumps({b"data": data, b"labels": list(labels)}, protocol=2)


HOSTILE_PICKLES = {
    "array claiming a huge shape": _batch(
        _Reduce(
            _RECONSTRUCT,
            (np.ndarray, (0,), b"b"),
            (1, (10**9, 3072), np.dtype("u1"), False, b"\0" * 16),
        )
    ),
    "array claiming more bytes than it has": _batch(
        _Reduce(
            _RECONSTRUCT,
            (np.ndarray, (0,), b"b"),
            (1, (10**6, 3072), np.dtype("u1"), False, b"\0" * 16),
        )
    ),
    "ndarray called directly": _batch(_Reduce(np.ndarray, ((10**5, 10**5), "u1"))),
    "huge bytearray": _batch(_Reduce(bytearray, (10**12,))),
    "reduce that raises": _batch(_Reduce(int, ("not a number",))),
    "codec lookup": _batch(_Reduce(codecs.encode, ("x", "rot13"))),
    "array of objects": _batch(np.array([1, "a"], dtype=object)),
    "memo index of 2**27": b"\x80\x02K\x01r" + struct.pack("<I", 2**27) + b".",
    "out-of-band buffer": b"\x80\x05\x97.",
    "nested a million deep": b"\x80\x02" + b"]" * 10**6 + b".",
}
REASONS = {
    "array claiming a huge shape": "refusing an array of shape (1000000000, 3072)",
    "array claiming more bytes than it has": "needs 3072000000 bytes, the file gives 16",
    "ndarray called directly": "refusing to call numpy.ndarray",
    "huge bytearray": "refusing bytearray(1000000000000)",
    "codec lookup": "refusing _codecs.encode(..., 'rot13')",
    "array of objects": "refusing dtype object",
    "memo index of 2**27": "no b'data' and b'labels' entries",
}


def test_cifar_pickles_that_raise_or_claim_memory_are_refused(tmp_path):
    start, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for kind, raw in HOSTILE_PICKLES.items():
        path = tmp_path / "data_batch_1"
        path.write_bytes(raw)
        with pytest.raises(ValueError) as info:
            read_cifar_pickle(path)
        message = str(info.value)
        assert message.startswith(f"{path}: "), kind
        assert "\n" not in message, kind
        assert REASONS.get(kind, "not a CIFAR-10 batch") in message, (kind, message)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak  # KiB on Linux
    assert grown < 100 * 1024
    assert time.perf_counter() - start < 10


def _snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")
    }


def _refused(argv, capsys, folder):
    """Run the CLI; assert exit 2, one line on stderr, no traceback, `folder` unchanged."""
    before = _snapshot(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nettle {argv[0]}: error: "), err
    assert _snapshot(folder) == before
    return lines[0]


def _lr_find(tmp_path, data, model=None):
    config = tmp_path / "c.yaml"
    tree = {
        "model": model or {"name": "simple-cnn", "kwargs": {"width": 4}},
        "data": data,
        "train": {"device": "cpu", "tensorboard": False},
    }
    config.write_text(yaml.safe_dump(tree))
    return ["lr-find", str(config), "--iters", "3"]


def test_lr_find_on_a_hostile_cifar_batch_names_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(HOSTILE_PICKLES["huge bytearray"])
    argv = _lr_find(tmp_path, {"name": "cifar10", "root": str(tmp_path), "batch_size": 2})
    line = _refused(argv, capsys, tmp_path)
    assert line == (
        f"nettle lr-find: error: {folder / 'data_batch_1'}: not a CIFAR-10 batch "
        "(refusing bytearray(1000000000000))"
    )


def test_cifar_batches_without_images_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(_batch(np.zeros((0, 3072), np.uint8)))
    argv = _lr_find(tmp_path, {"name": "cifar10", "root": str(tmp_path), "batch_size": 2})
    assert _refused(argv, capsys, tmp_path) == (
        f"nettle lr-find: error: cifar10: the train batches in {folder} hold no images"
    )


def _png(path, size=(12, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


def _image_root(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(2):
                _png(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not an image", "not an image format PIL knows"),
        (None, "image file is truncated"),
    ],
)
def test_a_corrupt_image_in_a_folder_names_the_file(tmp_path, capsys, monkeypatch, content, reason):
    monkeypatch.chdir(tmp_path)
    root = _image_root(tmp_path)
    bad = root / "train" / "dog" / "bad.png"
    if content is None:
        _png(bad, (64, 64))
        content = bad.read_bytes()[:80]
    bad.write_bytes(content)
    data = {"name": "imagefolder", "root": str(root), "image_size": 8, "batch_size": 2}
    line = _refused(_lr_find(tmp_path, data), capsys, tmp_path)
    assert line.startswith(f"nettle lr-find: error: {bad}: unreadable image ({reason}")
    assert line.endswith("; remove or replace the file")


def test_image_folders_without_classes_or_images_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "images"
    (root / "train").mkdir(parents=True)
    data = {"name": "imagefolder", "root": str(root), "image_size": 8, "batch_size": 2}
    argv = _lr_find(tmp_path, data)
    assert _refused(argv, capsys, tmp_path) == (
        f"nettle lr-find: error: imagefolder: {root / 'train'} has no class folders "
        f"(expected {root / 'train'}/<class>/*.jpg|png)"
    )
    (root / "train" / "cat").mkdir()
    (root / "train" / "cat" / "notes.txt").write_text("no images here")
    line = _refused(argv, capsys, tmp_path)
    assert line.startswith(
        f"nettle lr-find: error: imagefolder: {root / 'train'}: Found no valid file for the "
        "classes cat."
    )


def _idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.tobytes())


def test_mnist_files_without_images_or_with_a_bad_header(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "mnist"
    root.mkdir()
    _idx(root / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    _idx(root / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    data = {"name": "mnist", "root": str(root), "batch_size": 2}
    argv = _lr_find(tmp_path, data)
    assert _refused(argv, capsys, tmp_path) == (
        f"nettle lr-find: error: mnist: the train files in {root} hold no images"
    )
    (root / "train-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert _refused(argv, capsys, tmp_path) == (
        f"nettle lr-find: error: {root / 'train-images-idx3-ubyte'}: not an idx file "
        "(bad magic number 0x89504e47)"
    )


def test_a_gzip_bomb_is_cut_off(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", 10_000)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * 1_000_000))
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz: decompresses to more than 10,000 bytes"):
        mnist.read_idx(path)
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"abc")[:-12])
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz: broken gzip stream"):
        mnist.read_idx(path)


def test_good_image_folders_still_load(tmp_path):
    root = _image_root(tmp_path)
    data = create_dataset("imagefolder", "train", root, image_size=8)
    x, y = data[0]
    assert tuple(x.shape) == (3, 8, 8) and y == 0 and len(data) == 4
