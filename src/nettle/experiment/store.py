"""The run store: an embedded SQLite database of runs, their configs, status and metrics.

`runs/nettle.db` by default. Schema-versioned (a newer schema is refused with a clear error),
WAL journal with a busy timeout, short transactions and retries on "database is locked", so
several worker processes can write at once. Queries take simple filters (`key=value`,
`metric>0.9`) parsed into parameterised SQL: user text is never formatted into a statement.

Statuses: planned, running, done, failed (with a reason and the log tail), preempted.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "STATUSES", "Store", "StoreError"]

SCHEMA_VERSION = 1
STATUSES = ("planned", "running", "done", "failed", "preempted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, sweep TEXT, name TEXT, run_dir TEXT, config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'planned', reason TEXT, log_tail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, code_version TEXT, host TEXT, pid INTEGER,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value REAL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep, status);
"""

_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<)\s*(.+?)\s*$")
_COLUMNS = {"id", "sweep", "name", "status", "host", "attempts", "code_version", "reason"}


class StoreError(RuntimeError):
    """A store that cannot be used (newer schema, bad filter)."""


class Store:
    """The SQLite run store at `path` (created on first use)."""

    def __init__(self, path: str | Path = "runs/nettle.db", timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        db = self._connect()
        try:
            db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        finally:
            db.close()
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {row[0]} is newer than this nettle "
                    f"understands ({SCHEMA_VERSION}); upgrade nettle"
                )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short immediate transaction, retried while the database is locked."""
        delay = 0.01
        for attempt in range(50):
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.close()

    def add_run(
        self,
        run_id: str,
        config: dict[str, Any],
        sweep: str | None = None,
        name: str | None = None,
        run_dir: str | None = None,
    ) -> bool:
        """Record a planned run; returns False (and changes nothing) if the id exists."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (id, sweep, name, run_dir, config, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, sweep, name, run_dir, json.dumps(config, sort_keys=True), time.time()),
            )
            return cur.rowcount == 1

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        reason: str | None = None,
        log_tail: str | None = None,
        pid: int | None = None,
        code_version: str | None = None,
    ) -> None:
        """Move a run to `status`; "running" counts an attempt and stamps host and start."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise KeyError(f"no run {run_id!r} in {self.path}")
            if status == "running":
                db.execute(
                    "UPDATE runs SET status=?, attempts=attempts+1, started=?, host=?, pid=?, "
                    "reason=NULL, code_version=COALESCE(?, code_version) WHERE id=?",
                    (status, now, socket.gethostname(), pid, code_version, run_id),
                )
            else:
                finished = now if status in ("done", "failed") else None
                db.execute(
                    "UPDATE runs SET status=?, reason=?, log_tail=COALESCE(?, log_tail), "
                    "finished=COALESCE(?, finished) WHERE id=?",
                    (status, reason, log_tail, finished, run_id),
                )

    def record_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Store final metrics (numbers only), replacing earlier values of the same keys."""
        rows = [(run_id, k, float(v)) for k, v in metrics.items() if isinstance(v, (int, float))]
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?)", rows)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run with its config and metrics, or None."""
        rows = self.query(where=[f"id={run_id}"])
        return rows[0] if rows else None

    def query(
        self, sweep: str | None = None, status: str | None = None, where: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Runs matching all filters; `where` items are `column=value` or `metric>number`."""
        clauses, params = [], []
        if sweep is not None:
            clauses.append("r.sweep = ?")
            params.append(sweep)
        if status is not None:
            clauses.append("r.status = ?")
            params.append(status)
        for item in where or []:
            match = _FILTER.match(item)
            if not match:
                raise StoreError(f"filter {item!r}: expected KEY OP VALUE, e.g. test_acc>0.9")
            key, op, raw = match.groups()
            if key in _COLUMNS:
                clauses.append(f"r.{key} {op} ?")  # key is from a fixed set, op from the regex
                params.append(raw)
            else:
                try:
                    number = float(raw)
                except ValueError:
                    raise StoreError(f"filter {item!r}: metric {key!r} needs a number") from None
                clauses.append(
                    f"EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = r.id AND m.key = ? AND m.value {op} ?)"
                )
                params += [key, number]
        sql = "SELECT * FROM runs r" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        db = self._connect()
        try:
            runs = [dict(row) for row in db.execute(sql + " ORDER BY r.created, r.id", params)]
            for run in runs:
                run["config"] = json.loads(run["config"])
                run["metrics"] = {
                    k: v
                    for k, v in db.execute(
                        "SELECT key, value FROM metrics WHERE run_id=?", (run["id"],)
                    )
                }
        finally:
            db.close()
        return runs
