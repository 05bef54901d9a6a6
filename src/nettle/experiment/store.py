"""The run store: an embedded SQLite database of runs, their configs, status and metrics.

`runs/nettle.db` by default. Schema-versioned (older schemas are migrated, a newer one is
refused with a clear error), WAL journal with a busy timeout, one short `BEGIN IMMEDIATE`
transaction per write, retried while the database is locked, so several processes can write
at once. Queries take simple filters (`status=done`, `train.optim.lr=0.1`, `test_acc>0.9`)
parsed into parameterised SQL: user text is never formatted into a statement.

Statuses: planned, running, done, failed (with a reason and the log tail), preempted, pruned
(stopped early by a search's pruner, with the reason).

Example:
    >>> store = Store("runs/nettle.db")  # doctest: +SKIP
    >>> store.query(sweep="digits-lr", where=["test_acc>0.9"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SCHEMA_VERSION", "STATUSES", "Store", "StoreError"]

SCHEMA_VERSION = 3
STATUSES = ("planned", "running", "done", "failed", "preempted", "pruned")

_TABLES = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, sweep TEXT, name TEXT, run_dir TEXT, config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'planned', reason TEXT, log_tail TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, code_version TEXT, host TEXT, pid INTEGER,
        created REAL NOT NULL, started REAL, finished REAL, pgid INTEGER, owner TEXT)""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value REAL,
        PRIMARY KEY (run_id, key))""",
    "CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep, status)",
    # a run belongs to every sweep that planned it (the same training is one run)
    """CREATE TABLE IF NOT EXISTS sweep_runs (
        sweep TEXT NOT NULL, run_id TEXT NOT NULL REFERENCES runs(id), name TEXT,
        PRIMARY KEY (sweep, run_id))""",
    # robust accuracy per attack, options (JSON), epsilon and number of attacked examples
    """CREATE TABLE IF NOT EXISTS robustness (
        run_id TEXT NOT NULL REFERENCES runs(id), attack TEXT NOT NULL, options TEXT NOT NULL,
        eps REAL NOT NULL, examples INTEGER NOT NULL, accuracy REAL NOT NULL, clean_acc REAL,
        warnings TEXT, stage TEXT, recorded REAL NOT NULL,
        PRIMARY KEY (run_id, attack, options, eps, examples))""",
]
# statements that bring schema version N up to N + 1
_MIGRATIONS = {
    1: ["ALTER TABLE runs ADD COLUMN pgid INTEGER", "ALTER TABLE runs ADD COLUMN owner TEXT"],
    2: [
        "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, name) "
        "SELECT sweep, id, name FROM runs WHERE sweep IS NOT NULL"
    ],
}

_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_COLUMNS = {"id", "sweep", "name", "status", "host", "attempts", "code_version", "reason"}
_ATTEMPTS = 60
T = TypeVar("T")


class StoreError(RuntimeError):
    """A store that cannot be used (newer schema, bad filter, conflicting run)."""


