"""Hand-listed hostile data sets: MNIST idx files, CIFAR-10 binary and python batches, image
folders; each given to `nettle train` through `data.root`."""

from __future__ import annotations

from typing import Any

import numpy as np
from fuzz_files import (
    TRAIN,
    RunsCode,
    case,
    cfg,
    cifar_binary,
    cifar_pickle,
    data_config,
    gzipped,
    idx_file,
    png_bytes,
    png_claiming,
)
from fuzz_harness import Case

__all__ = ["dataset_cases"]


IMAGES, LABELS = "d/train-images-idx3-ubyte", "d/train-labels-idx1-ubyte"


def _mnist_files(**replace: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    files: dict[str, Any] = {"c.yaml": data_config("mnist")}
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
        files[f"d/{prefix}-images-idx3-ubyte"] = idx_file(x)
        files[f"d/{prefix}-labels-idx1-ubyte"] = idx_file((np.arange(20) % 10).astype(np.uint8))
    return files | replace


def _mnist() -> list[Case]:
    x = np.zeros((20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    return [
        case(
            "mnist",
            "root missing",
            TRAIN,
            "nowhere",
            files={"c.yaml": data_config("mnist", root="nowhere")},
        ),
        case(
            "mnist",
            "no data.root",
            TRAIN,
            "data.root",
            files={"c.yaml": cfg({"data.name": "mnist"})},
        ),
        case(
            "mnist",
            "images of random bytes",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: bytes(range(256))},
        ),
        case(
            "mnist",
            "images truncated",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: idx_file(x)[:-100]},
        ),
        case(
            "mnist",
            "header claiming 2**32 images",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: idx_file(x, dims=(2**32 - 1, 28, 28))},
        ),
        case(
            "mnist",
            "images as floats",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: idx_file(x.astype(">f4"), type_byte=0x0D)},
        ),
        case(
            "mnist",
            "images of height 0",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: idx_file(np.zeros((20, 0, 28), np.uint8))},
        ),
        case(
            "mnist",
            "no images",
            TRAIN,
            "no images|train-images",
            files=_mnist_files()
            | {
                IMAGES: idx_file(np.zeros((0, 28, 28), np.uint8)),
                LABELS: idx_file(np.zeros(0, np.uint8)),
            },
        ),
        case(
            "mnist",
            "fewer labels",
            TRAIN,
            "train-labels",
            files=_mnist_files() | {LABELS: idx_file(labels[:5])},
        ),
        case(
            "mnist",
            "label 12",
            TRAIN,
            "train-labels",
            files=_mnist_files() | {LABELS: idx_file(labels + 3)},
        ),
        case(
            "mnist",
            "labels of two dimensions",
            TRAIN,
            "train-labels",
            files=_mnist_files() | {LABELS: idx_file(labels.reshape(4, 5))},
        ),
        case(
            "mnist",
            "gzip garbage",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: None, IMAGES + ".gz": b"\x1f\x8b" + bytes(100)},
        ),
        case(
            "mnist",
            "gzip cut short",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: None, IMAGES + ".gz": gzipped(idx_file(x))[:-30]},
        ),
        case(
            "mnist",
            "a folder named like the images",
            TRAIN,
            "train-images",
            files=_mnist_files() | {IMAGES: None, IMAGES + "/x": "x"},
        ),
        case(
            "mnist",
            "num_classes below the labels",
            TRAIN,
            "num_classes",
            files=_mnist_files() | {"c.yaml": data_config("mnist", **{"model.num_classes": 5})},
        ),
    ]


def _cifar_files(kind: str, batch: Any = None, **replace: Any) -> dict[str, Any]:
    files: dict[str, Any] = {"c.yaml": data_config("cifar10")}
    if kind == "bin":
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            files[f"d/cifar-10-batches-bin/{n}.bin"] = cifar_binary()
    else:
        rng = np.random.default_rng(0)
        good = {
            b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
            b"labels": [0, 1, 2, 3],
        }
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            files[f"d/cifar-10-batches-py/{n}"] = cifar_pickle(good)
    return files | replace


B1, P1 = "d/cifar-10-batches-bin/data_batch_1.bin", "d/cifar-10-batches-py/data_batch_1"


class _HugeArray:
    """Pickles as numpy's array rebuild with a state claiming 10**9 x 3072 bytes (has 10)."""

    def __reduce__(self) -> Any:
        rebuild, args, _ = np.zeros(1, np.uint8).__reduce__()
        return rebuild, args, (1, (10**9, 3072), np.dtype(np.uint8), False, bytes(10))


