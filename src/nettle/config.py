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
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nettle.safe_yaml import YAMLInputError, load_yaml, load_yaml_file

__all__ = [
    "EXECUTION_KEYS",
    "UNIT_PARAMETERS",
    "AdversarialConfig",
    "AugmentConfig",
    "BayesConfig",
    "BudgetConfig",
    "CompressConfig",
    "ConfigError",
    "CountStageConfig",
    "DataConfig",
    "DistillConfig",
    "EvaluateConfig",
    "ExperimentConfig",
    "FeatureHistoryConfig",
    "InspectStageConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "UnitRule",
    "apply_overrides",
    "config_hash",
    "digest",
    "dump_config",
    "identity",
    "load_config",
    "load_config_dict",
    "section_clash",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the field."""


class _Strict(BaseModel):
    """Base of every config: unknown keys, non-finite floats and silent type changes refused.

    pydantic alone reads `epochs: true` as 1 and `lr: "0.1"` as 0.1; here a value must have
    its field's type already (an integer may stand for a float), so a slip in the YAML is an
    error naming the field instead of a different experiment.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        problem = None if field is None else _coercion_problem(field.annotation, value)
        if problem:
            raise ValueError(problem)
        return value


_SCALARS = (bool, int, float, str)
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar_kinds(annotation: Any) -> set[type] | None:
    """The scalar types a field takes; None when it takes anything (Any, Literal: pydantic's)."""
    if annotation is Any or get_origin(annotation) is Literal:
        return None
    if get_origin(annotation) in (Union, types.UnionType):
        kinds: set[type] = set()
        for arg in get_args(annotation):
            sub = _scalar_kinds(arg)
            if sub is None:
                return None
            kinds |= sub
        return kinds
    return {annotation} if annotation in _SCALARS else set()


def _item_annotation(annotation: Any, index: int) -> Any:
    """The annotation of item `index` of a list or tuple field (Any when unknown)."""
    is_union = get_origin(annotation) in (Union, types.UnionType)
    for option in get_args(annotation) if is_union else (annotation,):
        origin, args = get_origin(option), get_args(option)
        if origin in (list, set, frozenset) and args:
            return args[0]
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
            return args[index] if index < len(args) else Any
    return Any


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the {'integer' if isinstance(value, int) else 'number'} {value}"


def _coercion_problem(annotation: Any, value: Any) -> str | None:
    """Why `value` would only fit `annotation` by a silent change of type, or None."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _coercion_problem(_item_annotation(annotation, i), item)
            if problem:
                return f"item {i}: {problem}"
        return None
    kinds = _scalar_kinds(annotation)
    if not kinds or not isinstance(value, _SCALARS):
        return None
    kind = type(value)
    if kind in kinds or (kind is int and float in kinds) or (kind is float and int in kinds):
        return None  # an int stands for a float; pydantic refuses 2.5 for an int
    if not _would_coerce(value, kinds):
        return None  # pydantic refuses it with its own message
    wanted = " or ".join(_KIND_NAMES[k] for k in _SCALARS if k in kinds)
    return f"expected {wanted}, got {_show(value)}"


_BOOL_WORDS = {"0", "1", "true", "false", "yes", "no", "on", "off", "y", "n", "t", "f"}


def _would_coerce(value: bool | int | float | str, kinds: set[type]) -> bool:
    """Whether pydantic's lax mode would turn `value` into one of `kinds` (not refuse it)."""
    if isinstance(value, bool):
        return bool(kinds & {int, float})
    if isinstance(value, str):
        if bool in kinds and value.strip().lower() in _BOOL_WORDS:
            return True
        try:
            float(value)
        except ValueError:
            return False
        return bool(kinds & {int, float})
    return bool in kinds and value in (0, 1)


class BudgetConfig(_Strict):
    """A whole-network budget for a substitute (`nettle.compress.budget.solve_budget`)."""

    params: float | None = Field(None, gt=0, description="target number of parameters")
    macs: float | None = Field(None, gt=0, description="target multiply-adds for one example")
    setting: float | None = Field(
        None, description="the solved setting (written when the run is planned)"
    )
    achieved: int | None = Field(None, description="what the solved setting achieves")

    @model_validator(mode="after")
    def _one_target(self) -> BudgetConfig:
        if (self.params is None) == (self.macs is None):
            raise ValueError("give exactly one of params or macs, e.g. {params: 20000}")
        return self


class UnitRule(_Strict):
    """One rule of `model.units` (`nettle.models.units`): which layers get which unit.

    Activations (relu, relog, relog1p) and folds (maxout, minmaxout) replace activation
    modules (ReLU, ReLog, ReLog1p); a fold also widens the conv/linear layer before it (and its
    BatchNorm) by its group size. Quadratic, elliptical and spherical units replace plain
    Conv2d/Linear layers, keeping their weights. Layers are module names as in
    `model.named_modules()`; a container selects every layer of the rule's kind inside it.
    """

    unit: Literal[
        "relu", "relog", "relog1p", "maxout", "minmaxout", "quadratic", "elliptical", "spherical"
    ] = Field(description="the unit to put in the selected layers")
    layers: Literal["all"] | list[str] = Field(
        "all", description="'all', or module names (containers select what they hold)"
    )
    last: int | None = Field(None, ge=1, description="only the last k layers of the unit's kind")
    b: float | None = Field(None, gt=1, description="relog: base of the log (10)")
    eps: float | None = Field(None, gt=0, description="relog: added before the log (0.01)")
    c: float | None = Field(None, description="relog: added after the log (2)")
    beta: float | None = Field(None, gt=0, description="relog1p: final strength (2)")
    step: float | None = Field(
        None, ge=0, description="relog1p/elliptical/spherical: annealing per step (0.001)"
    )
    k: int | None = Field(None, ge=1, description="maxout/minmaxout: group size of the max (4)")
    k_min: int | None = Field(None, ge=1, description="minmaxout: group size of the min (2)")
    mode: Literal["max", "min"] | None = Field(None, description="maxout: max (OR) or min (AND)")

    @model_validator(mode="after")
    def _parameters_of_the_unit(self) -> UnitRule:
        own = UNIT_PARAMETERS[self.unit]
        given = [k for k in _UNIT_OPTIONS if getattr(self, k) is not None and k not in own]
        if given:
            takes = ", ".join(own) or "no parameters"
            raise ValueError(f"{given[0]} is not a parameter of {self.unit} (it takes {takes})")
        if self.last is not None and self.layers != "all":
            raise ValueError("give layers (names) or last (a count), not both")
        return self


UNIT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "relu": (),
    "relog": ("b", "eps", "c"),
    "relog1p": ("beta", "step"),
    "maxout": ("k", "mode"),
    "minmaxout": ("k", "k_min"),
    "quadratic": (),
    "elliptical": ("step",),
    "spherical": ("step",),
}
"""The parameters each unit of `UnitRule` takes."""
_UNIT_OPTIONS = ("b", "eps", "c", "beta", "step", "k", "k_min", "mode")


