"""`nettle inspect RUN_DIR [--layer NAME] [--channel C ...] [--top K] [--featurevis] -o DIR`;
`nettle inspect RUN_DIR --activations [--against OTHER_RUN] [--weak 0.1]`: the unit layers'
weak-activation fractions and maxima (`nettle.inspect.unit_stats`), side by side with another
run's (e.g. a ReLU net against its ReLog variant)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="filters, top patches, feature visualisations and history of a trained run",
        description="Load a trained run dir and write PNGs plus index.html/index.md: the first "
        "conv layer's filters, the top input patches of chosen channels, optionally their "
        "feature visualisations, the training history, attributions (Grad-CAM, saliency, "
        "integrated gradients), weights and biases, the model over an interpolation plane, "
        "feature maps recorded while training and per-layer activation statistics.",
    )
    p.add_argument("run_dir", help="a run dir written by `nettle train`")
    p.add_argument(
        "--layer", default=None, help="layer to probe (default: the last traceable conv layer)"
    )
    p.add_argument(
        "--channel",
        dest="channels",
        type=int,
        action="append",
        default=None,
        metavar="C",
        help="channel of the layer (repeatable; default: the two most active)",
    )
    p.add_argument("--top", type=int, default=9, help="patches per channel (9)")
    p.add_argument("--featurevis", action="store_true", help="render feature visualisations")
    p.add_argument("--steps", type=int, default=512, help="feature visualisation steps (512)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--max-examples", type=int, default=None, help="first N examples only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cam-layer", default=None, help="Grad-CAM's layer (default: the last conv layer)"
    )
    p.add_argument("-o", "--out", default=None, help="output folder (not with --activations)")
    p.add_argument(
        "--activations",
        action="store_true",
        help="print each unit layer's weak fraction and max instead of writing pages",
    )
    p.add_argument(
        "--against",
        default=None,
        metavar="RUN_DIR",
        help="with --activations: side by side with this run",
    )
    p.add_argument(
        "--weak", type=float, default=0.1, help="weak: |a| under this times the layer max (0.1)"
    )
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.inspect.report import inspect_run

    _check_options(args)
    if args.activations:
        return _activations(args)
    files = inspect_run(
        args.run_dir,
        args.out,
        layer=args.layer,
        channels=args.channels,
        top=args.top,
        featurevis=args.featurevis,
        steps=args.steps,
        split=args.split,
        max_examples=args.max_examples,
        seed=args.seed,
        cam_layer=args.cam_layer,
    )
    if args.json:
        out = {
            "index_html": str(files.index_html),
            "index_md": str(files.index_md),
            "images": {k: str(v) for k, v in files.images.items()},
            "layer": files.layer,
            "channels": files.channels,
        }
        print(json.dumps(out))
        return 0
    c = Console()
    c.print(f"layer {files.layer}, channels {', '.join(map(str, files.channels))}")
    c.print(f"{len(files.images)} images; index: {files.index_html}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse counts below 1 and negative channels, naming the option, before any work."""
    for option, value in (
        ("--top", args.top),
        ("--steps", args.steps),
        ("--max-examples", args.max_examples),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} {value}: expected a whole number of at least 1")
    if args.out is None and not args.activations:
        raise ValueError("-o/--out: the output folder is required (or give --activations)")
    if args.against is not None and not args.activations:
        raise ValueError("--against goes with --activations")
    if not 0 < args.weak <= 1:
        raise ValueError(f"--weak {args.weak}: expected a fraction of the layer's max in (0, 1]")
    for c in args.channels or []:
        if c < 0:
            raise ValueError(f"--channel {c}: expected a channel number of at least 0")


def _unit_tables(args: argparse.Namespace, runs: list[str]) -> list[list[Any]]:
    """`unit_stats` of each run on (the first `--max-examples`, 2000, of) its `--split`."""
    from torch.utils.data import Subset

    from nettle.config import load_config
    from nettle.inspect.unit_stats import unit_stats
    from nettle.models.build import load_run_model
    from nettle.train.data import create_dataset

    tables = []
    for run in runs:
        cfg = load_config(Path(run) / "config.yaml")
        d = cfg.data
        data = create_dataset(d.name, args.split, d.root, d.image_size)
        data = Subset(data, range(min(len(data), args.max_examples or 2000)))
        tables.append(unit_stats(load_run_model(run, cfg), data, weak=args.weak))
    return tables


def _activations(args: argparse.Namespace) -> int:
    """Print the unit statistics of the run (and of `--against`) side by side, or JSON."""
    from nettle.inspect.unit_stats import compare_units

    runs = [args.run_dir] + ([args.against] if args.against else [])
    tables = _unit_tables(args, runs)
    pairs = [p[: len(runs)] for p in compare_units(tables[0], tables[1] if args.against else [])]
    if args.json:
        rows = [[None if s is None else s.to_dict() for s in pair] for pair in pairs]
        print(json.dumps({"runs": runs, "weak": args.weak, "layers": rows}))
        return 0
    table = Table(title=f"unit activations (weak: 0 < |a| < {args.weak:g} x the layer's max)")
    for i in range(len(runs)):
        tag = "" if len(runs) == 1 else f" {'AB'[i]}"
        for head in ("layer", "unit", "weak %", "max"):
            table.add_column(head + tag, justify="left" if head in ("layer", "unit") else "right")
    for pair in pairs:
        cells: list[str] = []
        for s in pair:
            stats = [s.layer, s.unit, f"{100 * s.weak_fraction:.1f}", f"{s.max:.3g}"] if s else []
            cells += stats or [""] * 4
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for tag, run in zip("AB", runs if len(runs) > 1 else []):
        console.print(f"{tag}: {run}")
    return 0
