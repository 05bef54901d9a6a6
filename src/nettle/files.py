"""Files that nettle writes: one atomic write for every result, config and page.

`atomic_write(path, data)` writes to a unique temporary file beside `path`, flushes and
fsyncs it, renames it over `path` and fsyncs the folder (`atomic_open` does the same for a
file object that `torch.save` can stream into), so a reader (or a rerun after a kill) sees
either the old file or the whole new one, never a half-written file. JSON goes
through `write_json`, which refuses non-finite numbers (NaN is not JSON) before anything is
written. An `OutputFolder` (`claim_outputs`) records in `DIR/.nettle-outputs.json` which
files nettle wrote there and refuses to replace any other file.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "result.json"
    >>> _ = write_json(p, {"acc": 0.5})
    >>> p.read_text()
    '{\\n  "acc": 0.5\\n}'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OUTPUTS_MANIFEST",
    "OutputFolder",
    "atomic_open",
    "atomic_write",
    "claim_outputs",
    "file_sha256",
    "write_json",
]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", permissions: int = 0o644) -> Iterator[IO[Any]]:
    """Open a unique temporary file beside `path` that replaces `path` when the block ends.

    On leaving the block the file is flushed, fsynced, given `permissions` and renamed over
    `path`, and the folder is fsynced; if the block raises, the temporary file is removed and
    `path` is left as it was. The parent folder must exist.

    Args:
        path: the file to write.
        mode: "wb" (bytes) or "w" (text, UTF-8).
        permissions: the file's permission bits.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "weights.bin"
        >>> with atomic_open(p) as f:
        ...     _ = f.write(b"\\x00\\x01")
        >>> p.read_bytes()
        b'\\x00\\x01'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; returns `path`.

    The parent folder must exist. On any error the temporary file is removed and `path` is
    left as it was (`atomic_open`). `mode` is the file's permission bits.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, "wb", mode) as f:
        f.write(raw)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON atomically; non-finite floats raise `ValueError` before any write."""
    text = json.dumps(data, indent=indent, allow_nan=False)
    return atomic_write(path, text)


OUTPUTS_MANIFEST = ".nettle-outputs.json"
"""The file in an output folder that lists what nettle wrote there (name -> sha256)."""

_AGAIN = "choose another output folder (-o)"


class OutputFolder:
    """A folder of results in which nettle replaces only the files it wrote itself.

    `DIR/.nettle-outputs.json` maps each name nettle wrote in `DIR` to the sha256 of what it
    wrote. `claim(names)` checks every name before anything is written: a file that exists but
    is not listed (an `index.html` someone put there) or that changed since nettle wrote it is
    refused with one line naming it, and so are a folder that is a file or cannot be written.
    Claimed names are recorded at once, so a write cut short is still nettle's to replace.

    Example:
        >>> import tempfile, pathlib
        >>> out = claim_outputs(pathlib.Path(tempfile.mkdtemp()) / "pages", ["index.html"])
        >>> out.write("index.html", "<p>hello</p>").name
        'index.html'
        >>> claim_outputs(out.folder, ["index.html"]).folder == out.folder  # nettle's: fine
        True
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = self.folder / OUTPUTS_MANIFEST
        self._claimed: set[str] = set()

    def owned(self) -> dict[str, str | None]:
        """The recorded outputs: name -> sha256 of what nettle wrote (None: not written yet)."""
        if not self.manifest.is_file():
            return {}
        try:
            files = json.loads(self.manifest.read_text(encoding="utf-8"))["files"]
            if not all(isinstance(k, str) and isinstance(v, str | None) for k, v in files.items()):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            raise ValueError(
                f"{self.manifest}: not nettle's list of its outputs; remove it or {_AGAIN}"
            ) from None
        return files

    def check(self, names: Iterable[str]) -> None:
        """Raise `ValueError` (one line) unless every name can be written; changes nothing."""
        names = list(names)
        bad = next((n for n in names if not n or Path(n).name != n or n == OUTPUTS_MANIFEST), None)
        if bad is not None:
            raise ValueError(f"{bad!r} is not a plain file name for {self.folder}")
        existing = self.folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{existing}: is a file, not a folder; {_AGAIN}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{existing}: cannot write there (read-only); {_AGAIN}")
        if existing != self.folder:
            return  # the folder will be new: nothing in it to protect
        owned = self.owned()
        foreign = [n for n in names if not self._is_ours(n, owned)]
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise ValueError(
                f"{self.folder / foreign[0]}: exists and was not written by nettle{more}; "
                f"move it away or {_AGAIN}"
            )

    def _is_ours(self, name: str, owned: dict[str, str | None]) -> bool:
        path = self.folder / name
        if not os.path.lexists(path):
            return True
        if name not in owned or path.is_dir() or path.is_symlink():
            return False
        return owned[name] is None or owned[name] == file_sha256(path)

    def claim(self, names: Iterable[str]) -> OutputFolder:
        """`check` the names, create the folder and record the names as nettle's; returns self."""
        names = list(names)
        self.check(names)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"{self.folder}: cannot be created ({exc.strerror}); {_AGAIN}"
            ) from None
        owned = self.owned()
        for name in names:
            path = self.folder / name
            owned[name] = file_sha256(path) if path.is_file() else None
        self._record(owned)
        self._claimed.update(names)
        return self

    def path(self, name: str) -> Path:
        """The path of a claimed name (an unclaimed name is a bug: `KeyError`)."""
        if name not in self._claimed:
            raise KeyError(f"{name!r} was not claimed in {self.folder}")
        return self.folder / name

    def write(self, name: str, data: str | bytes) -> Path:
        """Write a claimed file atomically and record what was written."""
        path = atomic_write(self.path(name), data)
        self.record(name)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        """`write` of JSON; non-finite numbers raise `ValueError` before any write."""
        return self.write(name, json.dumps(data, indent=2, allow_nan=False))

    def record(self, name: str) -> None:
        """Record the digest of a claimed file written by other means (e.g. `savefig`)."""
        owned = self.owned()
        owned[name] = file_sha256(self.path(name))
        self._record(owned)

    def _record(self, owned: dict[str, str | None]) -> None:
        write_json(self.manifest, {"written_by": "nettle", "files": dict(sorted(owned.items()))})


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in blocks: the identity of a checkpoint, a
    weights file or an output nettle wrote."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def claim_outputs(folder: str | Path, names: Iterable[str]) -> OutputFolder:
    """`OutputFolder(folder).claim(names)`: check every name, then create and record them."""
    return OutputFolder(folder).claim(names)
