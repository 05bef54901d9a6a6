"""A model from a config, and a trained model from a run dir, a checkpoint or weights.

`build_model(cfg)` builds the network an `ExperimentConfig` describes: the zoo model (or a
foreign one by reference, `nettle.models.references`) with its substitute, classes, channels
and normalisation defaulting to the data set's, starting from `model.weights` (checked by
`model.verify`; `nettle.models.weights`), activations replaced and blocks checkpointed as
asked; with a `bayes:` section its layers are made Bayesian (`bayes.convert`,
`nettle.compress.bayes_convert`). `resolve_weights` checks the weights when a run is planned
and pins their sha256.
`load_run_model` and `load_teacher` rebuild a trained one from the config stored beside (or
inside) its checkpoint, loaded with `weights_only=True`; `load_teacher` also builds a teacher
named by model reference from a weights file (`distill.teacher` + `distill.teacher_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nettle.compress.bayes_convert import prepare_bayesian
from nettle.config import ConfigError, ExperimentConfig, ModelConfig, load_config, load_config_dict
from nettle.models.factory import MODELS, create_model
from nettle.models.references import is_reference
from nettle.models.units import add_sigmoid_output, apply_units, unit_rules
from nettle.models.weights import file_sha256, load_pretrained
from nettle.train.checkpoint import load_checkpoint
from nettle.train.data import get_dataset_info

__all__ = [
    "build_model",
    "check_teacher",
    "load_run_model",
    "load_teacher",
    "resolve_weights",
]


def build_model(cfg: ExperimentConfig, pretrained: bool = True) -> nn.Module:
    """The model of `cfg`; classes, channels and normalisation default to the data set's.

    `model.kwargs` may set `mean` and `std` itself (null for no normalisation); otherwise the
    data set's are used when the model takes the data set's number of channels. With
    `pretrained` (and not on the meta device) `model.weights` are loaded and verified; what
    was loaded is the model's `weights_report` attribute (a dict, for the run's summary).
    """

    info = get_dataset_info(cfg.data.name, cfg.data.root, cfg.data.image_size)
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.maxout:
        kwargs["maxout"] = cfg.model.maxout
    in_channels = cfg.model.in_channels or info.in_channels
    same = in_channels == info.in_channels
    model = create_model(
        cfg.model.name,
        num_classes=cfg.model.num_classes or info.num_classes,
        in_channels=in_channels,
        conv=cfg.model.conv,
        mean=kwargs.pop("mean", info.mean if same else None),
        std=kwargs.pop("std", info.std if same else None),
        **kwargs,
    )
    report = load_pretrained(model, cfg.model) if pretrained else None
    if report is not None:
        model.weights_report = report.to_dict()  # type: ignore[assignment]
    if cfg.bayes is not None:  # after the weights: they become the Bayesian means
        conversion = prepare_bayesian(model, cfg.bayes, cfg.model.name)
        if conversion is not None:
            model.bayes_conversion = conversion.to_dict()  # type: ignore[assignment]
    rules = unit_rules(cfg.model)
    if rules:  # logic-inspired units by layer; the report goes to the run's summary
        example = torch.rand(2, in_channels, *info.image_size)
        model.units_report = apply_units(model, rules, example).to_dict()  # type: ignore[assignment]
    if cfg.model.output == "sigmoid":
        add_sigmoid_output(model)
    if cfg.model.checkpoint_blocks:
        from nettle.nn.checkpointing import checkpoint_blocks

        checkpoint_blocks(model)
    return model


def load_teacher(
    path: str | Path, weights: str | Path | None = None, cfg: ExperimentConfig | None = None
) -> nn.Module:
    """A trained model from a run dir or a checkpoint file (which holds its config), or the
    model named `path` (a zoo name or reference) built for `cfg`'s data with `weights`.

    Raises:
        FileNotFoundError: `path` is neither a file, a folder nor a model with `weights`.
        ValueError: the weights do not fit or cannot be read (one line naming the file).
    """
    if weights is not None:
        if Path(path).exists():
            raise ValueError(
                f"distill.teacher_weights: {path} is a run dir or checkpoint with its own "
                "weights; teacher_weights go with a model name such as torchvision:resnet18"
            )
        return _teacher_from_weights(str(path), weights, cfg)
    path = Path(path)
    if path.is_dir():
        return load_run_model(path)
    if not path.is_file():
        what = "is neither a run dir nor a checkpoint" if path.exists() else "does not exist"
        hint = "; a model name needs distill.teacher_weights" if _is_model_name(path) else ""
        raise FileNotFoundError(f"distill.teacher: {path} {what}{hint}")
    ckpt = load_checkpoint(path)
    if not ckpt.get("config"):
        raise ValueError(f"{path}: the checkpoint holds no config to rebuild the teacher from")
    model = build_model(load_config_dict(ckpt["config"], source=str(path)), pretrained=False)
    _load_weights(model, ckpt["model"], path)
    return model.eval()


def _is_model_name(name: str | Path) -> bool:
    text = str(name).strip().lower()
    return is_reference(text) or text in MODELS or text.startswith("wrn-")


def _teacher_from_weights(
    name: str, weights: str | Path, cfg: ExperimentConfig | None
) -> nn.Module:
    """The model `name` for `cfg`'s data (its classes, channels, normalisation) + `weights`."""
    if cfg is None:
        raise ValueError(f"distill.teacher: {name}: a teacher by model name needs the run's config")
    teacher_cfg = cfg.model_copy(update={"model": ModelConfig(name=name), "distill": None})
    model = build_model(teacher_cfg)
    report = load_pretrained(
        model, ModelConfig(name=name, weights=str(weights)), "distill.teacher_weights"
    )
    if report is not None:
        model.weights_report = report.to_dict()  # type: ignore[assignment]
    return model.eval()