def _literal(raw: str) -> Any:
    """A filter value: a number, true/false (1/0), null (None) or a string."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    low = raw.lower()
    if low in ("true", "false"):
        return int(low == "true")
    if low in ("null", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _compare(expr: str, op: str, value: Any) -> str:
    """`expr op ?`, or IS [NOT] NULL for a null value (no parameter then)."""
    if value is None:
        if op not in ("=", "!="):
            raise StoreError(f"null can only be compared with = or !=, not {op}")
        return f"{expr} IS {'NOT ' if op == '!=' else ''}NULL"
    return f"{expr} {op} ?"


class Store:
    """The SQLite run store at `path` (created, or migrated, on first use)."""

    def __init__(
        self, path: str | Path = "runs/nettle.db", timeout: float = 30.0, create: bool = True
    ) -> None:
        """Open (`create`: or create) the store at `path`.

        Raises:
            StoreError: no store at `path` (with `create=False`), a path that is a folder, or a
                file that is not a nettle store (the message names it; nothing is changed).
        """
        self.path = Path(path)
        self.timeout = timeout
        if self.path.is_dir():
            raise StoreError(f"{self.path}: a folder, not a run store (give the nettle.db file)")
        if not self.path.is_file():
            if not create:
                raise StoreError(f"{self.path}: no run store there (runs record into it first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._check_existing()
        try:
            self._write(self._init_schema)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable run store ({exc}); left as is") from None

    def _check_existing(self) -> None:
        """Refuse, without writing a byte (no journal, no WAL files), a file that is not a
        nettle store: not SQLite, empty, or the database of another program."""
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            what = "an empty file" if not head else "not an SQLite database"
            raise StoreError(f"{self.path}: not a run store ({what}); left as is")
        uri = f"file:{self.path.resolve()}?mode=ro&immutable=1"
        try:
            db = sqlite3.connect(uri, uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
                version = None
                if "meta" in tables:
                    row = db.execute("SELECT value FROM meta WHERE key='schema_version'")
                    version = row.fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable run store ({exc}); left as is") from None
        if "runs" not in tables or version is None:
            raise StoreError(
                f"{self.path}: an SQLite database of another program (no nettle runs table); "
                "left as is: give another --store"
            )

    # --- plumbing ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode; commits skip the fsync
        db.row_factory = sqlite3.Row
        return db

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one immediate transaction, retried whole while the db is locked."""
        delay = 0.01
        for attempt in range(_ATTEMPTS):
            db = None
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                out = fn(db)
                db.execute("COMMIT")
                return out
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            finally:
                if db is not None:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    db.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _init_schema(self, db: sqlite3.Connection) -> None:
        for statement in _TABLES:
            db.execute(statement)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this nettle "
                f"understands ({SCHEMA_VERSION}); upgrade nettle"
            )
        for v in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[v]:
                db.execute(statement)
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @staticmethod
    def _require(db: sqlite3.Connection, run_id: str, path: Path) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {path}")
        return row

    # --- writes -----------------------------------------------------------------------

    def add_runs(self, runs: Iterable[Mapping[str, Any]]) -> int:
        """Record planned runs (`id`, `config`, optional `sweep`, `name`, `run_dir`).

        An existing id keeps its row and run dir (never overwritten) and is added to the
        sweep: the id is the config's identity (`nettle.config.config_hash`), so the same
        training planned by two sweeps is one run, listed in both. Returns how many were new.
        """
        rows = [
            (
                r["id"],
                r.get("sweep"),
                r.get("name"),
                None if r.get("run_dir") is None else str(r["run_dir"]),
                json.dumps(r["config"], sort_keys=True),
            )
            for r in runs
        ]

        def add(db: sqlite3.Connection) -> int:
            added, now = 0, time.time()
            for run_id, sweep, name, run_dir, config in rows:
                if sweep is not None:
                    db.execute(
                        "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, name) VALUES (?, ?, ?)",
                        (sweep, run_id, name),
                    )
                have = db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone()
                if have is not None:
                    continue
                db.execute(
                    "INSERT INTO runs (id, sweep, name, run_dir, config, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, sweep, name, run_dir, config, now),
                )
                added += 1
            return added

        return self._write(add)

    def add_run(
        self,
        run_id: str,
        config: dict[str, Any],
        sweep: str | None = None,
        name: str | None = None,
        run_dir: str | None = None,
    ) -> bool:
        """Record one planned run; False (and nothing changed) if the id exists."""
        run = {"id": run_id, "config": config, "sweep": sweep, "name": name, "run_dir": run_dir}
        return self.add_runs([run]) == 1

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        reason: str | None = None,
        log_tail: str | None = None,
        pid: int | None = None,
        pgid: int | None = None,
        code_version: str | None = None,
    ) -> None:
        """Move a run to `status`; "running" counts an attempt and stamps host and start."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        now = time.time()

        def update(db: sqlite3.Connection) -> None:
            self._require(db, run_id, self.path)
            if status == "running":
                db.execute(
                    "UPDATE runs SET status=?, attempts=attempts+1, started=?, host=?, pid=?, "
                    "pgid=?, reason=NULL, finished=NULL, "
                    "code_version=COALESCE(?, code_version) WHERE id=?",
                    (status, now, socket.gethostname(), pid, pgid, code_version, run_id),
                )
                return
            finished = now if status in ("done", "failed", "pruned") else None
            db.execute(
                "UPDATE runs SET status=?, reason=?, log_tail=COALESCE(?, log_tail), "
                "finished=COALESCE(?, finished) WHERE id=?",
                (status, reason, log_tail, finished, run_id),
            )

        self._write(update)

    def claim(self, run_id: str, owner: str, code_version: str | None = None) -> bool:
        """Atomically mark a run that is not running or done as running for `owner`.

        Counts an attempt. Returns False (and changes nothing) if the run is running or done.
        """
        now, host = time.time(), socket.gethostname()

        def update(db: sqlite3.Connection) -> bool:
            self._require(db, run_id, self.path)
            cur = db.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, started=?, host=?, "
                "owner=?, pid=NULL, pgid=NULL, reason=NULL, finished=NULL, "
                "code_version=COALESCE(?, code_version) "
                "WHERE id=? AND status NOT IN ('running', 'done')",
                (now, host, owner, code_version, run_id),
            )
            return cur.rowcount == 1

        return self._write(update)

    def set_process(self, run_id: str, pid: int, pgid: int) -> None:
        """Record the process (and process group) of a running run."""
        self._write(
            lambda db: db.execute("UPDATE runs SET pid=?, pgid=? WHERE id=?", (pid, pgid, run_id))
        )

    def record_failure(self, run_id: str, reason: str, log_tail: str | None = None) -> None:
        """Mark a run failed with a one-line `reason` and the tail of its log."""
        self.set_status(run_id, "failed", reason=reason, log_tail=log_tail)

    def record_metrics(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Store final metrics (numbers only, not booleans), replacing earlier values."""
        rows = [
            (run_id, k, float(v))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        self._write(
            lambda db: db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?)", rows)
        )

    def record_robustness(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Store robust accuracies, keyed by attack, options, epsilon and examples attacked.

        Each row: `attack`, `options` (a mapping), `eps`, `accuracy`, `examples`, optional
        `clean_acc`, `warnings` (strings) and `stage` (the stage file). A key recorded again
        is replaced; other keys (other epsilons, options or limits) stay beside it.
        """
        now = time.time()
        values = [
            (
                run_id,
                str(r["attack"]),
                json.dumps(dict(r.get("options") or {}), sort_keys=True),
                float(r["eps"]),
                int(r["examples"]),
                float(r["accuracy"]),
                None if r.get("clean_acc") is None else float(r["clean_acc"]),
                json.dumps(list(r.get("warnings") or [])),
                r.get("stage"),
                now,
            )
            for r in rows
        ]
        self._write(
            lambda db: db.executemany(
                "INSERT OR REPLACE INTO robustness VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values
            )
        )

    # --- reads ------------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        """One run with its config and metrics, or None."""
        rows = self.query(where=[f"id={run_id}"])
        return rows[0] if rows else None

    def query(
        self, sweep: str | None = None, status: str | None = None, where: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Runs matching all filters, oldest first.

        Each `where` item is `KEY OP VALUE` with OP one of = != < <= > >=. KEY is a run
        column (id, sweep, name, status, host, attempts, code_version, reason), a dotted
        config key (`train.optim.lr`), or else a metric name (`test_acc`).

        Raises:
            StoreError: a filter that does not parse.
            ValueError: an unknown status.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        clauses, params = [], []
        if sweep is not None:
            clauses.append("r.id IN (SELECT run_id FROM sweep_runs WHERE sweep = ?)")
            params.append(sweep)
        if status is not None:
            clauses.append("r.status = ?")
            params.append(status)
        for item in where or []:
            clause, values = self._filter(item)
            clauses.append(clause)
            params += values
        sql = "SELECT * FROM runs r" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        for value in params:
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise StoreError(f"filter value {value} is out of range (a 64-bit integer)")
        db = self._connect()
        try:
            runs = [dict(row) for row in db.execute(sql + " ORDER BY r.created, r.id", params)]
            for run in runs:
                self._attach(db, run, sweep)
        finally:
            db.close()
        return runs

    @staticmethod
    def _attach(db: sqlite3.Connection, run: dict[str, Any], sweep: str | None) -> None:
        """Add a run's config, metrics, sweeps and robust accuracies to its row."""
        run["config"] = json.loads(run["config"])
        rows = db.execute("SELECT key, value FROM metrics WHERE run_id=?", (run["id"],))
        run["metrics"] = dict(rows.fetchall())
        member = db.execute(
            "SELECT sweep, name FROM sweep_runs WHERE run_id=? ORDER BY sweep", (run["id"],)
        ).fetchall()
        run["sweeps"] = [m[0] for m in member]
        if sweep is not None:  # the name the run has in the sweep asked for
            run["name"] = next((m[1] for m in member if m[0] == sweep), run["name"])
        robust = db.execute(
            "SELECT attack, options, eps, examples, accuracy, clean_acc, warnings, stage "
            "FROM robustness WHERE run_id=? ORDER BY attack, options, examples, eps",
            (run["id"],),
        ).fetchall()
        run["robustness"] = [
            dict(r) | {"options": json.loads(r["options"]), "warnings": json.loads(r["warnings"])}
            for r in robust
        ]
        run["robustness_warnings"] = sorted({w for r in run["robustness"] for w in r["warnings"]})

    @staticmethod
    def _filter(item: str) -> tuple[str, list[Any]]:
        """One filter as an SQL clause with `?` placeholders and its parameters."""
        match = _FILTER.match(item)
        if not match or not match.group(3):
            raise StoreError(f"filter {item!r}: expected KEY OP VALUE, e.g. test_acc>0.9")
        key, op, raw = match.groups()
        if "" in key.split("."):
            raise StoreError(f"filter {item!r}: {key!r} has an empty part; e.g. train.seed=1")
        value = _literal(raw)
        if key == "sweep":  # a run belongs to every sweep that planned it
            return f"r.id IN (SELECT run_id FROM sweep_runs WHERE sweep {op} ?)", [raw]
        if key in _COLUMNS:  # the key is from a fixed set and op from the regex
            value = raw if key in ("id", "name") else value
            clause = _compare(f"r.{key}", op, value)
            return clause, [] if value is None else [value]
        if "." in key:
            clause = _compare("json_extract(r.config, ?)", op, value)
            return clause, [f"$.{key}"] + ([] if value is None else [value])
        if not isinstance(value, (int, float)):
            raise StoreError(f"filter {item!r}: metric {key!r} needs a number")
        return (
            f"EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = r.id AND m.key = ? "
            f"AND m.value {op} ?)",
            [key, value],
        )

    def to_dataframe(
        self, sweep: str | None = None, status: str | None = None, where: list[str] | None = None
    ) -> Any:
        """The runs of `query(sweep, status, where)` as a pandas DataFrame, one row per run.

        Columns: id, sweep, name, status, code_version; the config flattened to dotted keys
        (`train.optim.lr`; a key that is also a run column or a metric gets a `config.` prefix,
        e.g. `config.name`); then every metric of any run, sorted (NaN where a run has none).

        Raises:
            ImportError: pandas is not installed.
        """
        try:
            import pandas as pd  # optional: only this method needs it
        except ImportError:
            raise ImportError("Store.to_dataframe needs pandas: pip install pandas") from None
        fixed = ("id", "sweep", "name", "status", "code_version")
        runs = self.query(sweep, status, where)
        metric_keys = sorted({k for run in runs for k in run["metrics"]})
        taken = {*fixed, *metric_keys}

        def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in tree.items():
                if isinstance(value, dict) and value:
                    out |= flat(value, f"{prefix}{key}.")
                else:
                    column = f"{prefix}{key}"
                    out[f"config.{column}" if column in taken else column] = value
            return out

        records, config_keys = [], {}
        for run in runs:
            config = flat(run["config"])
            config_keys |= dict.fromkeys(config)
            fixed_values = {k: (sweep or run[k]) if k == "sweep" else run[k] for k in fixed}
            records.append(fixed_values | config | run["metrics"])
        return pd.DataFrame(records, columns=[*fixed, *config_keys, *metric_keys])
