"""One run = one run directory: build data and model from a config, train, record.

Layout of `runs/<name>/<run-id>/` (the run id is `config_hash(config)`):

    config.yaml     the resolved config (every default written out)
    env.json        python/torch versions, git commit, device, host, seed, command line
    checkpoints/    last.pt (resume), best.pt (best test accuracy)
    metrics.jsonl   one JSON object per line (step and epoch records)
    tb/             TensorBoard events
    summary.json    status, final and best metrics, parameters, phase totals

A run dir that holds a config of the same identity (`nettle.config.identity`: everything but
execution settings such as the device, workers, logging and evaluation) is resumed (or
reported done), and each start's execution settings are noted in `env.json`; one that holds a
different config, or files that are not a run's, is refused and left untouched.

Under `torchrun` (`nettle.train.distributed`) every rank runs `run_experiment`: rank 0 prepares
the run dir and writes `env.json`, `summary.json` and (in the trainer) the checkpoints and
metrics; the other ranks wait for the run dir, then train on their shards and write nothing.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nettle.config import (
    EXECUTION_KEYS,
    ConfigError,
    ExperimentConfig,
    config_hash,
    dump_config,
    identity,
)
from nettle.experiment.evaluation import check_evaluate
from nettle.experiment.objective import build_objective
from nettle.experiment.record import git
from nettle.files import atomic_write
from nettle.inspect.feature_history import check_feature_history, with_feature_history
from nettle.models.build import build_model, check_teacher
from nettle.safe_yaml import load_yaml_file
from nettle.train.data_init import data_init
from nettle.train.guards import NonFiniteLossError, default_dtype_guard
from nettle.train.lock import run_dir_lock

__all__ = ["default_run_dir", "prepare_run_dir", "run_experiment"]

Progress = Callable[[str, dict[str, Any]], None]


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """`<root>/<name>/<config hash>`."""
    return Path(root) / cfg.name / config_hash(cfg)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if a != b else []


def prepare_run_dir(cfg: ExperimentConfig, run_dir: str | Path) -> tuple[Path, str]:
    """Check `run_dir` against `cfg`; returns the dir and "new", "resume" or "done".

    Raises:
        ConfigError: the dir holds a different config or files that are not a run's.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    wanted = identity(cfg)
    if saved.is_file():
        try:
            have = load_yaml_file(saved)
        except ValueError as exc:
            raise ConfigError(f"{exc}; refusing to touch {run_dir}") from None
        if not isinstance(have, dict):
            raise ConfigError(f"{saved}: not a run's config; refusing to touch {run_dir}")
        differs = _diff(identity(have), wanted)
        if differs:
            raise ConfigError(
                f"{run_dir} holds a run of a different config (differs in: {', '.join(differs)}); "
                "refusing to overwrite it: choose another -o"
            )
        if _read_summary(run_dir, missing_ok=True).get("status") == "done":
            return run_dir, "done"
        return run_dir, "resume"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run dir: choose another -o")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir} is not empty and holds no config.yaml; refusing to write into it"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(saved, dump_config(cfg))
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot be written ({exc.strerror or exc})") from None
    return run_dir, "new"


