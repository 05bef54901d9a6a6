"""`nettle attack RUN_DIR_OR_CHECKPOINT --attacks fgsm,pgd,cw --eps 0.1,0.2,0.3 [--json]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack",
        help="robust accuracy of a trained model per attack and epsilon, with masking checks",
        description="Attack a run's model (or a checkpoint) on its test set and report robust "
        "accuracy per attack and epsilon; results are saved next to the run.",
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
    p.add_argument("--limit", type=int, default=None, help="attack only the first N test examples")
    p.add_argument("--device", default=None, help="device for model and attack (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    p.set_defaults(func=run)


def _options(names: list[str], items: list[str]) -> dict[str, dict]:
    import yaml

    out: dict[str, dict] = {n: {} for n in names}
    for item in items:
        key, sep, raw = item.partition("=")
        attack, dot, option = key.partition(".")
        if not sep or not dot or attack not in out:
            raise ValueError(
                f"--set {item!r}: expected ATTACK.KEY=VALUE for one of {', '.join(names)}"
            )
        out[attack][option] = yaml.safe_load(raw)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from nettle.attack import evaluate_robustness, list_attacks
    from nettle.experiment.run import load_teacher
    from nettle.train.checkpoint import load_checkpoint
    from nettle.train.data import create_dataset

    names = [a.strip().lower() for a in args.attacks.split(",") if a.strip()]
    unknown = [n for n in names if n not in list_attacks()]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; known: {', '.join(list_attacks())}")
    try:
        eps = [float(e) for e in args.eps.split(",")]
    except ValueError:
        raise ValueError(f"--eps {args.eps!r}: expected numbers, e.g. 0.05,0.1") from None
    target = Path(args.target)
    model = load_teacher(target).to(args.device or "cpu")
    if target.is_dir():
        import yaml

        cfg = yaml.safe_load((target / "config.yaml").read_text())
        out_dir = target
    else:
        cfg = load_checkpoint(target)["config"]
        out_dir = target.parent
    d = cfg["data"]
    test = create_dataset(d["name"], "test", d.get("root"), d.get("image_size"))
    x, y = test.tensors if hasattr(test, "tensors") else map(torch.stack, zip(*test))
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    with Progress(console=Console(stderr=True), transient=True, disable=args.json) as bar:
        task = bar.add_task("attacking", total=len(names) * len(eps))
        result = evaluate_robustness(
            model,
            (x, y),
            _options(names, args.options),
            eps,
            progress=lambda name, e: bar.advance(task),
        )
    from nettle.experiment.report import plot_robustness

    path = out_dir / "robustness.json"
    tmp = path.with_name(".robustness.json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    tmp.replace(path)
    curves = dict(result.accuracy) | {"worst case": result.worst}
    plot_robustness([{"name": target.name, "robustness": curves}]).savefig(
        out_dir / "robustness.png", dpi=110
    )
    if args.json:
        print(json.dumps(result.to_dict() | {"saved": str(path)}))
        return 0
    table = Table(
        title=f"robust accuracy ({result.examples} examples, clean {result.clean_accuracy:.1%})"
    )
    table.add_column("attack")
    for e in result.eps:
        table.add_column(f"eps {e:g}", justify="right")
    for name, curve in result.accuracy.items():
        table.add_row(name, *[f"{curve[e]:.1%}" for e in result.eps])
    table.add_row("worst case", *[f"{result.worst[e]:.1%}" for e in result.eps])
    console = Console()
    console.print(table)
    for w in result.warnings:
        console.print(f"[bold red]masking warning:[/bold red] {w}")
    console.print(f"saved: {path} and {out_dir / 'robustness.png'}")
    return 0
