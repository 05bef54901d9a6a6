"""`nettle _job CONFIG -o RUN_DIR`: the job a sweep's executors run (hidden verb).

Trains the run, then its evaluation stages (`nettle.experiment.job.run_job`), and prints one
JSON line of the results; the driver that started it records them in the store. Exit status:
0 done, 2 bad input, 3 stopped on a non-finite loss (`nettle.errors.ExitCode`).
"""

from __future__ import annotations

import argparse
import json
import sys

from nettle.errors import ExitCode

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("_job", description=__doc__)
    p.add_argument("config", help="the run's full config (job.yaml)")
    p.add_argument("-o", "--out", required=True, help="the run dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.config import load_config
    from nettle.experiment.job import run_job
    from nettle.train.guards import NonFiniteLossError

    cfg = load_config(args.config)
    try:
        summary, stages = run_job(cfg, args.out)
    except NonFiniteLossError as exc:
        print(f"nettle _job: stopped: {exc}", file=sys.stderr)
        return ExitCode.NONFINITE
    line = {"status": summary.get("status"), "best_test_acc": summary.get("best_test_acc")}
    print(json.dumps(line | stages.metrics() | {"stages": stages.files}), flush=True)
    return ExitCode.OK
