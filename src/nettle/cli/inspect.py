"""`nettle inspect RUN_DIR [--layer NAME] [--channel C ...] [--top K] [--featurevis] -o DIR`."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

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
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nettle.inspect.report import inspect_run

    _check_options(args)
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
    for c in args.channels or []:
        if c < 0:
            raise ValueError(f"--channel {c}: expected a channel number of at least 0")
