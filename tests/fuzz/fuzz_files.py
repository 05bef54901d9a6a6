"""Small writers of valid and hostile files for the fuzz cases (configs, checkpoints, data)."""

from __future__ import annotations

import copy
import gzip
import io
import os
import pickle
import sqlite3
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from fuzz_harness import TINY_CONFIG, Case, Fixtures, Make

__all__ = [
    "ALIAS_BOMB",
    "RunsCode",
    "cifar_binary",
    "cifar_pickle",
    "config_tree",
    "idx_file",
    "merged",
    "mnist_folder",
    "png_bytes",
    "write",
]

ALIAS_BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + "".join(
        f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi")
    )
    + "model: {name: simple-cnn}\n"
)
"""Nine levels of nine aliases: 400 bytes that stand for 9**9 strings."""


class RunsCode:
    """Pickles to a call of `os.system`: loading it must be refused, never run."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo owned > owned.txt",))


def write(path: Path | str, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path`, making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def config_tree() -> dict[str, Any]:
    """The tiny valid config as a tree (a fresh copy)."""
    return copy.deepcopy(yaml.safe_load(TINY_CONFIG))


def merged(tree: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`tree` with `changes` merged into it, dotted keys as nested sections."""
    out = copy.deepcopy(tree)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def idx_file(
    array: np.ndarray, type_byte: int = 0x08, dims: tuple[int, ...] | None = None
) -> bytes:
    """An idx file of `array` (big-endian), with a header that may lie about its dims."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def mnist_folder(
    root: Path, n: int = 20, images: bytes | None = None, labels: bytes | None = None
) -> Path:
    """The four MNIST idx files of `n` random digits under `root`, or the given bytes."""
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write(root / f"{prefix}-images-idx3-ubyte", images if images is not None else idx_file(x))
        write(root / f"{prefix}-labels-idx1-ubyte", labels if labels is not None else idx_file(y))
    return root


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def cifar_binary(n: int = 4, label: int | None = None) -> bytes:
    """`n` records of the CIFAR-10 binary version (label byte, then 3,072 pixels)."""
    rng = np.random.default_rng(0)
    labels = np.full(n, label, dtype=np.uint8) if label is not None else np.arange(n) % 10
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1).tobytes()


def cifar_pickle(batch: Any, protocol: int = 2) -> bytes:
    return pickle.dumps(batch, protocol=protocol)


def png_bytes(width: int = 8, height: int = 8) -> bytes:
    """A valid RGB PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    import zlib

    data = png_bytes()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return data[:8] + struct.pack(">I", len(ihdr)) + chunk + crc + data[33:]


def other_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")
    return buf.getvalue()


# --- cases: writers of a work folder ---------------------------------------------------------

RUN = "runs/tiny/run"
CKPT = f"{RUN}/checkpoints/best.pt"
LAST = f"{RUN}/checkpoints/last.pt"
TRAIN = ["train", "c.yaml", "-o", "out"]
C = {"c.yaml": TINY_CONFIG}
CUDA = torch.cuda.is_available()

Files = dict[str, Any]  # relative path -> text, bytes, or a function (work, fixtures) -> either


def make(argv: list[str], files: Files | None = None, runs: bool = False) -> Make:
    """A case's writer: copy the fixture runs (`runs`), write `files`, return `argv`."""

    def build(work: Path, fx: Fixtures) -> list[str]:
        if runs:
            fx.copy_runs(work)
        for rel, data in (files or {}).items():
            if callable(data):
                data = data(work, fx)
            if data is not None:
                write(work / rel, data)
        return list(argv)

    return build


def cfg(changes: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> str:
    """The tiny config as YAML text with dotted `changes` (and top-level sections dropped)."""
    tree = merged(config_tree(), changes or {})
    for key in drop:
        tree.pop(key, None)
    return yaml.safe_dump(tree, sort_keys=False)


def data_config(name: str, root: str = "d", **more: Any) -> str:
    return cfg({"data.name": name, "data.root": root, "data.batch_size": 4, **more})


def case(group: str, name: str, argv: list[str], *names: str, **kw: Any) -> Case:
    files, runs = kw.pop("files", None), kw.pop("runs", False)
    return Case(group, name, make(argv, files, runs), names=names, **kw)


# --- checkpoints and run dirs -----------------------------------------------------------------


def fixture_bytes(rel: str) -> Callable[[Path, Fixtures], bytes]:
    return lambda work, fx: (fx.root / rel).read_bytes()


def truncated(rel: str, keep: float) -> Callable[[Path, Fixtures], bytes]:
    def data(work: Path, fx: Fixtures) -> bytes:
        raw = (fx.root / rel).read_bytes()
        return raw[: int(len(raw) * keep)]

    return data


def other_model_checkpoint(work: Path, fx: Fixtures) -> bytes:
    """A checkpoint of simple-cnn width 8 (the run's model has width 4), with its config."""
    from nettle.config import load_config_dict
    from nettle.models.build import build_model
    from nettle.train.checkpoint import save_checkpoint

    tree = yaml.safe_load((fx.run_dir / "config.yaml").read_text())
    tree["model"]["kwargs"] = {"width": 8}
    model = build_model(load_config_dict(tree))
    path = work / "other.tmp"
    save_checkpoint({"model": model.state_dict(), "config": tree}, path)
    raw = path.read_bytes()
    path.unlink()
    return raw


def torch_pickle_with_code(work: Path, fx: Fixtures) -> bytes:
    import io
    import pickle

    buf = io.BytesIO()
    torch.save({"model": {}, "payload": RunsCode()}, buf, pickle_module=pickle)
    return buf.getvalue()


def zip_name_not_utf8(work: Path, fx: Fixtures) -> bytes:
    """The fixture checkpoint with a byte of a file name in its zip directory made invalid."""
    raw = bytearray((fx.root / CKPT).read_bytes())
    raw[raw.rfind(b"data.pkl")] = 0x90
    return bytes(raw)


def run_with(best: Any, last: Any = None) -> Files:
    """The run's two checkpoints replaced (None: the file is removed)."""
    return {CKPT: best, LAST: last if last is not None else best}


def remove(*rels: str) -> Callable[[Path, Fixtures], None]:
    def data(work: Path, fx: Fixtures) -> None:
        for rel in rels:
            (work / rel).unlink()

    return data


def store_of_another_app(work: Path, fx: Fixtures) -> bytes:
    path = work / "other.tmp"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (title TEXT, year INTEGER)")
        db.execute("INSERT INTO runs VALUES ('marathon', 2024)")
    db.close()
    raw = path.read_bytes()
    path.unlink()
    return raw


def state_only(work: Path, fx: Fixtures) -> bytes:
    """A checkpoint of a bare state dict (no config to rebuild a model from)."""
    from nettle.train.checkpoint import save_checkpoint

    save_checkpoint({"model": {"w": torch.zeros(2)}}, work / "w.tmp")
    raw = (work / "w.tmp").read_bytes()
    (work / "w.tmp").unlink()
    return raw