def _environment(cfg: ExperimentConfig, device: str) -> dict[str, Any]:
    from nettle.train.distributed import world_size

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": git("rev-parse", "HEAD"),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "seed": cfg.train.seed,
        "execution": _execution(cfg),
        "world_size": world_size(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _execution(cfg: ExperimentConfig) -> dict[str, Any]:
    """The execution settings of this start (they may differ between resumes)."""
    tree, out = cfg.model_dump(mode="json"), {}
    for key in EXECUTION_KEYS:
        if key == "evaluate":
            continue
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def _record_environment(path: Path, env: dict[str, Any]) -> None:
    """Write `env.json`; a resumed run keeps the first start's and lists each resume's."""
    try:
        first = json.loads(path.read_text())
    except (OSError, ValueError):
        first = None
    if isinstance(first, dict):
        env = first | {"resumes": [*first.get("resumes", []), env]}
    atomic_write(path, json.dumps(env, indent=2))


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiment(
    cfg: ExperimentConfig, run_dir: str | Path | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Train `cfg` in `run_dir` (default `runs/<name>/<id>`), resuming if it was interrupted.

    Under `torchrun` every rank calls it (see the module docstring); the process group is
    started here and torn down at the end.

    Returns:
        The run's summary (also written to `summary.json`).
    """
    from nettle.train.distributed import distributed_session, launched

    if launched() and cfg.distill is not None:
        raise ValueError(
            "distill runs are not supported under torchrun yet (the student's attention "
            "points are hooked by name): run them in one process"
        )
    with distributed_session(cfg.train.device):
        return _run_experiment(cfg, run_dir, progress)


def _run_experiment(
    cfg: ExperimentConfig, run_dir: str | Path | None, progress: Progress | None
) -> dict[str, Any]:
    from nettle.train.data import create_dataset, stratified_subset
    from nettle.train.distributed import all_gather_objects, is_main_process
    from nettle.train.loop import resolve_device
    from nettle.train.precision import check_precision

    # everything that can be checked is checked before any file is written
    _check_model(cfg)
    check_teacher(cfg)
    check_evaluate(cfg)  # the stages after training: their names and options, now
    check_feature_history(cfg)  # the layers recorded while training
    device = resolve_device(cfg.train.device)
    check_precision(cfg.train.precision, device)  # e.g. bf16 on a GPU without it
    d = cfg.data
    with default_dtype_guard(torch.float32):
        train = create_dataset(d.name, "train", d.root, d.image_size, d.download)
        if d.subset is not None:  # a miniature run: a stratified, seeded subset
            train = stratified_subset(train, d.subset, cfg.train.seed)
        test = create_dataset(d.name, "test", d.root, d.image_size, d.download)
    _check_labels(cfg, train)
    main, refused = is_main_process(), None
    if main:  # rank 0 checks (and creates) the run dir before the others look at it
        try:
            run_dir, status = prepare_run_dir(cfg, run_dir or default_run_dir(cfg))
        except ConfigError as exc:
            refused = exc
    refusal = all_gather_objects(str(refused) if refused else None)[0]
    if refused is not None:
        raise refused
    if refusal is not None:  # the other ranks stop with rank 0's error
        raise ConfigError(refusal)
    if not main:
        run_dir, status = prepare_run_dir(cfg, run_dir or default_run_dir(cfg))
    if status == "done":
        return _read_summary(run_dir)
    with run_dir_lock(run_dir, enabled=main):
        if main and _read_summary(run_dir, missing_ok=True).get("status") == "done":
            return _read_summary(run_dir)  # finished by the process that held the lock
        return _train(cfg, run_dir, device, train, test, progress)


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    device: torch.device,
    train: Any,
    test: Any,
    progress: Progress | None,
) -> dict[str, Any]:
    from nettle.train.augment import build_augment
    from nettle.train.distributed import is_main_process, rank
    from nettle.train.loop import Trainer, evaluate

    main, d = is_main_process(), cfg.data
    if main:
        _record_environment(run_dir / "env.json", _environment(cfg, str(device)))
    t0 = time.perf_counter()
    with default_dtype_guard(torch.float32):
        _seed_everything(cfg.train.seed)
        model = build_model(cfg)
        objective, extras = build_objective(cfg, model, train, device)
        if getattr(model, "weights_report", None) is not None:
            extras["weights"] = model.weights_report
        groups, plan = _decay_groups(cfg, model)
        extras["decay"] = plan
        if getattr(model, "units_report", None) is not None:
            extras["units"] = model.units_report
        if cfg.model.init == "data":  # once, before training (a resume loads over it)
            m = cfg.model
            init = data_init(model, train, m.init_batch, m.init_tol, seed=cfg.train.seed)
            extras["data_init"] = init.to_dict()
        trainer = Trainer(
            model,
            train,
            test,
            cfg.train,
            batch_size=d.batch_size,
            eval_batch_size=d.eval_batch_size,
            run_dir=run_dir,
            augment=build_augment(d.augment),
            objective=objective,
            param_groups=groups,
            config_record=cfg.model_dump(mode="json"),
            progress=with_feature_history(cfg, run_dir, model, test, progress),
            num_workers=d.num_workers,
        )
        if rank() > 0:  # own random streams (dropout...) once DDP has shared rank 0's weights
            _seed_everything(cfg.train.seed + 7919 * rank())
        resumed = trainer.resume()
        setup = time.perf_counter() - t0
        try:
            summary = trainer.fit()
        except NonFiniteLossError as exc:
            summary = trainer.summary() | {"status": "nonfinite", "error": str(exc)}
            if main:
                _write_summary(run_dir, summary | extras, model, cfg, setup, resumed)
            raise
        final_report = getattr(objective, "final_report", None)
        if final_report is not None:  # e.g. the Bayesian compression of the trained model
            extras |= final_report(
                model,
                lambda m: evaluate(m, test, d.eval_batch_size)["acc"],
                run_dir if main else None,  # where it may draw (rank 0 writes)
            )
    return _write_summary(run_dir, summary | extras, model, cfg, setup, resumed, write=main)


def _read_summary(run_dir: Path, missing_ok: bool = False) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if missing_ok and not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); refusing to touch {run_dir}") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{path}: not a run's summary; refusing to touch {run_dir}")
    return summary


def _check_model(cfg: ExperimentConfig) -> None:
    """Build the model on the meta device: a bad name, option or shape is one line."""
    from nettle.registry import UnknownNameError

    try:
        with torch.device("meta"):
            build_model(cfg)
    except UnknownNameError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model: {cfg.model.name} cannot be built with kwargs {cfg.model.kwargs} "
            f"and conv {cfg.model.conv}: {why}"
        ) from None


def _check_labels(cfg: ExperimentConfig, train: Any) -> None:
    """Sequence labels (one row per example) need `train.loss` ctc or seq2seq, boxes need
    detection, class labels one of the others; class labels must be below `model.num_classes`."""
    tensors = getattr(train, "tensors", None)
    if tensors is None or len(tensors) < 2:
        return
    labels = tensors[1]
    if cfg.model.num_classes is not None and labels.dim() == 1 and len(labels):
        top = int(labels.max())
        if top >= cfg.model.num_classes:
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes}: data set {cfg.data.name!r} has "
                f"labels up to {top}; set it to at least {top + 1} (or leave it out)"
            )
    kinds = {1: "one class per example", 2: "sequence labels", 3: "boxes"}
    kind = kinds.get(labels.dim(), f"{labels.dim()}-d labels")
    needs = {"ctc": 2, "seq2seq": 2, "detection": 3}.get(cfg.train.loss, 1)
    if labels.dim() != needs:
        fits = {1: "ce, sigmoid_mse or bce", 2: "ctc or seq2seq", 3: "detection"}
        raise ValueError(
            f"train.loss={cfg.train.loss}: data set {cfg.data.name!r} has {kind}; "
            f"set train.loss: {fits.get(labels.dim(), 'one that fits them')}"
        )


def _decay_groups(cfg: ExperimentConfig, model: nn.Module) -> tuple[Any, dict[str, Any]]:
    from nettle.compress.decay import compression_ratio, scaled_decay_groups

    wd = cfg.train.optim.weight_decay
    if cfg.model.conv is None:
        return None, {"weight_decay": wd, "ratio": 1.0, "scaled": False}
    with torch.device("meta"):
        reference = build_model(
            cfg.model_copy(update={"model": cfg.model.model_copy(update={"conv": None})})
        )
    ratio = compression_ratio(model, reference)
    groups, plan = scaled_decay_groups(model, wd, ratio, enabled=cfg.compress.scaled_decay)
    return groups, plan.as_dict() | {"scaled": cfg.compress.scaled_decay}


def _write_summary(
    run_dir: Path,
    summary: dict[str, Any],
    model: nn.Module,
    cfg: ExperimentConfig,
    setup: float,
    resumed: bool,
    write: bool = True,
) -> dict[str, Any]:
    summary = {
        "name": cfg.name,
        "run_id": config_hash(cfg),
        **summary,
        "params": sum(p.numel() for p in model.parameters()),
        "setup_time": setup,
        "resumed": resumed,
    }
    if write:
        atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
