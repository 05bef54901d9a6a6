"""Deployable models: a trained network written as ONNX, TorchScript or a `torch.export` archive.

`export_model(model, example, format, path)` replaces every substitute that rebuilds its
weight (hashed, tensor-decomposed, ACDC) by its fast form (`fast_model`: the equivalent plain
`nn.Conv2d` layers, exact up to rounding), exports that, loads the export back (onnxruntime
for ONNX, `torch.jit.load`, `torch.export.load`) and compares its outputs with the model's
own at the example's batch and at batch 1. Only an export within `tolerance` (max abs
difference, 1e-5) is written, atomically and only where nettle may write (`nettle.files`:
a file nettle did not write is never replaced). The batch dimension stays dynamic.
`export_run(run_dir, format)` does this for a run (its best checkpoint, input shape from its
data) and times the exported model, the run's model and its distillation teacher at batch 1
and the chosen batch (`measure_latency`).

Example:
    >>> import tempfile, torch
    >>> from nettle.nn.substitutes import create_conv
    >>> net = torch.nn.Sequential(create_conv("HashedDecimate", 3, 8, 3, padding=1)).eval()
    >>> path = f"{tempfile.mkdtemp()}/net.pt2"
    >>> result = export_model(net, torch.rand(2, 3, 8, 8), "pt2", path)
    >>> result.replaced, result.max_abs_diff <= 1e-5
    ({'HashedConv2d': 1}, True)
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nettle.config import load_config
from nettle.files import OutputFolder
from nettle.measure.latency import measure_latency
from nettle.measure.report import Latency
from nettle.models.build import load_run_model, load_teacher
from nettle.train.data import get_dataset_info

__all__ = [
    "FORMATS",
    "ExportResult",
    "ModelLatency",
    "export_model",
    "export_run",
    "fast_model",
    "format_export",
    "load_export",
    "time_models",
]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
"""Export formats and the file suffix each gets by default."""


@dataclass
class ModelLatency:
    """Forward-pass latency of one model (the export, the run's model, its teacher)."""

    name: str
    latencies: list[Latency]


@dataclass
class ExportResult:
    """What `export_model` wrote and how close the export is to the model.

    Attributes:
        format: "onnx", "torchscript" or "pt2".
        path: the file written.
        input_shape: one example's shape (without the batch dim).
        max_abs_diff: the largest output difference, export vs model, over the checked batches.
        tolerance: the largest accepted.
        replaced: substitutes folded into plain layers, by class name.
        latency: models timed beside each other (filled by `export_run`).
    """

    format: str
    path: str
    input_shape: list[int]
    max_abs_diff: float
    tolerance: float
    replaced: dict[str, int]
    latency: list[ModelLatency] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data."""
        return asdict(self)


def fast_model(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """A copy of `model` in eval mode with every `fast_form()` layer replaced by its fast form.

    Returns the copy and the number of layers replaced per class name.
    """
    replaced: Counter[str] = Counter()
    if callable(getattr(model, "fast_form", None)):
        replaced[type(model).__name__] += 1
        return model.fast_form().eval(), dict(replaced)
    fast = copy.deepcopy(model).eval()
    _replace(fast, replaced)
    return fast, dict(replaced)


def _replace(parent: nn.Module, replaced: Counter[str]) -> None:
    """Replace the `fast_form()` children of `parent`, and search the others' subtrees."""
    for name, child in list(parent.named_children()):
        if callable(getattr(child, "fast_form", None)):
            setattr(parent, name, child.fast_form().eval())
            replaced[type(child).__name__] += 1
        else:
            _replace(child, replaced)


def _serialise(fast: nn.Module, example: torch.Tensor, format: str) -> bytes:
    """The bytes of `fast` exported in `format`, with a dynamic batch dimension."""
    buf = io.BytesIO()
    if format == "torchscript":
        torch.jit.save(torch.jit.trace(fast, (example,)), buf)
        return buf.getvalue()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(fast, (example,), dynamic_shapes=({0: batch},))
    if format == "pt2":
        torch.export.save(program, buf)
        return buf.getvalue()
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, verbose=False)
    return onnx_program.model_proto.SerializeToString()


class _OnnxModule(nn.Module):
    """An onnxruntime session (CPU) behind a module's call, for checks and timing."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(
                "checking an ONNX export needs: pip install 'nettle[export]'"
            ) from None

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _Deployed(nn.Module):
    """A loaded export behind a plain module's call (eval/train leave it alone: a module
    unlifted from a `torch.export` archive refuses `eval()`)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.__dict__["fn"] = fn  # not a registered child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def load_export(data: bytes, format: str) -> nn.Module:
    """The exported model of `data` as a callable module (CPU, no parameters of its own)."""
    if format == "onnx":
        return _OnnxModule(data)
    if format == "torchscript":
        return _Deployed(torch.jit.load(io.BytesIO(data), map_location="cpu"))
    return _Deployed(torch.export.load(io.BytesIO(data)).module())


