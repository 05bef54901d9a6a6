"""Checkpoints: written atomically, read with `weights_only=True`.

A trainer checkpoint (`checkpoints/last.pt`, `checkpoints/best.pt`) is a dict of tensors and
plain Python values only, so that `torch.load(weights_only=True)` reads it:

    {"format": 1,
     "model": model.state_dict(), "optimizer": ..., "scheduler": ...,
     "scaler": the fp16 gradient scaler's state ({} for fp32 and bf16; `precision.py`),
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor] (when CUDA is available),
             "numpy": {"kind", "keys": int64 tensor, "pos", "has_gauss", "cached"},
             "python": [version, [internal state], gauss],
             "augment": ByteTensor | None (the augmentation generator)},
     "state": {"epoch": completed epochs, "step": optimiser steps so far,
               "batch": batches done in the current epoch (the sampler position),
               "best_acc": best test accuracy, "running": this epoch's running sums},
     "phase_totals": {phase: seconds}, "history": [epoch records],
     "objective": objective.extra_state() or {}, "config": the resolved config dict,
     "rng_ranks": [each rank's "rng"] (distributed runs only; rank r resumes from entry r)}

Other files in `checkpoints/`: `nonfinite-step<N>.pt` (model, optimizer, the offending batch
`{"x", "y"}`, `step`, the loss or gradient norm, config) and `snapshot-step<N>.pt` (model, step,
lr, config) at the LR schedule's minima.

`save_checkpoint` writes to a temporary file in the same folder, flushes and fsyncs it, then
renames it over the target (and fsyncs the folder), so a kill at any moment leaves either the
old or the new file. `load_checkpoint` turns any file it cannot read (truncated, text, another
zip, a pickle that would run code) into a one-line `CheckpointError` naming it.
"""

from __future__ import annotations

import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nettle.files import atomic_open

__all__ = ["CheckpointError", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]

FORMAT = 1
_EXPECTED = "a torch.save file of a dict of tensors and plain values with a 'model' entry"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file."""


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Atomically write `obj` to `path`, creating its folder (`nettle.files.atomic_open`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; unreadable files raise `CheckpointError`.

    Whatever the file holds (one byte, text, a zip of something else, a pickle that would run
    code), the error is one line naming the file, why it cannot be read and what is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickles it did not write
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a broken or hostile file makes torch raise almost anything
        raise _unreadable(path, exc) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"{path}: not a nettle checkpoint (no model state); expected {_EXPECTED}"
        )
    model = obj["model"].items()
    if not all(isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in model):
        raise CheckpointError(
            f"{path}: its model state holds values that are not tensors; expected {_EXPECTED}"
        )
    return obj


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """One line saying why `torch.load` failed on `path`, found by looking at the file."""
    with path.open("rb") as f:
        head = f.read(512)
    message = str(exc)
    found_global = re.search(r"GLOBAL ([\w.]+)", message)
    found_opcode = re.search(r"Unsupported operand (\d+)", message)
    if found_global:
        reason = f"loading it would call {found_global[1]}; nettle never runs code from a file"
    elif not head:
        reason = "truncated or corrupt: the file is empty"
    elif head.startswith(b"PK"):
        has_pickle = _has_pickle(path) if zipfile.is_zipfile(path) else None
        if has_pickle is None:
            reason = "truncated or corrupt: a damaged zip archive"
        elif not has_pickle:
            reason = "a zip archive without data.pkl, so not written by torch.save"
        else:
            first = next((s for s in message.splitlines() if s.strip()), type(exc).__name__)
            reason = "torch cannot read it" + ("" if "weights_only" in first else f": {first}")
    elif head[:1] == b"\x80" and found_opcode:
        reason = f"a plain pickle, not a torch.save file (pickle opcode {found_opcode[1]})"
    elif head[:1] == b"\x80":
        reason = "truncated or corrupt: a pickle that ends early or is damaged"
    elif _is_text(head):
        reason = "a text file, not a checkpoint"
    else:
        reason = f"not a checkpoint: it starts with 0x{head[:8].hex()}"
    return CheckpointError(f"{path}: unreadable checkpoint ({reason}); expected {_EXPECTED}")


def _has_pickle(path: Path) -> bool | None:
    """Whether the zip archive at `path` holds a data.pkl; None if its directory is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):  # e.g. a name that is not UTF-8
        return None


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else "\0"
    return "\0" not in text and all(c.isprintable() or c in "\t\r\n" for c in text)


def capture_rng(augment: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a training step can touch, as checkpointable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": _python_state(),
        "augment": augment.get_state() if augment is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_rng(state: dict[str, Any], augment: torch.Generator | None = None) -> None:
    """Restore what `capture_rng` captured."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if augment is not None and state.get("augment") is not None:
        augment.set_state(
            state["augment"].cpu() if augment.device.type == "cpu" else state["augment"]
        )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
