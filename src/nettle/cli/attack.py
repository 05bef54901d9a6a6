"""`nettle attack RUN_DIR_OR_CHECKPOINT --attacks fgsm,pgd,cw --eps 0.1,0.2,0.3 [--json]`.

A classifier is scored by accuracy; a CTC line recogniser (`train.loss: ctc`) by whole-line
accuracy and character error rate under attack (`nettle.attack.objectives.ctc_lines`).
`--surrogate RUN2|CHECKPOINT` adds transfer rows crafted on that model.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack",
        help="robust accuracy of a trained model per attack and epsilon, with masking checks",
        description="Attack a run's model (or a checkpoint) on its test set and report robust "
        "accuracy per attack and epsilon. Each setting is an evaluation stage of its own, "
        "RUN_DIR/eval/attack-<key>.json (key: the settings and the checkpoint's digest): "
        "another epsilon adds a file, the same settings read the saved one. A run dir's "
        "results are recorded in its store, beside earlier ones. A CTC line recogniser is "
        "scored by line accuracy and character error rate.",
    )
    p.add_argument("target", help="a run dir or a checkpoint file")
    p.add_argument("--attacks", default="fgsm,pgd", help="comma-separated attack names")
    p.add_argument("--eps", default="0.05,0.1,0.2", help="comma-separated epsilons")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="ATTACK.KEY=V",
        help="attack option, e.g. --set pgd.steps=20 (repeatable)",
    )
    p.add_argument(
        "--surrogate",
        default=None,
        metavar="RUN|CHECKPOINT",
        help="also craft every attack on this model and score it on the target (transfer rows)",
    )
    p.add_argument("--limit", type=int, default=None, help="attack only the first N test examples")
    p.add_argument("--seed", type=int, default=0, help="seed of the random attacks (0)")
    p.add_argument("--device", default=None, help="device for model and attack (default: cpu)")
    p.add_argument(
        "--store",
        default=None,
        help="run store to record in (default: the nettle.db of the root the run dir is under)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    p.set_defaults(func=run)


def _options(names: list[str], items: list[str]) -> dict[str, dict]:
    from nettle.safe_yaml import load_yaml

    out: dict[str, dict] = {n: {} for n in names}
    for item in items:
        key, sep, raw = item.partition("=")
        attack, dot, option = key.partition(".")
        if not sep or not dot or attack not in out:
            raise ValueError(
                f"--set {item!r}: expected ATTACK.KEY=VALUE for one of {', '.join(names)}"
            )
        value = load_yaml(raw, source=f"--set {item}")
        if not isinstance(value, bool | int | float | str) or value != value or value in _INF:
            raise ValueError(
                f"--set {item!r}: expected a finite number, a string or true/false, got {value!r}"
            )
        out[attack][option] = value
    return out


_INF = (float("inf"), float("-inf"))


def _settings(args: argparse.Namespace) -> dict:
    """The attack stage's settings from the options, validated before anything runs."""
    from nettle.attack import list_attacks
    from nettle.experiment.evaluation import check_attacks

    names = [a.strip().lower() for a in args.attacks.split(",") if a.strip()]
    if not names:
        raise ValueError(
            f"--attacks {args.attacks!r}: name at least one of {', '.join(list_attacks())}"
        )
    unknown = [n for n in names if n not in list_attacks()]
    if unknown:
        raise ValueError(
            f"--attacks: unknown attack {unknown[0]!r}; known: {', '.join(list_attacks())}"
        )
    try:
        eps = sorted({float(e) for e in args.eps.split(",") if e.strip()})
    except ValueError:
        raise ValueError(f"--eps {args.eps!r}: expected numbers, e.g. 0.05,0.1") from None
    if not eps or any(not (0 < e < float("inf")) for e in eps):
        raise ValueError(f"--eps {args.eps!r}: expected finite numbers above 0, e.g. 0.05,0.1")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed}: expected a seed from 0 to 2**32 - 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: expected a number of examples >= 1")
    attacks = {n: o for n, o in sorted(_options(names, args.options).items())}
    check_attacks(attacks, eps, "--set")
    return {"attacks": attacks, "eps": eps, "limit": args.limit, "seed": args.seed}