def _max_diff(model: nn.Module, exported: nn.Module, example: torch.Tensor) -> float:
    worst = 0.0
    with torch.no_grad():
        for x in (example, example[:1]):
            want, got = model(x), exported(x)
            if got.shape != want.shape:
                raise ValueError(
                    f"export: the exported model's output has shape {tuple(got.shape)}, "
                    f"the model's {tuple(want.shape)}"
                )
            worst = max(worst, float((got.float() - want.float()).abs().max()))
    return worst


def export_model(
    model: nn.Module,
    example: torch.Tensor,
    format: str,
    path: str | Path,
    *,
    tolerance: float = 1e-5,
) -> ExportResult:
    """Export `model` (fast forms, eval mode, CPU) in `format` to `path`, after checking it.

    Args:
        model: the model; it is not changed (a copy is exported).
        example: an input batch (batch >= 2, so that the batch dim is exported dynamic).
        format: "onnx", "torchscript" or "pt2".
        path: the file to write; refused if it exists and nettle did not write it.
        tolerance: the largest accepted max abs output difference between export and model.

    Raises:
        ValueError: an unknown format, a path nettle may not write, or an export that differs
            from the model by more than `tolerance` (then nothing is written).
    """
    if format not in FORMATS:
        raise ValueError(f"export: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if example.shape[0] < 2:
        example = torch.cat([example, example])
    path = Path(path)
    folder = OutputFolder(path.parent)
    folder.check([path.name])  # before any work: nothing on disk changes on refusal
    model = model.eval()
    fast, replaced = fast_model(model)
    data = _serialise(fast, example, format)
    diff = _max_diff(model, load_export(data, format), example)
    if not diff <= tolerance:
        raise ValueError(
            f"export: the {format} model's outputs differ from the model's by {diff:.3g} "
            f"(more than {tolerance:g}); nothing written"
        )
    folder.claim([path.name]).write(path.name, data)
    return ExportResult(format, str(path), list(example.shape[1:]), diff, tolerance, replaced)


def time_models(
    models: dict[str, nn.Module], input_shape: list[int], batch_sizes: list[int]
) -> list[ModelLatency]:
    """`measure_latency` of each model (CPU, float32) at each batch size, one after another."""
    return [
        ModelLatency(
            name,
            measure_latency(m, tuple(input_shape), batch_sizes, device="cpu", dtype=torch.float32),
        )
        for name, m in models.items()
    ]


def export_run(
    run_dir: str | Path,
    format: str,
    path: str | Path | None = None,
    batch_size: int = 32,
    *,
    timing: bool = True,
) -> ExportResult:
    """Export the trained model of a run and time it beside the run's model and its teacher.

    Args:
        run_dir: a run dir (its `config.yaml` and best, else last, checkpoint).
        format: "onnx", "torchscript" or "pt2".
        path: the file to write (default `RUN/exports/model<suffix>`).
        batch_size: the batch timed beside batch 1, and the example's batch (at least 2).
        timing: time the models (`ExportResult.latency`).

    Raises:
        FileNotFoundError, ValueError: a bad run dir, format, path or batch (one line).
    """
    if format not in FORMATS:
        raise ValueError(f"export: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if not 1 <= batch_size <= 4096:
        raise ValueError(f"export: --batch must be in 1..4096, got {batch_size}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run dir (no such folder)")
    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    model = load_run_model(run_dir, cfg)  # names a missing config or checkpoint
    cfg = cfg or load_config(run_dir / "config.yaml")
    info = get_dataset_info(cfg.data.name, cfg.data.root, cfg.data.image_size)
    shape = [cfg.model.in_channels or info.in_channels, *info.image_size]
    example = torch.rand(max(2, batch_size), *shape, generator=torch.Generator().manual_seed(0))
    teacher = None  # loaded first: a teacher that cannot be loaded stops before any write
    if timing and cfg.distill is not None:
        teacher = load_teacher(cfg.distill.teacher, cfg.distill.teacher_weights, cfg)
    out = Path(path) if path is not None else run_dir / "exports" / f"model{FORMATS[format]}"
    result = export_model(model, example, format, out)
    if timing:
        models = {f"exported ({format})": load_export(out.read_bytes(), format), "run model": model}
        if teacher is not None:
            models["teacher"] = teacher
        result.latency = time_models(models, shape, sorted({1, batch_size}))
    return result


def format_export(result: ExportResult) -> str:
    """The export in lines: the file and check, then one line per timed model."""
    replaced = ", ".join(f"{n} x{k}" for n, k in sorted(result.replaced.items())) or "none"
    lines = [
        f"wrote {result.path} ({result.format}, input {'x'.join(map(str, result.input_shape))}"
        f", dynamic batch); fast forms: {replaced}",
        f"max abs difference from the run's model: {result.max_abs_diff:.3g} "
        f"(tolerance {result.tolerance:g})",
    ]
    for row in result.latency:
        times = ", ".join(f"batch {t.batch_size} {t.median_s * 1e3:,.3f} ms" for t in row.latencies)
        lines.append(f"{row.name}: {times}")
    return "\n".join(lines)
