"""`nettle lr-find CONFIG.yaml [--set k=v] [-o DIR] [--json]`: the learning-rate range test."""

from __future__ import annotations

import argparse
import io
import json
import math
from typing import TYPE_CHECKING

from rich.console import Console

from nettle.files import OutputFolder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test for a config; suggests base and max learning rates",
        description="Sweep the learning rate exponentially on the config's model and data, "
        "training on the run's own objective (cross-entropy, CTC, sigmoid losses, Bayesian, "
        "adversarial or distillation), plot the loss and suggest learning rates. The model "
        "is not saved or changed.",
    )
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("-o", "--out", default=None, help="folder for lr_find.png/json (default: none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from nettle.config import load_config
    from nettle.experiment.objective import build_objective
    from nettle.models.build import build_model
    from nettle.train.augment import build_augment
    from nettle.train.data import create_dataset, stratified_subset
    from nettle.train.loop import build_optimizer, resolve_device
    from nettle.train.lr_find import lr_find, plot_lr_find

    _check_options(args)
    out = OutputFolder(args.out) if args.out else None
    if out is not None:
        out.check(_OUTPUTS)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.train.device)
    d = cfg.data
    data = create_dataset(d.name, "train", d.root, d.image_size, d.download)
    if d.subset is not None:  # a miniature run trains on a seeded subset: so does its test
        data = stratified_subset(data, d.subset, cfg.train.seed)
    if d.batch_size > len(data):
        raise ValueError(
            f"{args.config}: data.batch_size {d.batch_size} is more than the {len(data)} "
            f"training examples of {d.name}; lr-find needs whole batches"
        )
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    # as training builds it: before the optimiser (distillation may load teacher weights)
    objective, _ = build_objective(cfg, model, data, device)
    model.to(device)
    optimizer = build_optimizer(model.parameters(), cfg.train.optim)
    result = lr_find(
        model,
        optimizer,
        data,
        d.batch_size,
        args.start_lr,
        args.end_lr,
        args.iters,
        seed=cfg.train.seed,
        objective=objective,
        augment=build_augment(d.augment),
    )
    found = {k: _finite_or_none(v) for k, v in result.to_dict().items()}
    if out is not None:
        _write(out, plot_lr_find(result), found)
    if args.json:
        print(
            json.dumps({k: v for k, v in found.items() if k not in ("lrs", "losses", "smoothed")})
        )
        return 0
    c = Console()
    c.print(
        f"steepest descent at lr {result.steepest_lr:.3g}; lowest loss at {result.min_loss_lr:.3g}"
    )
    c.print(
        f"suggested max_lr {result.max_lr:.3g} (one-cycle / clr peak), base_lr {result.base_lr:.3g}"
    )
    if out is not None:
        c.print(f"plot: {out.folder / 'lr_find.png'}")
    return 0


_OUTPUTS = ("lr_find.png", "lr_find.json")


def _finite_or_none(value: object) -> object:
    """NaN (no suggestion) as null, so that the JSON is JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write(out: OutputFolder, figure: Figure, found: dict) -> None:
    out.claim(_OUTPUTS)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    out.write("lr_find.png", buf.getvalue())
    out.write_json("lr_find.json", found)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse learning rates and counts the test cannot use, naming the option."""
    for option, value in (("--start-lr", args.start_lr), ("--end-lr", args.end_lr)):
        if not (0 < value < math.inf):
            raise ValueError(f"{option} {value}: expected a finite learning rate above 0")
    if args.start_lr >= args.end_lr:
        raise ValueError(
            f"--start-lr {args.start_lr} is not below --end-lr {args.end_lr}; the test "
            "raises the learning rate from the first to the second"
        )
    if args.iters < 3:
        raise ValueError(f"--iters {args.iters}: expected at least 3 steps (3 give a suggestion)")