class ModelConfig(_Strict):
    """Which network to build (`nettle.models.create_model`), and the weights it starts from
    (`nettle.models.weights`)."""

    class WeightsMap(_Strict):
        """How the names in a weights file become the model's (applied in this order)."""

        ignore: list[str] = Field(
            default_factory=list, description="drop the file's keys that start with these"
        )
        strip_prefix: str = Field("", description="removed from the keys that start with it")
        rename: dict[str, str] = Field(
            default_factory=dict, description="key prefix -> new prefix (the longest applies)"
        )
        file: str | None = Field(None, description="a YAML mapping of more renames")
        add_prefix: str = Field("", description="put before every key")

    class Verify(_Strict):
        """Outputs the loaded weights must reproduce before the run trains."""

        inputs: str = Field(description="a torch.save file of an input batch")
        outputs: str = Field(description="a torch.save file of the outputs they must give")
        atol: float = Field(1e-3, ge=0, description="the largest absolute difference allowed")

    name: str = Field(
        "simple-cnn",
        description="a zoo name, torchvision:NAME, timm:NAME or package.module:factory",
    )
    num_classes: int | None = Field(None, ge=1, description="default: the data set's")
    in_channels: int | None = Field(None, ge=1, description="default: the data set's")
    conv: str | None = Field(None, description="substitute for the convolutions, e.g. 'Sep'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra model arguments")
    checkpoint_blocks: bool = Field(
        False, description="recompute block activations in the backward pass (saves memory)"
    )
    activation: Literal["relu", "relog", "relog1p"] = Field(
        "relu",
        description="replace every ReLU (nettle.nn.logic); shorthand of units: "
        "[{unit: relog}], so not given with units",
    )
    units: list[UnitRule] = Field(
        default_factory=list,
        description="logic-inspired units per layer, rules in order (nettle.models.units)",
    )
    output: Literal["logits", "sigmoid"] = Field(
        "logits", description="sigmoid: the model outputs sigmoid(logits), one per class"
    )
    init: Literal["default", "data"] = Field(
        "default",
        description="data: scale each conv/linear layer to unit output variance on a batch "
        "of training data before training (LSUV, nettle.train.data_init)",
    )
    init_batch: int = Field(256, ge=2, description="init=data: training examples used")
    init_tol: float = Field(0.05, gt=0, lt=1, description="init=data: allowed |variance - 1|")
    maxout: Literal["", "max", "min", "minmax"] = Field(
        "", description="fold widened conv outputs with max/min (simple-cnn)"
    )
    budget: BudgetConfig | None = Field(
        None,
        description="solve the substitute's setting for this budget when the run is planned "
        "(model.conv names the substitute without a setting, e.g. Generic)",
    )

    weights: str | None = Field(
        None, min_length=1, description="a state dict or nettle checkpoint to start from"
    )
    weights_map: WeightsMap | None = Field(None, description="renames of the file's keys")
    weights_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of model.weights (written when the run is planned)",
    )
    verify: Verify | None = Field(None, description="outputs the weights must reproduce")

    @model_validator(mode="after")
    def _budget_needs_a_substitute(self) -> ModelConfig:
        if self.budget is not None and not self.conv:
            raise ValueError("model.budget needs model.conv naming a substitute, e.g. Generic")
        return self

    @model_validator(mode="after")
    def _activation_or_units(self) -> ModelConfig:
        if self.units and self.activation != "relu":
            raise ValueError(
                f"model.activation={self.activation} is the shorthand of "
                f"units: [{{unit: {self.activation}}}]; give it as a rule of model.units"
            )
        return self

    @model_validator(mode="after")
    def _weight_options_need_weights(self) -> ModelConfig:
        given = [k for k in ("weights_map", "weights_sha256", "verify") if getattr(self, k)]
        if given and not self.weights:
            raise ValueError(f"model.{given[0]} needs model.weights (the file of weights)")
        return self


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
    seed: int = Field(0, ge=0, lt=2**32, description="seed of every random stream (< 2**32)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm (or value)")
    grad_clip_mode: Literal["norm", "value"] = "norm"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    loss: Literal["ce", "sigmoid_mse", "bce", "ctc", "seq2seq", "detection"] = Field(
        "ce",
        description="sigmoid_mse/bce: one independent sigmoid output per class; "
        "ctc: sequence labels (nettle.train.ctc, e.g. crnn on digit-lines); "
        "seq2seq: sequence labels read by a decoder (nettle.train.seq2seq, attention-ocr); "
        "detection: boxes (nettle.train.detection, e.g. tiny-yolo on digit-scenes)",
    )
    strictening: float = Field(
        0.0, ge=0, description="weight of strictening_l1 (shorthand of regularizer, see below)"
    )
    regularizer: Literal[
        "",
        "strictening_l1",
        "strictening_l2",
        "max_fit_l1",
        "max_fit_l2",
        "max_margin_l1",
        "max_margin_l2",
    ] = Field("", description="a logic regulariser (nettle.nn.logic_losses.logic_regularizer)")
    regularizer_weight: float = Field(0.0, ge=0, description="its weight")
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
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="autocast dtype of the forward pass and of the evaluation's attacks "
        "(fp16 adds a gradient scaler); part of the run's identity (nettle.train.precision)",
    )
    channels_last: bool = Field(
        False, description="model and 4-D inputs in channels_last memory format"
    )
    compile: bool = Field(
        False, description="torch.compile the model (eager, with a warning, where it fails)"
    )


