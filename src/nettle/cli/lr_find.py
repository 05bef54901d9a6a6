"""`nettle lr-find CONFIG.yaml [--set k=v] [-o DIR] [--json]`: the learning-rate range test."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test for a config; suggests base and max learning rates",
        description="Sweep the learning rate exponentially on the config's model and data, "
        "plot the loss and suggest learning rates. The model is not saved or changed.",
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
    from nettle.models.build import build_model
    from nettle.train.data import create_dataset
    from nettle.train.loop import build_optimizer, resolve_device
    from nettle.train.lr_find import lr_find, plot_lr_find

    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).to(resolve_device(cfg.train.device))
    d = cfg.data
    data = create_dataset(d.name, "train", d.root, d.image_size, d.download)
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
    )
    out = result.to_dict()
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        plot_lr_find(result).savefig(folder / "lr_find.png", dpi=110)
        (folder / "lr_find.json").write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k not in ("lrs", "losses", "smoothed")}))
        return 0
    c = Console()
    c.print(
        f"steepest descent at lr {result.steepest_lr:.3g}; lowest loss at {result.min_loss_lr:.3g}"
    )
    c.print(
        f"suggested max_lr {result.max_lr:.3g} (one-cycle / clr peak), base_lr {result.base_lr:.3g}"
    )
    if args.out:
        c.print(f"plot: {Path(args.out) / 'lr_find.png'}")
    return 0
