"""Reports from the run store: records from store rows and run dirs, then `write_report`.

`report_from_store(store, out_dir, sweep=..., where=[...])` picks runs with the store's filters
(`Store.query`), turns every finished one into a report record (config, final metrics:
parameters, multiply-adds, test accuracy, robust accuracies when the job recorded them; the
learning curves from its run dir's `metrics.jsonl`), lists the others with their status and
reason, and writes `report.html` and `report.md` (see `nettle.experiment.report`). Next to them
it writes, for every sweep in the report, a sweep file `sweep-<name>.yaml` that plans exactly
the same runs (the same ids), so that the entry's commands reproduce it.

Example:
    >>> files = report_from_store("runs/nettle.db", "reports/lr", sweep="digits-lr")  # doctest: +SKIP
    >>> files.html  # doctest: +SKIP
    PosixPath('reports/lr/report.html')
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nettle.experiment.job import parse_robustness_metrics
from nettle.experiment.report import ReportFiles, Section, write_report
from nettle.experiment.store import STATUSES, Store

__all__ = ["NoRunsError", "records_from_rows", "report_from_store", "sweep_spec"]


class NoRunsError(ValueError):
    """The store holds no run that matches the report's sweep and filters."""


def _history(run_dir: Path | None) -> list[dict[str, Any]]:
    path = None if run_dir is None else run_dir / "metrics.jsonl"
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut off by a killed job
            continue
        if isinstance(row, dict) and row.get("kind") == "epoch":
            rows.append(row)
    return rows


def _json(path: Path | None) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Config names when they tell the runs apart, else the store's names (their overrides)."""
    names = [str(r["config"].get("name") or r["name"] or r["id"]) for r in rows]
    if len(set(names)) == len(names):
        return names
    return [str(r["name"] or r["id"]) for r in rows]


def records_from_rows(
    rows: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Report records of the done runs, and (name, status, reason) of the others."""
    done, unfinished = [], []
    for row, name in zip(rows, _names(rows)):
        if row["status"] != "done":
            unfinished.append({"name": name, "status": row["status"], "reason": row["reason"]})
            continue
        metrics, cfg = row["metrics"], row["config"]
        run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
        summary = _json(run_dir / "summary.json" if run_dir else None)
        attacked = _json(run_dir / "robustness.json" if run_dir else None)
        done.append(
            {
                "name": name,
                "id": row["id"],
                "sweep": row["sweep"],
                "conv": (cfg.get("model") or {}).get("conv") or "Conv",
                "params": metrics.get("params"),
                "macs": metrics.get("macs"),
                "macs_executed": metrics.get("macs_executed"),
                "test_acc": metrics.get("best_test_acc", metrics.get("test_acc")),
                "robustness": parse_robustness_metrics(metrics),
                "warnings": list(attacked.get("warnings") or []),
                "history": _history(run_dir),
                "phases": summary.get("phases") or {},
                "run_dir": None if run_dir is None else str(run_dir),
                "config": cfg,
            }
        )
    return done, unfinished


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def sweep_spec(name: str, configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A sweep mapping whose runs have exactly `configs` (resolved configs): the values all
    share go into `base`, the others into one `list` entry per run."""
    flats = [_flatten(c) for c in configs]
    keys = sorted({k for f in flats for k in f})
    common = {k: flats[0][k] for k in keys if all(k in f and f[k] == flats[0][k] for f in flats)}
    spec: dict[str, Any] = {"name": name, "base": _nest(common)}
    if len(flats) > 1:
        spec["list"] = [{k: v for k, v in f.items() if k not in common} for f in flats]
    return spec


def _runs(n: int) -> str:
    return f"{n} run" + "s" * (n != 1)


def _about(store: Store, rows: Sequence[dict[str, Any]], sweep, where) -> list[str]:
    sweeps = Counter(r["sweep"] or "(no sweep)" for r in rows)
    statuses = Counter(r["status"] for r in rows)
    versions = sorted({r["code_version"] for r in rows if r.get("code_version")})
    chosen = " and ".join([f"sweep {sweep}"] * bool(sweep) + list(where)) or "every run"
    return [
        f"Store {store.path}, {chosen}: {_runs(len(rows))}.",
        "Sweeps: " + ", ".join(f"{s} ({_runs(n)})" for s, n in sweeps.items()) + ".",
        "Statuses: " + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses[s]) + ".",
        "Code version: " + (", ".join(versions) or "not recorded") + ".",
    ]


def _sweep_root(rows: Sequence[dict[str, Any]], sweep: str) -> str | None:
    for r in rows:
        run_dir = Path(r["run_dir"]) if r.get("run_dir") else None
        if r["sweep"] == sweep and run_dir is not None and run_dir.parent.name == sweep:
            return str(run_dir.parent.parent)
    return None


def report_from_store(
    store: Store | str | Path,
    out_dir: str | Path,
    sweep: str | None = None,
    where: Sequence[str] = (),
    *,
    title: str | None = None,
    commands: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    sections: Sequence[Section] = (),
) -> ReportFiles:
    """Write the report of the runs of `sweep` (default: all) matching `where` into `out_dir`.

    Args:
        store: a `Store` or the path of one (which must exist).
        out_dir: where `report.html`, `report.md`, the plots and the sweep files go.
        sweep: only the runs of this sweep.
        where: `Store.query` filters, e.g. `["test_acc>0.9", "train.seed=0"]`.
        title: of the page (default "nettle report: <sweep>").
        commands: the entry's commands to reproduce it (default: `nettle sweep run` of each
            written sweep file, then this `nettle report`).
        notes: remarks under the date; masking warnings of the runs are added.
        sections: extra sections (`Section`) after the plots.

    Returns:
        Where the files are, and the report's records.

    Raises:
        FileNotFoundError: no store at the path.
        NoRunsError: no run matches (the message names the sweep and the filters).
    """
    if not isinstance(store, Store):
        if not Path(store).is_file():
            raise FileNotFoundError(f"{store}: no run store")
        store = Store(store)
    rows = store.query(sweep=sweep, where=list(where))
    if not rows:
        wanted = [f"sweep {sweep!r}"] * bool(sweep) + [f"--where {w}" for w in where]
        known = sorted({r["sweep"] or "" for r in store.query()} - {""})
        raise NoRunsError(
            f"no run in {store.path} matches {' and '.join(wanted) or 'anything'}"
            f" (sweeps in the store: {', '.join(known) or 'none'})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done, unfinished = records_from_rows(rows)
    written = []
    for name in dict.fromkeys(r["sweep"] for r in rows if r["sweep"]):
        spec = sweep_spec(name, [r["config"] for r in rows if r["sweep"] == name])
        path = out / f"sweep-{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        written.append((path, _sweep_root(rows, name)))
    if commands is None:
        commands = [
            f"nettle sweep run {shlex.quote(str(p))}"
            + (f" --root {shlex.quote(root)}" if root else "")
            for p, root in written
        ]
        args = [shlex.quote(sweep)] * bool(sweep) + [f"--where {shlex.quote(w)}" for w in where]
        args += [f"--store {shlex.quote(str(store.path))}", f"-o {shlex.quote(str(out))}"]
        commands.append(" ".join(["nettle report", *args]))
    notes = list(notes) + [
        f"masking warning for {r['name']}: {w}" for r in done for w in r["warnings"]
    ]
    return write_report(
        done,
        out,
        title=title or f"nettle report: {sweep or 'all runs'}",
        commands=commands,
        notes=notes,
        about=_about(store, rows, sweep, where),
        unfinished=unfinished,
        sections=sections,
    )
