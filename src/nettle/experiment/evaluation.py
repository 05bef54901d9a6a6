"""Evaluation stages of a trained run, each cached in the run dir under its own settings.

A run's `evaluate:` section (`nettle.config.EvaluateConfig`) names the stages that follow
training: `count` (parameters and multiply-adds), the attacks (robust accuracy per attack and
epsilon, with the gradient-masking checks) and optionally `inspect` and, for text-line
recognisers, `decode` (greedy, beam and beam + LM decoding). Each stage is a file

    <run dir>/eval/<kind>-<key>.json        (inspect: also the folder eval/inspect-<key>/)

where `key` is the digest of the stage's own settings and of the checkpoint it read (its
sha256). Changing `evaluate.eps` therefore runs only a new attack stage; two evaluations with
different settings both stay; a stage that exists is read, never recomputed or replaced.

`run_stages(run_dir, cfg)` runs the missing stages and returns every stage of `cfg`;
`collect_stages(run_dir, cfg)` only reads them (None while one is missing): the sweep drivers
use it to record a finished run's numbers in the store.

Example:
    >>> stages = run_stages("runs/digits/0123abcd4567", cfg)  # doctest: +SKIP
    >>> stages.metrics()["macs"]  # doctest: +SKIP
    2379008
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nettle.config import ExperimentConfig, digest
from nettle.files import file_sha256, write_json

__all__ = [
    "Stages",
    "attack_settings",
    "check_attacks",
    "check_evaluate",
    "checkpoint_of",
    "collect_stages",
    "robustness_rows",
    "run_attack_stage",
    "run_stages",
]

EVAL_DIR = "eval"
Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class Stages:
    """The results of a run's evaluation stages (plain data from the stage files)."""

    count: dict[str, Any] | None = None
    attack: dict[str, Any] | None = None
    inspect: dict[str, Any] | None = None
    decode: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the store: params, macs, macs_executed (and, for a decode stage,
        acc_<mode> and cer_<mode> of greedy, beam and beam_lm decoding)."""
        c = (self.count or {}).get("result") or {}
        out = {k: c[k] for k in ("params", "macs", "macs_executed") if c.get(k) is not None}
        decoded = (self.decode or {}).get("result") or {}
        for mode in ("greedy", "beam", "beam_lm"):
            for key, value in (decoded.get(mode) or {}).items():
                out[f"{key}_{mode}"] = value
            for key, value in ((decoded.get("noisy") or {}).get(mode) or {}).items():
                out[f"{key}_{mode}_noisy"] = value
        return out


def checkpoint_of(run_dir: Path) -> Path:
    """The checkpoint evaluations read: `best.pt`, else `last.pt`."""
    ckpts = Path(run_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ckpts / name).is_file():
            return ckpts / name
    raise FileNotFoundError(f"{ckpts}: no checkpoint (best.pt or last.pt); is the run trained?")


def attack_settings(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The settings that make an attack stage's numbers, or None when no attack is asked."""
    from nettle.attack.objectives import objective_for

    e = cfg.evaluate
    if not e.attacks:
        return None
    attacks = {name.lower(): dict(opts) for name, opts in sorted(e.attacks.items())}
    out = {"attacks": attacks, "eps": sorted(e.eps), "limit": e.limit, "seed": e.seed}
    objective = objective_for(cfg.train.loss).name  # e.g. ctc-lines for a CTC recogniser
    if objective != "classification":
        out["objective"] = objective
    if cfg.train.precision != "fp32":  # attacks run under the run's autocast
        out["precision"] = cfg.train.precision
    return out