def _cifar() -> list[Case]:
    def binary(name: str, data: Any, *names: str) -> Case:
        return case(
            "cifar10", f"binary: {name}", TRAIN, *names, files=_cifar_files("bin") | {B1: data}
        )

    def pickled(name: str, data: Any, *names: str) -> Case:
        return case(
            "cifar10", f"python: {name}", TRAIN, *names, files=_cifar_files("py") | {P1: data}
        )

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    return [
        case(
            "cifar10",
            "root empty",
            TRAIN,
            "cifar-10-batches",
            files={"c.yaml": data_config("cifar10"), "d/x": "x"},
        ),
        binary("a batch missing", None, "data_batch_1.bin"),
        case(
            "cifar10",
            "binary: a folder for a batch",
            TRAIN,
            "data_batch_1.bin",
            files=_cifar_files("bin") | {B1: None, B1 + "/x": "x"},
        ),
        binary("empty", b"", "data_batch_1.bin"),
        binary("not whole records", b"\x01" * 3072, "data_batch_1.bin"),
        binary("label 11", cifar_binary(label=11), "data_batch_1.bin"),
        binary("text", "label,pixels\n", "data_batch_1.bin"),
        pickled("random bytes", bytes(range(256)), "data_batch_1"),
        pickled("empty", b"", "data_batch_1"),
        pickled("calling os.system", cifar_pickle(RunsCode()), "data_batch_1"),
        pickled("a list", cifar_pickle([1, 2, 3]), "data_batch_1"),
        pickled("no labels", cifar_pickle({b"data": pixels}), "data_batch_1"),
        pickled(
            "pixels of a wrong shape",
            cifar_pickle({b"data": pixels[:, :100], b"labels": [0] * 4}),
            "data_batch_1",
        ),
        pickled("label 42", cifar_pickle({b"data": pixels, b"labels": [42] * 4}), "data_batch_1"),
        pickled("fewer labels", cifar_pickle({b"data": pixels, b"labels": [1]}), "data_batch_1"),
        pickled(
            "labels of text", cifar_pickle({b"data": pixels, b"labels": ["a"] * 4}), "data_batch_1"
        ),
        pickled(
            "an array claiming a terabyte",
            cifar_pickle({b"data": _HugeArray(), b"labels": []}),
            "data_batch_1",
        ),
        pickled("protocol 5 of a set", cifar_pickle({1, 2}, protocol=5), "data_batch_1"),
    ]


def _folder_files(**replace: Any) -> dict[str, Any]:
    files: dict[str, Any] = {"c.yaml": data_config("imagefolder", **{"data.image_size": 8})}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(2):
                files[f"d/{split}/{cls}/{i}.png"] = png_bytes()
    return files | {k.replace("__", "/"): v for k, v in replace.items()}


def _imagefolder() -> list[Case]:
    def folder(name: str, files: dict[str, Any], *names: str, **kw: Any) -> Case:
        return case("imagefolder", name, TRAIN, *names, files=_folder_files() | files, **kw)

    bad = "d/train/cat/0.png"
    return [
        case(
            "imagefolder",
            "no train folder",
            TRAIN,
            "d/train",
            files={"c.yaml": data_config("imagefolder"), "d/x": "x"},
        ),
        case(
            "imagefolder",
            "train without class folders",
            TRAIN,
            "d/train",
            files={
                "c.yaml": data_config("imagefolder"),
                "d/train/x.png": png_bytes(),
                "d/val/cat/0.png": png_bytes(),
            },
        ),
        folder(
            "a class folder without images", {"d/train/bird/readme.txt": "none"}, "bird|d/train"
        ),
        folder("random bytes as an image", {bad: bytes(range(256))}, "0.png"),
        folder("an empty image", {bad: b""}, "0.png"),
        folder("text named .png", {bad: "hello"}, "0.png"),
        folder("half a PNG", {bad: png_bytes(64, 64)[:60]}, "0.png"),
        folder("a PNG claiming 10**10 pixels", {bad: png_claiming(100_000, 100_000)}, "0.png"),
        folder("val classes differ", {"d/val/bird/0.png": png_bytes()}, "d/val"),
        folder(
            "num_classes below the classes",
            {
                "c.yaml": data_config(
                    "imagefolder", **{"data.image_size": 8, "model.num_classes": 1}
                )
            },
            "num_classes",
        ),
    ]


def dataset_cases() -> list[Case]:
    """Every listed case of the data sets."""
    return [*_mnist(), *_cifar(), *_imagefolder()]
