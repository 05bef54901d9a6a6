"""Reports from the run store: records from store rows and run dirs, then `write_report`.

`report_from_store(store, out_dir, sweep=..., where=[...])` picks runs with the store's filters
(`Store.query`), turns every finished one into a report record (config, final metrics:
parameters, multiply-adds, test accuracy, robust accuracies when the job recorded them; the
learning curves from its run dir's `metrics.jsonl`), lists the others with their status and
reason, and writes `report.html` and `report.md` (see `nettle.experiment.report`). Next to them
it writes, for every sweep in the report, a sweep file `sweep-<name>.yaml` that plans exactly
the same runs (the same ids), so that the entry's commands reproduce it. A sweep that is a
search adds a section of its study (`nettle.experiment.search_report`): the Pareto front and the
infeasible trials, also marked on the trade-off plots.

Example:
    >>> files = report_from_store("runs/nettle.db", "reports/lr", sweep="digits-lr")  # doctest: +SKIP
    >>> files.html  # doctest: +SKIP
    PosixPath('reports/lr/report.html')
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from nettle.experiment.report import (
    REPORT_FILES,
    ReferencePoint,
    ReportFiles,
    Section,
    substitute_family,
    training_mode,
    write_report,
)
from nettle.experiment.report_ablation import ablation_section
from nettle.experiment.report_ablation import flatten_config as _flatten
from nettle.experiment.search_report import search_sections
from nettle.experiment.store import STATUSES, Store
from nettle.files import OutputFolder, claim_outputs

__all__ = [
    "NoRunsError",
    "attack_label",
    "records_from_rows",
    "report_from_store",
    "robustness_curves",
    "sweep_spec",
]


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


def attack_label(attack: str, options: Mapping[str, Any] | None = None) -> str:
    """The attack's name, with its options sorted by key when it has any: `pgd(steps=10)`."""
    if not options:
        return attack
    text = (
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(options.items())
    )
    return f"{attack}({','.join(text)})"


def robustness_curves(entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[float, float]]:
    """`{attack label: {eps: accuracy}}` of a run's robust accuracies (store rows with
    `attack`, `options`, `eps`, `accuracy`, `examples`), labels and epsilons in order; of an
    epsilon attacked on several numbers of examples, the largest number counts."""
    curves: dict[str, dict[float, float]] = {}
    for e in sorted(entries, key=lambda e: e.get("examples") or 0):
        label = attack_label(str(e["attack"]), e.get("options"))
        curves.setdefault(label, {})[float(e["eps"])] = float(e["accuracy"])
    return {a: dict(sorted(c.items())) for a, c in sorted(curves.items())}


def records_from_rows(
    rows: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Report records of the done runs, and (name, status, reason) of the others.

    A record has the run's `name`, `id`, `sweep`, `conv` (its substitute spec), `family` (the
    spec without its setting), `mode` (plain, distilled, adversarial or bayes), the final
    metrics (`params`, `macs`, `macs_executed`, `test_acc`, `test_top5`), `robustness`
    (`robustness_curves` of `row["robustness"]`), `warnings` (of the robustness evaluation),
    `history` (the epochs of its `metrics.jsonl`), `phases`, `run_dir` and `config`.
    """
    done, unfinished = [], []
    for row, name in zip(rows, _names(rows)):
        if row["status"] != "done":
            unfinished.append({"name": name, "status": row["status"], "reason": row["reason"]})
            continue
        metrics, cfg = row.get("metrics") or {}, row["config"]
        conv = (cfg.get("model") or {}).get("conv")
        run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
        summary = _json(run_dir / "summary.json" if run_dir else None)
        done.append(
            {
                "name": name,
                "id": row["id"],
                "sweep": row["sweep"],
                "conv": conv or "Conv",
                "family": substitute_family(conv),
                "mode": training_mode(cfg),
                "params": metrics.get("params"),
                "macs": metrics.get("macs"),
                "macs_executed": metrics.get("macs_executed"),
                "test_acc": metrics.get("best_test_acc", metrics.get("test_acc")),
                "test_top5": metrics.get("test_top5"),
                "robustness": robustness_curves(row.get("robustness") or []),
                "warnings": [str(w) for w in row.get("robustness_warnings") or []],
                "history": _history(run_dir),
                "phases": summary.get("phases") or {},
                "run_dir": None if run_dir is None else str(run_dir),
                "config": cfg,
            }
        )
    return done, unfinished


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
    references: Sequence[ReferencePoint] = (),
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
        references: published results drawn on the trade-off plots.

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
    names = [sweep] if sweep else list(dict.fromkeys(r["sweep"] for r in rows if r["sweep"]))
    specs = {
        f"sweep-{name}.yaml": sweep_spec(
            name, [r["config"] for r in rows if name in (r.get("sweeps") or [r["sweep"]])]
        )
        for name in names
    }
    OutputFolder(out).check([*specs, *REPORT_FILES])  # every name, before any write
    done, unfinished = records_from_rows(rows)
    sections = [*search_sections(store.path, names, done), *sections]  # marks front, infeasible
    written = []
    folder = claim_outputs(out, specs)
    for (file, spec), name in zip(specs.items(), names):
        path = folder.write(file, yaml.safe_dump(spec, sort_keys=False))
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
        sections=[s for s in (ablation_section(done), *sections) if s is not None],
        references=references,
    )