def check_attacks(attacks: dict[str, dict[str, Any]], eps: list[float], where: str) -> None:
    """Build every attack with its options (on a stand-in model): an unknown name or a bad
    option is one line naming `where.<attack>` before anything runs."""
    import dataclasses
    import math

    from torch import nn

    from nettle.attack import ATTACKS, create_attack

    probe = nn.Identity()
    for name, options in attacks.items():
        for key, value in options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where}.{name}.{key}: {value} is not a finite number")
        fields = {f.name: f.default for f in dataclasses.fields(ATTACKS.get(name).Config)}
        for key, value in options.items():
            default = fields.get(key)
            number = isinstance(default, (int, float)) and not isinstance(default, bool)
            if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{where}.{name}.{key}: expected a number, got {value!r}")
        first = {"eps": eps[0]} if eps and "eps" in fields else {}
        try:
            create_attack(name, probe, **(first | dict(options)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}.{name}: {exc}") from None


def check_evaluate(cfg: ExperimentConfig) -> None:
    """Check the `evaluate:` section's names and options before a run starts training."""
    from nettle.measure.conventions import get_convention

    e = cfg.evaluate
    if e.count is not None:
        get_convention(e.count.convention)
    check_attacks({k.lower(): v for k, v in e.attacks.items()}, sorted(e.eps), "evaluate.attacks")
    if e.decode is not None and cfg.train.loss not in ("ctc", "seq2seq"):
        raise ValueError(
            "evaluate.decode: decodes text-line recognisers (train.loss ctc or seq2seq), "
            f"not a train.loss={cfg.train.loss} run"
        )


def _settings(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    e, out = cfg.evaluate, {}
    if e.count is not None:
        out["count"] = e.count.model_dump(mode="json")
    attack = attack_settings(cfg)
    if attack is not None:
        out["attack"] = attack
    if e.inspect is not None:  # cam_layer only when set: earlier stage files keep their keys
        unset = {"cam_layer"} if e.inspect.cam_layer is None else None
        out["inspect"] = e.inspect.model_dump(mode="json", exclude=unset)
    if e.decode is not None:
        out["decode"] = e.decode.model_dump(mode="json")
    return out


def _stage_path(folder: Path, kind: str, settings: dict[str, Any], ckpt_digest: str) -> Path:
    return folder / EVAL_DIR / f"{kind}-{digest({'settings': settings, 'ckpt': ckpt_digest})}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "result" in data else None


def collect_stages(
    run_dir: str | Path, cfg: ExperimentConfig, ckpt_sha256: str | None = None
) -> Stages | None:
    """Every stage of `cfg.evaluate` read from the run dir, or None while one is missing
    (`ckpt_sha256`: the checkpoint's digest when the caller has it already)."""
    run_dir, settings_of = Path(run_dir), _settings(cfg)
    if not settings_of:  # nothing to evaluate
        return Stages()
    try:
        ckpt = checkpoint_of(run_dir)
    except FileNotFoundError:
        return None
    d, stages = ckpt_sha256 or file_sha256(ckpt), Stages()
    for kind, settings in settings_of.items():
        path = _stage_path(run_dir, kind, settings, d)
        data = _read(path)
        if data is None:
            return None
        setattr(stages, kind, data)
        stages.files.append(str(path))
    return stages


def _test_tensors(data_cfg: Any) -> tuple[Any, Any]:
    import torch

    from nettle.train.data import create_dataset

    test = create_dataset(data_cfg.name, "test", data_cfg.root, data_cfg.image_size)
    if hasattr(test, "tensors"):
        return test.tensors[0], test.tensors[1]
    xs, ys = zip(*test)
    return torch.stack(xs), torch.as_tensor(ys)


def _count_stage(model: Any, cfg: ExperimentConfig, x: Any) -> dict[str, Any]:
    from nettle.measure import count

    c = cfg.evaluate.count
    shape = tuple(c.input) if c.input else tuple(x.shape[1:])
    report = count(model, shape, c.convention)
    return {
        "params": report.params,
        "macs": report.macs,
        "macs_executed": report.macs_executed,
        "input": list(shape),
        "convention": c.convention,
        "unsupported": [str(u) for u in report.unsupported],
    }


def run_attack_stage(
    folder: Path,
    model: Any,
    data: tuple[Any, Any],
    settings: dict[str, Any],
    ckpt: Path,
    progress: Any = None,
    ckpt_sha256: str | None = None,
    surrogate: Any = None,
) -> tuple[Path, dict[str, Any], bool]:
    """Run (or read) one attack stage of `model` on `data`; returns (file, record, cached).

    The stage file goes to `folder/eval/attack-<key>.json`; `settings` as from
    `attack_settings` (attacks, eps, limit, seed; optionally `objective`, a name of
    `nettle.attack.objectives.get_objective`, and `surrogate` {name, sha256} naming the model
    given as `surrogate`, which crafts the transfer rows; `precision`, the run's
    `train.precision`: the attacks and the clean accuracy run under its autocast).
    """
    from nettle.attack import evaluate_robustness
    from nettle.attack.objectives import get_objective
    from nettle.train.precision import autocast

    d = ckpt_sha256 or file_sha256(ckpt)
    path = _stage_path(folder, "attack", settings, d)
    have = _read(path)
    if have is not None:
        return path, have, True
    x, y = data
    if settings.get("limit"):
        x, y = x[: settings["limit"]], y[: settings["limit"]]
    device = next(model.parameters(), x).device
    with autocast(settings.get("precision", "fp32"), device):
        result = evaluate_robustness(
            model,
            (x, y),
            settings["attacks"],
            settings["eps"],
            seed=settings["seed"],
            progress=progress,
            objective=get_objective(settings.get("objective", "classification")),
            surrogate=surrogate,
            surrogate_name=(settings.get("surrogate") or {}).get("name", "surrogate"),
        )
    record = _record("attack", settings, ckpt, d, result.to_dict())
    path.parent.mkdir(exist_ok=True)
    write_json(path, record)
    return path, record, False


def _record(kind: str, settings: dict[str, Any], ckpt: Path, d: str, result: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "settings": settings,
        "checkpoint": {"file": ckpt.name, "sha256": d},
        "result": result,
    }


def run_stages(
    run_dir: str | Path, cfg: ExperimentConfig, progress: Progress | None = None
) -> Stages:
    """Run the missing evaluation stages of a trained run (with `evaluate.threads` intra-op
    threads when set); returns every stage's record."""
    run_dir = Path(run_dir)
    emit = progress or (lambda event, info: None)
    settings = _settings(cfg)
    if not settings:
        return Stages()
    ckpt = checkpoint_of(run_dir)
    d = file_sha256(ckpt)
    missing = {k: s for k, s in settings.items() if _read(_stage_path(run_dir, k, s, d)) is None}
    if missing:
        with intra_op_threads(cfg.evaluate.threads):
            _run_missing(run_dir, cfg, missing, ckpt, d, emit)
    stages = collect_stages(run_dir, cfg, ckpt_sha256=d)
    assert stages is not None  # every stage was just written
    return stages


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (unchanged when None), then restored."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_missing(
    run_dir: Path, cfg: ExperimentConfig, missing: dict[str, Any], ckpt: Path, d: str, emit: Any
) -> None:
    """Compute and write the `missing` stages of a trained run."""
    from nettle.models.build import load_run_model

    model = load_run_model(run_dir, cfg, checkpoint=ckpt)
    x, y = _test_tensors(cfg.data)
    (run_dir / EVAL_DIR).mkdir(exist_ok=True)
    for kind, s in missing.items():
        emit("stage", {"kind": kind})
        if kind == "attack":
            run_attack_stage(run_dir, model, (x, y), s, ckpt, ckpt_sha256=d)
            continue
        if kind == "count":
            result = _count_stage(model, cfg, x)
        elif kind == "decode":
            result = _decode_stage(model, cfg, x, y, s)
        else:
            result = _inspect_stage(run_dir, cfg, s, d)
        write_json(_stage_path(run_dir, kind, s, d), _record(kind, s, ckpt, d, result))


def _decode_stage(model: Any, cfg: ExperimentConfig, x: Any, y: Any, s: dict[str, Any]) -> Any:
    from nettle.train.data import create_dataset
    from nettle.train.decoding import decoding_report
    from nettle.train.seq2seq import reference_lines

    d = cfg.data
    train = create_dataset(d.name, "train", d.root, d.image_size)
    if not hasattr(train, "tensors") or train.tensors[1].dim() != 2:
        raise ValueError(f"evaluate.decode needs text-line data (digit-lines...), not {d.name}")
    lines = reference_lines(train.tensors[1])
    return decoding_report(model, x, y, lines, **s, seed=cfg.evaluate.seed)


def _inspect_stage(run_dir: Path, cfg: ExperimentConfig, s: dict[str, Any], d: str) -> Any:
    from nettle.inspect import inspect_run

    out = run_dir / EVAL_DIR / f"inspect-{digest({'settings': s, 'ckpt': d})}"
    files = inspect_run(
        run_dir,
        out,
        layer=s["layer"],
        channels=s["channels"],
        top=s["top"],
        featurevis=s["featurevis"],
        steps=s["steps"],
        max_examples=s["max_examples"],
        seed=cfg.evaluate.seed,
        cam_layer=s.get("cam_layer"),
    )
    return {
        "folder": str(out.relative_to(run_dir)),
        "layer": files.layer,
        "channels": list(files.channels),
    }


def robustness_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Store rows (attack, options, eps, accuracy, ...) of one attack stage record."""
    s, r = record["settings"], record["result"]
    warnings = list(r.get("warnings") or [])
    rows = []
    for attack, curve in (r.get("accuracy") or {}).items():
        for eps, acc in curve.items():
            rows.append(
                {
                    "attack": attack,
                    "options": s["attacks"].get(attack.split(" (transfer from ")[0], {}),
                    "eps": float(eps),
                    "accuracy": float(acc),
                    "examples": int(r.get("examples") or 0),
                    "clean_acc": r.get("clean_accuracy"),
                    "warnings": warnings,
                }
            )
    return rows
