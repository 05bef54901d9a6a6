"""`nettle export RUN --format onnx|torchscript|pt2 [-o FILE] [--batch N] [--no-latency]
[--json]`.

Writes the trained model of a run as a deployable file (`nettle.models.export.export_run`):
substitutes folded into plain layers, the batch dimension dynamic, the file checked against
the run's model (max abs difference <= 1e-5; onnxruntime, `torch.jit.load`,
`torch.export.load`) before it is written, to `RUN/exports/model.<suffix>` unless `-o` names
a file. A file that nettle did not write is never replaced. Then one line per model: the
latency of the export, of the run's model and of its distillation teacher (if any) at batch 1
and at `--batch`; `--json` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json

from nettle.models.export import FORMATS, export_run, format_export

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's model as ONNX, TorchScript or a torch.export archive, checked",
        description="Export a run's trained model (substitutes in their fast forms), check "
        "the export's outputs against the model, and time it beside the teacher.",
    )
    p.add_argument("run_dir", metavar="RUN", help="the run dir (with config.yaml, checkpoints/)")
    p.add_argument("--format", required=True, help=f"file format: {', '.join(FORMATS)}")
    p.add_argument(
        "-o", "--output", default=None, help="file to write (default RUN/exports/model.SUFFIX)"
    )
    p.add_argument("--batch", type=int, default=32, help="batch timed beside batch 1 (default 32)")
    p.add_argument(
        "--no-latency", action="store_true", help="skip timing the models (export and check only)"
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export_run(
        args.run_dir, args.format, args.output, args.batch, timing=not args.no_latency
    )
    print(json.dumps(result.to_dict()) if args.json else format_export(result))
    return 0
