"""Typed configurations, loaded from YAML with errors that name the field and the file.

Every component owns a small pydantic model; `ExperimentConfig` composes them. Unknown keys
are errors (a typo must not be silently ignored). Values can be overridden with dotted keys,
as the CLI's `--set train.epochs=3` does.

Example:
    >>> cfg = load_config_dict({"train": {"epochs": 2}}, overrides=["train.seed=7"])
    >>> cfg.train.epochs, cfg.train.seed
    (2, 7)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AdversarialConfig",
    "AugmentConfig",
    "BayesConfig",
    "CompressConfig",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_hash",
    "dump_config",
    "load_config",
    "load_config_dict",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which network to build (`nettle.models.create_model`)."""

    name: str = "simple-cnn"
    num_classes: int | None = Field(None, ge=1, description="default: the data set's")
    in_channels: int | None = Field(None, ge=1, description="default: the data set's")
    conv: str | None = Field(None, description="substitute for the convolutions, e.g. 'Sep'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra model arguments")
    checkpoint_blocks: bool = Field(
        False, description="recompute block activations in the backward pass (saves memory)"
    )
    activation: Literal["relu", "relog", "relog1p"] = Field(
        "relu", description="replace every ReLU (nettle.nn.logic)"
    )
    maxout: Literal["", "max", "min", "minmax"] = Field(
        "", description="fold widened conv outputs with max/min (simple-cnn)"
    )


class AugmentConfig(_Strict):
    """Training-time augmentations (`nettle.train.augment`); all off by default."""

    crop_padding: int = Field(0, ge=0, description="random crop with this zero padding")
    flip: bool = False
    rotation: float = Field(0.0, ge=0, description="max rotation in degrees")
    cutout: int = Field(0, ge=0, description="side of the square cut out")
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability")
    noise_std: float = Field(0.0, ge=0, description="std of additive Gaussian noise")


class DataConfig(_Strict):
    """Which data set to load (`nettle.train.data.create_dataset`)."""

    name: str = "digits"
    root: str | None = Field(None, description="folder of the files, for file-backed sets")
    image_size: int | None = Field(None, ge=1, description="resize images to this side")
    download: bool = False
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    subset: int | None = Field(
        None, ge=1, description="train on a stratified subset of this many examples (seeded)"
    )


class OptimConfig(_Strict):
    """Optimiser settings."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(_Strict):
    """Learning-rate schedule, stepped once per iteration (`nettle.train.schedules`)."""

    name: Literal["constant", "step", "cosine", "clr", "onecycle"] = "cosine"
    milestones: list[float] = Field(
        default_factory=lambda: [0.3, 0.6, 0.8], description="step: fractions of training"
    )
    gamma: float = Field(0.2, gt=0, description="step: factor at each milestone")
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0, description="cosine/clr: the lowest learning rate")
    max_lr: float | None = Field(
        None, gt=0, description="clr/onecycle: the peak (default optim.lr)"
    )
    cycles: int = Field(1, ge=1, description="clr: number of triangles before annihilation")
    annihilation: float = Field(0.1, ge=0, lt=1, description="clr: final fraction of training")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction spent rising")


class TrainConfig(_Strict):
    """The training loop (`nettle.train.Trainer`)."""

    epochs: int = Field(10, ge=0)
    seed: int = 0
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm (or value)")
    grad_clip_mode: Literal["norm", "value"] = "norm"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    loss: Literal["ce", "sigmoid_mse", "bce", "ctc"] = Field(
        "ce",
        description="sigmoid_mse/bce: one independent sigmoid output per class; "
        "ctc: sequence labels (nettle.train.ctc, e.g. crnn on digit-lines)",
    )
    strictening: float = Field(0.0, ge=0, description="weight of the strictening regulariser")
    negatives: Literal["", "scramble", "overlay"] = Field(
        "", description="add open-world negatives with all-zero targets (sigmoid losses only)"
    )
    negatives_fraction: float = Field(0.25, gt=0, le=1)
    negatives_block: int = Field(2, ge=1, description="scramble: tile side in pixels")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    checkpoint_steps: int | None = Field(
        None, ge=1, description="also checkpoint every N steps inside an epoch"
    )
    keep_best: bool = Field(True, description="keep best.pt by test accuracy")
    snapshots: bool = Field(
        False, description="save the model at every minimum of the LR schedule (snapshot ensembles)"
    )
    nan_guard: bool = Field(True, description="stop cleanly on a NaN/Inf loss")
    nan_guard_grads: bool = Field(
        False, description="also stop on a NaN/Inf gradient norm (free when clipping by norm)"
    )
    deterministic: bool = True
    log_every: int = Field(50, ge=1, description="steps between metric lines")
    tensorboard: bool = True


class DistillConfig(_Strict):
    """Train as a student of a teacher (`nettle.compress.distill`)."""

    teacher: str = Field(description="the teacher's run dir or checkpoint file")
    beta: float = Field(1e3, ge=0, description="attention-transfer weight")
    alpha: float = Field(0.0, ge=0, le=1, description="Hinton KD weight (0: cross-entropy only)")
    temperature: float = Field(4.0, gt=0)
    load_weights: bool = Field(True, description="start from every teacher weight that fits")


class CompressConfig(_Strict):
    """Compression options (`nettle.compress`)."""

    scaled_decay: bool = Field(
        True, description="scale the compressed parameters' weight decay by the compression ratio"
    )


class BayesConfig(_Strict):
    """Bayesian compression training (`nettle.nn.bayesian`, `nettle.compress.bayes`)."""

    threshold: float = Field(-3.0, description="log-alpha pruning threshold")


class AdversarialConfig(_Strict):
    """Adversarial training (`nettle.train.adversarial`); inputs in [0, 1], L-infinity."""

    mode: Literal["madry", "free", "fast"] = "madry"
    eps: float = Field(8 / 255, gt=0)
    alpha: float | None = Field(
        None, gt=0, description="step size (madry: eps/4, fast: 1.25*eps, free: eps)"
    )
    steps: int = Field(7, ge=1, description="madry: PGD steps per example")
    replays: int = Field(4, ge=1, description="free: times each minibatch is replayed")


class ExperimentConfig(_Strict):
    """One run: model + data + training, optionally distilled, compressed or Bayesian."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    distill: DistillConfig | None = None
    bayes: BayesConfig | None = None
    adversarial: AdversarialConfig | None = None

    @model_validator(mode="after")
    def _name_is_a_path_part(self) -> ExperimentConfig:
        if not self.name or "/" in self.name or self.name in {".", ".."}:
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        return self


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(parts)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings to a raw config dict; values are parsed as YAML scalars."""
    out = json.loads(json.dumps(tree))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        _set_dotted(out, key.strip(), value)
    return out


def load_config_dict(
    tree: dict[str, Any] | None,
    overrides: list[str] | None = None,
    source: str = "<config>",
    schema: type[BaseModel] = ExperimentConfig,
) -> Any:
    """Validate a raw dict (after overrides) into `schema`; errors name `source` and the field."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(tree).__name__}")
    tree = apply_overrides(tree, overrides or [])
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    schema: type[BaseModel] = ExperimentConfig,
) -> Any:
    """Load a YAML file (safe loader) into `schema`, applying dotted overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return load_config_dict(tree, overrides, source=str(path), schema=schema)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML text (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(cfg: BaseModel, length: int = 12) -> str:
    """A stable id of a resolved config: sha256 of its canonical JSON."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