def _target(target: Path) -> tuple[Any, Path, Path, bool]:
    """(config, checkpoint, folder of the stage files, is a run dir) of a run dir or file."""
    from nettle.config import load_config, load_config_dict
    from nettle.experiment.evaluation import checkpoint_of
    from nettle.train.checkpoint import load_checkpoint

    if target.is_dir():
        path = target / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{target}: not a run dir (no config.yaml)")
        cfg = load_config(path)
        return cfg, checkpoint_of(target), target, True
    if not target.is_file():
        raise FileNotFoundError(f"{target}: neither a run dir nor a checkpoint file")
    tree = load_checkpoint(target).get("config")
    if not tree:
        raise ValueError(f"{target}: the checkpoint holds no config to rebuild the model from")
    return load_config_dict(tree, source=str(target)), target, target.parent, False


def _check_writable(folder: Path) -> None:
    """The stage is saved under `folder/eval`: a folder nettle cannot write is refused first."""
    where = folder / "eval" if (folder / "eval").is_dir() else folder
    if not os.access(where, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: cannot write the attack's results there (read-only)")


def _check_store(run_dir: Path, explicit: str | None) -> None:
    """Open the run's store, if it has one, before the attack writes its stage: a store that
    cannot be used is refused with nothing written."""
    from nettle.experiment.record import store_path_for
    from nettle.experiment.store import Store

    path = Path(store_path_for(run_dir, explicit))
    if path.exists():
        Store(path, create=False)


def run(args: argparse.Namespace) -> int:
    from nettle.attack.objectives import objective_for
    from nettle.experiment.evaluation import _test_tensors, robustness_rows, run_attack_stage
    from nettle.experiment.report import plot_robustness
    from nettle.train.distributed import resolve_device
    from nettle.train.precision import check_precision

    settings = _settings(args)
    device = resolve_device(args.device or "cpu", "--device")
    target = Path(args.target)
    cfg, ckpt, folder, is_run = _target(target)
    objective = objective_for(cfg.train.loss).name
    if objective != "classification":  # e.g. ctc-lines: line accuracy and CER
        settings["objective"] = objective
    if cfg.train.precision != "fp32":  # the run's autocast, as its evaluation stage uses
        check_precision(cfg.train.precision, device)
        settings["precision"] = cfg.train.precision
    surrogate = _surrogate(args.surrogate, cfg, settings) if args.surrogate else None
    _check_writable(folder)
    if is_run:
        _check_store(target, args.store)
    model = _load(cfg, ckpt, folder, is_run).to(device)
    data = _test_tensors(cfg.data)
    n = len(settings["attacks"]) * len(settings["eps"]) * (2 if surrogate is not None else 1)
    with Progress(console=Console(stderr=True), transient=True, disable=args.json) as bar:
        task = bar.add_task("attacking", total=n)
        path, record, cached = run_attack_stage(
            folder,
            model,
            data,
            settings,
            ckpt,
            progress=lambda name, e: bar.advance(task),
            surrogate=surrogate.to(device) if surrogate is not None else None,
        )
    result = record["result"]
    png = path.with_suffix(".png")
    if not png.exists():
        curves = {a: {float(e): v for e, v in c.items()} for a, c in result["accuracy"].items()}
        curves["worst case"] = {float(e): v for e, v in result["worst"].items()}
        plot_robustness([{"name": target.name, "robustness": curves}]).savefig(png, dpi=110)
    if is_run:
        from nettle.config import config_hash
        from nettle.experiment.record import store_for

        store = store_for(target, args.store)
        run_id = config_hash(cfg)
        store.add_run(
            run_id, cfg.model_dump(mode="json"), sweep=cfg.name, name=cfg.name, run_dir=str(target)
        )
        store.record_robustness(run_id, [r | {"stage": str(path)} for r in robustness_rows(record)])
    if args.json:
        print(json.dumps(result | {"saved": str(path), "cached": cached}))
        return 0
    _print(result, path, png, cached)
    return 0


def _load(cfg: Any, ckpt: Path, folder: Path, is_run: bool) -> Any:
    from nettle.models.build import load_run_model, load_teacher

    return load_run_model(folder, cfg, checkpoint=ckpt) if is_run else load_teacher(ckpt)


def _surrogate(where: str, cfg: Any, settings: dict) -> Any:
    """The surrogate model of `--surrogate`; its name and checkpoint digest join the settings
    (so the stage file is its own)."""
    from nettle.files import file_sha256

    path = Path(where)
    try:
        s_cfg, s_ckpt, s_folder, s_is_run = _target(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"--surrogate {exc}") from None
    if s_cfg.train.loss != cfg.train.loss:
        raise ValueError(
            f"--surrogate {where}: trained with train.loss={s_cfg.train.loss}, the target with "
            f"{cfg.train.loss}; a surrogate must solve the same task"
        )
    name = path.name if s_is_run else path.stem
    settings["surrogate"] = {"name": name, "sha256": file_sha256(s_ckpt)}
    return _load(s_cfg, s_ckpt, s_folder, s_is_run)


def _print(result: dict, path: Path, png: Path, cached: bool) -> None:
    eps = [float(e) for e in result["eps"]]
    what = "line accuracy" if result.get("objective") == "ctc-lines" else "accuracy"
    table = Table(
        title=f"robust {what} ({result['examples']} examples, clean {result['clean_accuracy']:.1%})"
    )
    table.add_column("attack")
    for e in eps:
        table.add_column(f"eps {e:g}", justify="right")
    spread = result.get("spread") or {}
    for name, curve in result["accuracy"].items():
        sd = spread.get(name) or {}
        table.add_row(name, *[_cell(curve[str(e)], sd.get(str(e))) for e in eps])
    table.add_row("worst case", *[f"{result['worst'][str(e)]:.1%}" for e in eps])
    console = Console()
    console.print(table)
    _print_extra(console, result, eps)
    for w in result["warnings"]:
        console.print(f"[bold red]masking warning:[/bold red] {w}")
    console.print(
        f"{'read (same settings and checkpoint)' if cached else 'saved'}: {path} and {png}"
    )


def _cell(acc: float, sd: float | None) -> str:
    return f"{acc:.1%}" + (f" ±{sd:.1%}" if sd is not None else "")


def _print_extra(console: Console, result: dict, eps: list[float]) -> None:
    """The error rate (e.g. CER), the cost and MaxConfidence's threshold curves."""
    if result.get("errors"):
        table = Table(title=f"{result['error_name']} (clean {result['clean_error']:.2%})")
        table.add_column("attack")
        for e in eps:
            table.add_column(f"eps {e:g}", justify="right")
        for name, curve in result["errors"].items():
            table.add_row(name, *[f"{curve[str(e)]:.2%}" for e in eps])
        console.print(table)
    if result.get("cost"):
        table = Table(title="cost: seconds, forward / backward passes (examples)")
        table.add_column("attack")
        for e in eps:
            table.add_column(f"eps {e:g}", justify="right")
        for name, curve in result["cost"].items():
            cells = [curve[str(e)] for e in eps]
            table.add_row(
                name, *[f"{c['seconds']:.2f}s {c['forwards']}/{c['backwards']}" for c in cells]
            )
        console.print(table)
    for name, curves in (result.get("confidence") or {}).items():
        for e, curve in curves.items():
            points = ", ".join(f"{float(t):g}: {v:.1%}" for t, v in curve.items())
            console.print(f"{name} eps {float(e):g}, accuracy vs confidence threshold: {points}")
