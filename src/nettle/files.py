"""Files that nettle writes: one atomic write for every result, config and page.

`atomic_write(path, data)` writes to a unique temporary file beside `path`, flushes and
fsyncs it, renames it over `path` and fsyncs the folder, so a reader (or a rerun after a
kill) sees either the old file or the whole new one, never a half-written file. JSON goes
through `write_json`, which refuses non-finite numbers (NaN is not JSON) before anything is
written.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "result.json"
    >>> write_json(p, {"acc": 0.5})
    >>> p.read_text()
    '{\\n  "acc": 0.5\\n}'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json"]


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


def atomic_write(path: str | Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; returns `path`.

    The parent folder must exist. On any error the temporary file is removed and `path` is
    left as it was.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON atomically; non-finite floats raise `ValueError` before any write."""
    text = json.dumps(data, indent=indent, allow_nan=False)
    return atomic_write(path, text)