class DistillConfig(_Strict):
    """Train as a student of a teacher (`nettle.compress.distill`)."""

    teacher: str = Field(
        description="the teacher's run dir, checkpoint file, or model name (with teacher_weights)"
    )
    teacher_weights: str | None = Field(
        None, min_length=1, description="weights of a teacher given by model name"
    )
    at_layers: list[str | tuple[str, str]] | None = Field(
        None,
        min_length=1,
        description="attention points: names in both nets, or [student, teacher] pairs "
        "(default: the student's own, else the last module of each resolution stage)",
    )
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
    convert: bool = Field(
        False,
        description="replace every nn.Linear/nn.Conv2d (not substitutes) by its group "
        "normal-Jeffreys version, the dense weights as the means (nettle.compress.bayes_convert)",
    )
    clip_var: float | None = Field(
        0.04, gt=0, description="converted layers: the largest weight variance (null: no clip)"
    )
    clip: Literal["first", "all"] = Field(
        "first", description="converted layers clipped: the first (as the authors) or all"
    )
    kl_warmup_epochs: int = Field(
        0, ge=0, description="the KL weight rises linearly from 0 to 1 over these epochs"
    )
    record_every: int = Field(
        1, ge=0, description="record the first layer's weights and log-alpha every N epochs (0: no)"
    )


