"""`nettle _preflight RUNS.json`: one training step of each run of a sweep (hidden verb).

Started by `nettle.experiment.preflight.run_preflight` in one pinned subprocess. `RUNS.json`
is a list of `{"id", "config"}` items; each run's result (`preflight_config`: ok, error, oom,
seconds, peak memory) is printed as one JSON line as soon as it is known. A run that fails is
reported on its line and the others still run; exit status 0, or 2 for an unreadable file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nettle.errors import ExitCode

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("_preflight", description=__doc__)
    p.add_argument("runs", help='a JSON list of {"id", "config"} items')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.experiment.preflight import preflight_runs

    items = json.loads(Path(args.runs).read_text())
    if not isinstance(items, list):
        raise ValueError(f'{args.runs}: expected a JSON list of {{"id", "config"}} items')
    for result in preflight_runs(items):
        print(json.dumps(result), flush=True)
    return ExitCode.OK
