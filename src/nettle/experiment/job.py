"""A sweep job that trains a run, then counts and attacks it, all inside the run dir.

    python -m nettle.experiment.job CONFIG RUN_DIR [--attacks JSON] [--eps 0.05,0.1]
                                    [--limit N] [--seed S]

`job_command(...)` builds this argv for `run_sweep(..., command=...)`. The stages, each
resumable, so that a rerun continues where a job stopped:

1. `stages.json` = `{"status": "running"}`, written before training: a job cut off after
   training is then not taken for finished (`nettle.experiment.worker.read_summary`);
2. training (`run_experiment`: resumes from the checkpoint, returns at once when done);
3. `evaluate_run`: cost (`measure.count` for one test example) and robust accuracy per attack
   and epsilon (`attack.evaluate_robustness`, with its masking checks) of the best
   checkpoint, written to `robustness.json` (the format of `nettle attack`);
4. `stages.json` = `{"status": "done", "metrics": {...}}`: `macs`, `macs_executed` and
   `robust_acc_<attack>_eps<e>` (`robustness_metrics`), which the scheduler records in the
   store with the final training metrics.

Exit status as `nettle train`: 0 done, 2 bad input, 3 stopped on a non-finite loss.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "evaluate_run",
    "job_command",
    "main",
    "parse_robustness_metrics",
    "robustness_metrics",
]

_KEY = re.compile(r"^robust_acc_(?P<attack>.+)_eps(?P<eps>[0-9p]+(?:e[mp][0-9]+)?)$")


def _token(eps: float) -> str:
    """An epsilon as a metric-name token without dots: 0.05 -> 0p05, 1e-05 -> 1em05."""
    return f"{float(eps):g}".replace(".", "p").replace("e-", "em").replace("e+", "ep")


def robustness_metrics(accuracy: Mapping[str, Mapping[Any, float]]) -> dict[str, float]:
    """Flat store metrics `robust_acc_<attack>_eps<e>` of curves `{attack: {eps: acc}}`.

    Metric names take no dots (a dotted filter key is a config key), so 0.1 reads `0p1`.
    """
    return {
        f"robust_acc_{attack}_eps{_token(float(eps))}": float(acc)
        for attack, curve in accuracy.items()
        for eps, acc in curve.items()
    }


def parse_robustness_metrics(metrics: Mapping[str, float]) -> dict[str, dict[float, float]]:
    """The curves `{attack: {eps: acc}}` back from store metrics (other keys are ignored)."""
    curves: dict[str, dict[float, float]] = {}
    for key, value in metrics.items():
        match = _KEY.match(key)
        if match:
            token = match["eps"].replace("em", "e-").replace("ep", "e+").replace("p", ".")
            curves.setdefault(match["attack"], {})[float(token)] = float(value)
    return {a: dict(sorted(c.items())) for a, c in sorted(curves.items())}


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def evaluate_run(
    run_dir: str | Path,
    attacks: Mapping[str, Mapping[str, Any]],
    eps: Sequence[float],
    *,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Count and attack the best checkpoint of a trained run; write `robustness.json`.

    Args:
        run_dir: a finished run dir (`config.yaml`, `checkpoints/`).
        attacks: attack name -> options without `eps` (e.g. `{"pgd": {"steps": 10}}`).
        eps: the epsilons (input units, [0, 1] pixels).
        limit: attack only the first N test examples (default: all).
        seed: seed of the random attacks.

    Returns:
        The store metrics: `macs`, `macs_executed`, `robust_acc_<attack>_eps<e>`,
        `robust_clean_acc` (accuracy on the attacked examples) and `masking_warnings`.
    """
    import torch
    import yaml

    from nettle.attack import evaluate_robustness
    from nettle.experiment.run import load_run_model
    from nettle.measure import count
    from nettle.train.data import create_dataset

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    d = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    test = create_dataset(d["name"], "test", d.get("root"), d.get("image_size"))
    x, y = test.tensors if hasattr(test, "tensors") else map(torch.stack, zip(*test))
    cost = count(model, tuple(x.shape[1:]))
    if limit:
        x, y = x[:limit], y[:limit]
    options = {name: dict(opts) for name, opts in attacks.items()}
    result = evaluate_robustness(model, (x, y), options, list(eps), seed=seed)
    _atomic_json(run_dir / "robustness.json", result.to_dict())
    return {
        "macs": cost.macs,
        "macs_executed": cost.macs_executed,
        "robust_clean_acc": result.clean_accuracy,
        "masking_warnings": len(result.warnings),
        **robustness_metrics(result.accuracy),
    }


def job_command(
    attacks: Mapping[str, Mapping[str, Any]],
    eps: Sequence[float],
    *,
    limit: int | None = None,
    seed: int = 0,
) -> Callable[[Path, Path], list[str]]:
    """A `run_sweep` command: `(config, run_dir) -> argv` of this module's job."""
    extra = ["--attacks", json.dumps(attacks), "--eps", ",".join(f"{e:g}" for e in eps)]
    extra += ["--seed", str(seed)] + (["--limit", str(limit)] if limit else [])

    def command(config: Path, run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "nettle.experiment.job", str(config), str(run_dir), *extra]

    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job's stages (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m nettle.experiment.job", description=__doc__)
    p.add_argument("config")
    p.add_argument("run_dir")
    p.add_argument("--attacks", default='{"fgsm": {}, "pgd": {"steps": 10}}', help="JSON")
    p.add_argument("--eps", default="0.05,0.1,0.2")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from nettle.config import ConfigError, load_config
    from nettle.experiment.run import run_experiment
    from nettle.registry import UnknownNameError
    from nettle.train.guards import NonFiniteLossError

    run_dir = Path(args.run_dir)
    try:
        attacks = json.loads(args.attacks)
        eps = [float(e) for e in args.eps.split(",") if e.strip()]
        cfg = load_config(args.config)
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(run_dir / "stages.json", {"status": "running"})
        summary = run_experiment(cfg, run_dir)
        print(f"trained: best test acc {summary.get('best_test_acc')}", flush=True)
        metrics = evaluate_run(run_dir, attacks, eps, limit=args.limit, seed=args.seed)
    except NonFiniteLossError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, UnknownNameError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _atomic_json(run_dir / "stages.json", {"status": "done", "metrics": metrics})
    print("evaluated: " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