class AdversarialConfig(_Strict):
    """Adversarial training (`nettle.train.adversarial`); inputs in [0, 1], L-infinity."""

    mode: Literal["madry", "free", "fast"] = "madry"
    eps: float = Field(8 / 255, gt=0)
    alpha: float | None = Field(
        None, gt=0, description="step size (madry: eps/4, fast: 1.25*eps, free: eps)"
    )
    steps: int = Field(7, ge=1, description="madry: PGD steps per example")
    replays: int = Field(4, ge=1, description="free: times each minibatch is replayed")


class CountStageConfig(_Strict):
    """The cost stage of an evaluation (`nettle.measure.count`)."""

    input: list[int] | None = Field(
        None, min_length=1, description="input shape C,H,W of one example (default: the data's)"
    )
    convention: str = Field("default", description="counting convention (nettle count)")

    @model_validator(mode="after")
    def _positive_sizes(self) -> CountStageConfig:
        if self.input is not None and any(n < 1 for n in self.input):
            raise ValueError(f"input sizes must be at least 1, got {self.input}")
        return self


class InspectStageConfig(_Strict):
    """The inspection stage of an evaluation (`nettle.inspect.inspect_run`)."""

    layer: str | None = None
    channels: list[int] | None = None
    top: int = Field(9, ge=1)
    featurevis: bool = False
    steps: int = Field(512, ge=1)
    max_examples: int | None = Field(None, ge=1)
    cam_layer: str | None = Field(
        None, min_length=1, description="Grad-CAM's layer (default: the last nn.Conv2d)"
    )


class DecodeStageConfig(_Strict):
    """Greedy, beam and beam + language-model decoding of a text-line recogniser
    (`nettle.train.decoding`; crnn and attention-ocr runs)."""

    beam_width: int = Field(8, ge=1, le=256, description="hypotheses kept per line")
    lm_order: int = Field(2, ge=1, le=6, description="n of the character n-gram model")
    lm_weight: float = Field(0.5, ge=0, le=10, description="shallow-fusion weight of the LM")
    lm_k: float = Field(0.1, gt=0, le=100, description="additive smoothing of the LM's counts")
    noise_std: float = Field(
        0.0, ge=0, le=1, description="also decode the lines with Gaussian pixel noise (0: no)"
    )