def check_teacher(cfg: ExperimentConfig) -> None:
    """Refuse a `distill.teacher` that cannot be loaded, before any file of the run is written.

    A run dir or checkpoint must exist (it is read when training starts); a teacher named by
    model is built and its `teacher_weights` loaded now.

    Raises:
        ConfigError, FileNotFoundError, UnknownNameError: one line naming the field.
    """
    dist = cfg.distill
    if dist is None:
        return
    if dist.teacher_weights is None and Path(dist.teacher).is_dir():
        return  # a run dir: its config and checkpoint are read when training starts
    try:
        load_teacher(dist.teacher, dist.teacher_weights, cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_weights(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with `model.weights_sha256` filled in, after checking that the weights load and
    pass `model.verify`; unchanged without `model.weights`.

    Call it where a run is planned (beside `resolve_budget`): a bad file is refused before a
    run dir exists, and the digest makes the run's id name the exact weights.

    Raises:
        ConfigError: the file is missing, unreadable, fits nothing, differs from a given
            `weights_sha256`, or fails `model.verify` (one line naming it).
    """
    if cfg.model.weights is None:
        return cfg
    path = Path(cfg.model.weights)
    if not path.is_file():
        raise ConfigError(f"model.weights: {path}: no such file")
    sha = file_sha256(path)
    if cfg.model.weights_sha256 not in (None, sha):
        raise ConfigError(
            f"model.weights: {path} has sha256 {sha[:12]}..., not the "
            f"{cfg.model.weights_sha256[:12]}... of model.weights_sha256"
        )
    resolved = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"weights_sha256": sha})}
    )
    try:
        with torch.device("cpu"):
            build_model(resolved)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return resolved


def _load_weights(model: nn.Module, state: Any, path: Path) -> None:
    """Load a checkpoint's weights into `model`; a mismatch is one line naming the file."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds no model weights (a mapping of tensors)")
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in want.items()
        if k in state and getattr(state[k], "shape", None) != v.shape
    ]
    problems = [
        f"{len(items)} {what} (e.g. {items[0]})"
        for items, what in (
            (missing, "missing"),
            (unexpected, "unexpected"),
            (shaped, "of another shape"),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"{path}: its weights do not fit the model its config describes: "
            f"{'; '.join(problems)}; was it written by another model?"
        )
    model.load_state_dict(state)


def load_run_model(
    run_dir: str | Path,
    cfg: ExperimentConfig | None = None,
    which: str = "best",
    checkpoint: str | Path | None = None,
) -> nn.Module:
    """The trained model of a run dir (`checkpoint`, else `best.pt`, else `last.pt`), in
    eval mode on the CPU."""

    run_dir = Path(run_dir)
    if cfg is None:
        path = run_dir / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config; is {run_dir} a run dir?")
        cfg = load_config(path)
    ckpts = run_dir / "checkpoints"
    order = ["best.pt", "last.pt"] if which == "best" else ["last.pt"]
    found = next((ckpts / n for n in order if (ckpts / n).is_file()), None)
    found = Path(checkpoint) if checkpoint is not None else found
    if found is None:
        raise FileNotFoundError(f"{ckpts}: no checkpoint ({' or '.join(order)})")
    model = build_model(cfg, pretrained=False)
    _load_weights(model, load_checkpoint(found).get("model"), found)
    return model.eval()