class EvaluateConfig(_Strict):
    """What is measured on a trained run; each stage is cached under its own settings."""

    count: CountStageConfig | None = Field(
        default_factory=CountStageConfig, description="parameters and MACs (null: skip)"
    )
    attacks: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="attack name -> options, e.g. {pgd: {steps: 10}}"
    )
    eps: list[float] = Field(default_factory=list, description="epsilons of every attack")
    limit: int | None = Field(None, ge=1, description="attack only the first N test examples")
    seed: int = Field(0, ge=0, description="seed of the random attacks")
    inspect: InspectStageConfig | None = None
    decode: DecodeStageConfig | None = Field(
        None, description="line accuracy and CER of greedy, beam and beam + LM decoding"
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads of the stages (default: the training's); e.g. 1 when "
        "other jobs share the cores once this one has trained",
    )

    @model_validator(mode="after")
    def _attacks_need_eps(self) -> EvaluateConfig:
        if self.attacks and not self.eps:
            raise ValueError("attacks need eps, e.g. eps: [0.05, 0.1]")
        for name, options in self.attacks.items():
            if not isinstance(options, dict) or "eps" in options:
                raise ValueError(f"attacks.{name}: options must be a mapping without eps")
        if any(not e > 0 or e == float("inf") for e in self.eps):
            raise ValueError(f"eps must be finite numbers above 0, got {self.eps}")
        return self


class FeatureHistoryConfig(_Strict):
    """Feature maps of fixed test inputs recorded while training (`inspect.feature_history`)."""

    layers: list[str] = Field(min_length=1, description="layer names, as in named_modules()")
    epochs: list[int] | None = Field(
        None, description="epochs after which to record (0: before training; null: every one)"
    )
    inputs: int = Field(8, ge=1, le=256, description="the first N examples of the test split")

    @model_validator(mode="after")
    def _epochs_from_zero(self) -> FeatureHistoryConfig:
        if self.epochs is not None and (not self.epochs or min(self.epochs) < 0):
            raise ValueError(f"epochs must be a non-empty list of 0 or more, got {self.epochs}")
        return self


# execution settings: how and where a run executes, not what it computes; left out of its id
# (feature_history only reads the model in eval mode on fixed inputs: the weights are the same)
# (train.channels_last and train.compile run the same float32 computation in another memory
# layout or through generated kernels, as another device does: equal up to rounding, except
# that dropout draws other, equally likely masks; train.precision changes the arithmetic, so
# it stays in the id)
EXECUTION_KEYS = (
    "name",
    "priority",
    "evaluate",
    "feature_history",
    "train.device",
    "train.log_every",
    "train.tensorboard",
    "train.checkpoint_every",
    "train.checkpoint_steps",
    "train.nan_guard",
    "train.nan_guard_grads",
    "train.channels_last",
    "train.compile",
    "data.num_workers",
    "data.eval_batch_size",
    "data.download",
    "bayes.record_every",
)


class ExperimentConfig(_Strict):
    """One run: model + data + training, optionally distilled, compressed or Bayesian."""

    name: str = "run"
    priority: int = Field(0, description="sweeps start runs of higher priority first")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    distill: DistillConfig | None = None
    bayes: BayesConfig | None = None
    adversarial: AdversarialConfig | None = None
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    feature_history: FeatureHistoryConfig | None = None

    @model_validator(mode="after")
    def _name_is_a_path_part(self) -> ExperimentConfig:
        if not self.name or "/" in self.name or self.name in {".", ".."}:
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        return self

    @model_validator(mode="after")
    def _sections_combine(self) -> ExperimentConfig:
        clash = section_clash(self)
        if clash:
            raise ValueError(clash)
        return self


def section_clash(cfg: ExperimentConfig) -> str | None:
    """Why the sections of `cfg` cannot be trained together (one objective per run), or None."""
    t = cfg.train
    on = {
        "distill": cfg.distill is not None,
        "adversarial": cfg.adversarial is not None,
        "bayes": cfg.bayes is not None,
    }
    logic = {
        "train.loss": t.loss in ("sigmoid_mse", "bce"),
        "train.strictening": t.strictening > 0,
        "train.regularizer": bool(t.regularizer),
        "train.negatives": bool(t.negatives),
    }
    if t.strictening > 0 and t.regularizer:
        return "train.strictening is the shorthand of regularizer: strictening_l1; give one"
    if bool(t.regularizer) != (t.regularizer_weight > 0):
        return "train.regularizer and train.regularizer_weight (above 0) go together"
    if cfg.model.output == "sigmoid" and t.loss not in ("sigmoid_mse", "bce"):
        return "model.output=sigmoid needs train.loss sigmoid_mse or bce (not cross-entropy)"
    if t.loss in ("ctc", "seq2seq", "detection"):
        clash = [k for k, v in (on | logic).items() if v and k != "train.loss"]
        clash += ["train.label_smoothing"] if t.label_smoothing > 0 else []
        if clash:
            return f"train.loss={t.loss} cannot be combined with {', '.join(clash)}"
    if on["adversarial"] and (on["distill"] or on["bayes"]):
        return "adversarial training cannot be combined with distill or bayes"
    if on["bayes"] and on["distill"]:
        return "bayes and distill cannot be combined in one run"
    if any(logic.values()) and any(on.values()):
        sections = [k for k, v in on.items() if v]
        logic_keys = "train.loss/strictening/regularizer/negatives"
        return f"{logic_keys} cannot be combined with {', '.join(sections)}"
    if t.negatives and t.loss not in ("sigmoid_mse", "bce"):
        return "train.negatives needs a sigmoid loss (train.loss: sigmoid_mse or bce)"
    return None


def _format_error(
    err: ValidationError, source: str, schema: type[BaseModel] | None = None, most: int = 5
) -> str:
    """One line: `source: field: problem (got value)` for each error, the first `most` of them."""
    parts = []
    errors = err.errors()
    for e in errors[:most]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            known = _known_keys(schema, e["loc"][:-1])
            msg = "unknown key" + (f"; known: {', '.join(known)}" if known else "")
        elif e["type"] != "value_error" and isinstance(e.get("input"), bool | int | float | str):
            msg += f" (got {_yaml_scalar(e['input'])})"
        parts.append(f"{loc}: {msg}")
    if len(errors) > most:
        parts.append(f"and {len(errors) - most} more")
    return " ".join(f"{source}: {'; '.join(parts)}".split())


def _yaml_scalar(value: Any) -> str:
    """A scalar as it would be written in YAML (`true`, `.inf`, `'3'`)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()


def _known_keys(schema: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section of `schema` at `loc` (empty if it is not a config)."""
    model: Any = schema
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        options = get_args(field.annotation) or (field.annotation,)
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _plain_copy(value: Any, source: str, where: str = "") -> Any:
    """A deep copy of YAML/JSON data; dates, bytes, sets and non-string keys are refused."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"{source}: {where or '(top level)'}: key {key!r} is not a string; quote it"
                )
            out[key] = _plain_copy(item, source, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, list | tuple):
        return [_plain_copy(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ConfigError(
        f"{source}: {where or '(top level)'}: a {type(value).__name__} ({value}) is not a "
        "config value; quote it to make it a string"
    )


def apply_overrides(
    tree: dict[str, Any], overrides: list[str], source: str = "<config>"
) -> dict[str, Any]:
    """Apply `key.sub=value` strings to a raw config dict; values are parsed as YAML scalars.

    The result is a deep copy of plain data (mappings with string keys, lists, strings,
    numbers, booleans, null); anything else in `tree` (a YAML date, bytes) raises
    `ConfigError` naming `source` and the key.
    """
    out = _plain_copy(tree, source)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        option = f"--set {item!r}"
        try:
            value = load_yaml(raw, source=option) if raw.strip() else ""
        except YAMLInputError as exc:
            raise ConfigError(str(exc)) from None
        _set_dotted(out, key.strip(), _plain_copy(value, option, key.strip()))
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
    tree = apply_overrides(tree, overrides or [], source)
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, schema)) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    schema: type[BaseModel] = ExperimentConfig,
) -> Any:
    """Load a YAML file into `schema`, applying dotted overrides.

    The file is read by `nettle.safe_yaml.load_yaml_file`: at most 1 MB of UTF-8, no key twice
    in a mapping, bounded nesting and alias expansion.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a config file" if path.is_dir() else "no such config file"
        raise ConfigError(f"{path}: {what}")
    try:
        tree = load_yaml_file(path)
    except (YAMLInputError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    return load_config_dict(tree, overrides, source=str(path), schema=schema)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML text (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def identity(cfg: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that changes a run's results (no `EXECUTION_KEYS`)."""
    tree = (
        cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else json.loads(json.dumps(cfg))
    )
    for key in EXECUTION_KEYS:
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return tree


def digest(data: Any, length: int = 12) -> str:
    """sha256 of the canonical JSON of plain data, cut to `length` hex digits."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def config_hash(cfg: BaseModel | dict[str, Any], length: int = 12) -> str:
    """A run's id: the digest of its config's `identity` (execution settings left out).

    Two configs that differ only in where or how they execute (device, workers, logging,
    names, evaluation) have the same id: they train the same numbers.
    """
    if isinstance(cfg, BaseModel) and not isinstance(cfg, ExperimentConfig):
        return digest(cfg.model_dump(mode="json"), length)
    return digest(identity(cfg), length)
