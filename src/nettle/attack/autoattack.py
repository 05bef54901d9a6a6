"""AutoAttack, the parameter-free ensemble (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020, arXiv:2003.01690).

Threat model: white-box classifier (it needs logits), L-infinity or L2 ball of radius `eps`,
inputs in the valid range. The attacks run in the reference's order, each only on the examples
still classified correctly after the ones before (a misclassified clean example counts as broken
from the start); an example's adversarial input is the first one that fooled the model.

Versions, with the settings of the reference code (`pyautoattack`, `AutoAttack._set_version`):
- `standard`: APGD-CE (100 iterations, no restarts), APGD-T (9 target classes, 1 restart
  each), FAB-T (9 target classes, 100 iterations), Square (5000 queries, `p_init` 0.8);
- `rand`, for randomised defences: APGD-CE and APGD-DLR, 1 restart, each gradient averaged
  over `eot_iter = 20` passes (expectation over transformation).

`run_autoattack` returns the robust accuracy after every stage and each stage's seconds; the
registered attack `autoattack` runs the same ensemble through `create_attack`, so it works
wherever an attack name does (`evaluate_robustness`, `nettle attack --attacks autoattack`, the
`evaluate:` section of experiment configs). Shapes: x (N, ...) in the valid range, y (N,).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.attack.base import ATTACKS, Attack, create_attack, eval_mode

__all__ = [
    "EOT_ITER",
    "PRESETS",
    "VERSIONS",
    "AutoAttack",
    "AutoAttackConfig",
    "AutoAttackResult",
    "autoattack_stages",
    "run_autoattack",
    "with_preset",
]

VERSIONS = ("standard", "rand")
PRESETS = {"autoattack-standard": "standard", "autoattack-rand": "rand"}
EOT_ITER = 20  # the reference's passes per gradient in the rand version


@dataclass
class AutoAttackConfig:
    """The ensemble's options; the defaults are the reference's (see the module docstring)."""

    eps: float = 8 / 255
    norm: str = "linf"
    version: str = "standard"
    steps: int = 100
    targets: int = 9
    queries: int = 5000

    def __post_init__(self) -> None:
        self.norm = str(self.norm).lower()
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"AutoAttack norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.version not in VERSIONS:
            raise ValueError(
                f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {self.version!r}"
            )
        if self.eps < 0 or min(self.steps, self.targets) < 1 or self.queries < 0:
            raise ValueError(
                f"AutoAttack needs eps >= 0, steps >= 1, targets >= 1, queries >= 0, got {self}"
            )


def autoattack_stages(
    c: AutoAttackConfig, eot_iter: int = EOT_ITER
) -> list[tuple[str, str, dict[str, Any]]]:
    """The ensemble as (stage name, registered attack, options), in the order it runs; the
    `rand` version's gradients average `eot_iter` passes."""
    ball = {"eps": c.eps, "norm": c.norm}
    if c.version == "rand":
        rand = {**ball, "steps": c.steps, "restarts": 1, "eot_iter": eot_iter}
        return [
            ("apgd-ce", "apgd", {**rand, "loss": "ce"}),
            ("apgd-dlr", "apgd", {**rand, "loss": "dlr"}),
        ]
    return [
        ("apgd-ce", "apgd", {**ball, "steps": c.steps, "loss": "ce", "restarts": 1}),
        ("apgd-t", "apgd-t", {**ball, "steps": c.steps, "targets": c.targets, "restarts": 1}),
        ("fab-t", "fab-t", {**ball, "steps": c.steps, "targets": c.targets, "restarts": 1}),
        ("square", "square", {**ball, "queries": c.queries, "p_init": 0.8, "restarts": 1}),
    ]


@dataclass
class AutoAttackResult:
    """What the ensemble did, accuracies in [0, 1].

    Attributes:
        clean_accuracy: accuracy on the clean inputs.
        accuracy: robust accuracy after each stage, in the order the stages ran.
        seconds: wall time of each stage.
        x_adv: (N, ...) the first adversarial input found per example, else the input.
        robust: (N,) bool, examples no stage broke.
        attacked: examples handed to each stage (those still robust before it).
        forwards, backwards: the model's forward and backward passes (examples) per stage.
    """

    version: str
    norm: str
    eps: float
    clean_accuracy: float
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    attacked: dict[str, int] = field(default_factory=dict)
    forwards: dict[str, int] = field(default_factory=dict)
    backwards: dict[str, int] = field(default_factory=dict)
    x_adv: torch.Tensor | None = None
    robust: torch.Tensor | None = None

    @property
    def robust_accuracy(self) -> float:
        """Robust accuracy after the whole ensemble."""
        return float(self.robust.float().mean()) if self.robust.numel() else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The numbers (no tensors), for JSON."""
        return {
            "version": self.version,
            "norm": self.norm,
            "eps": self.eps,
            "clean_accuracy": self.clean_accuracy,
            "accuracy": dict(self.accuracy),
            "robust_accuracy": self.robust_accuracy,
            "seconds": dict(self.seconds),
            "attacked": dict(self.attacked),
            "forwards": dict(self.forwards),
            "backwards": dict(self.backwards),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_stages(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AutoAttackConfig,
    options: dict[str, Any],
    batch_size: int | None,
    eot_iter: int = EOT_ITER,
) -> AutoAttackResult:
    """Run every stage on the still-robust examples, `batch_size` at a time (None: all)."""
    x_adv, step = x.detach().clone(), batch_size or max(len(x), 1)
    dev = next((t.device for t in model.parameters()), x.device)
    with eval_mode(model), torch.no_grad():
        pred = [model(x[lo : lo + step].to(dev)).argmax(1) for lo in range(0, len(x), step)]
    robust = torch.cat(pred).to(y.device) == y if pred else torch.zeros(0, dtype=torch.bool)
    out = AutoAttackResult(
        config.version, config.norm, config.eps, float(robust.float().mean()) if len(x) else 0.0
    )
    for stage, name, stage_options in autoattack_stages(config, eot_iter):
        todo = robust.nonzero().squeeze(1)
        out.attacked[stage] = len(todo)
        out.forwards[stage] = out.backwards[stage] = 0
        _sync(dev)
        start = time.perf_counter()
        if len(todo):
            attack = create_attack(name, model, **options, **stage_options)
            for lo in range(0, len(todo), step):
                idx = todo[lo : lo + step]
                result = attack(x[idx], y[idx])
                out.forwards[stage] += result.forwards
                out.backwards[stage] += result.backwards
                hit = result.success.to(robust.device)
                x_adv[idx[hit]] = result.x_adv[hit].to(x_adv.device)
                robust[idx[hit]] = False
        _sync(dev)
        out.seconds[stage] = time.perf_counter() - start
        out.accuracy[stage] = float(robust.float().mean()) if len(x) else 0.0
    out.x_adv, out.robust = x_adv, robust
    return out


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "Linf",
    version: str = "standard",
    seed: int | None = 0,
    *,
    clip: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
    eot_iter: int = EOT_ITER,
    **options: Any,
) -> AutoAttackResult:
    """Run the AutoAttack ensemble on (x, y) and report every stage.

    Args:
        model: a classifier returning logits for inputs in `clip`; its modes are restored.
        x: inputs (N, ...) in `clip`; y: labels (N,).
        eps: the ball's radius.
        norm: "Linf" or "L2" (case-insensitive).
        version: "standard" or "rand".
        seed: seed of every stage's random generator (each stage starts from it, as the
            reference reseeds each attack); None draws fresh ones.
        clip: the valid input range.
        batch_size: examples per attack call (None: all still-robust examples at once).
        eot_iter: passes averaged per gradient in the `rand` version (the reference's 20).
        **options: `steps`, `targets`, `queries` (see `AutoAttackConfig`).

    Raises:
        ValueError: for a bad norm, version or option (the message names it).
    """
    config = AutoAttackConfig(eps=eps, norm=norm, version=version, **options)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    return _run_stages(model, x, y, config, {"seed": seed, "clip": clip}, batch_size, eot_iter)


def with_preset(
    attacks: dict[str, dict[str, Any]], preset: str | None
) -> dict[str, dict[str, Any]]:
    """`attacks` with the `preset` ensemble added as the attack "autoattack" (options given for
    "autoattack" in `attacks` are kept; the preset sets its version)."""
    if preset is None:
        return attacks
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return {**attacks, "autoattack": {**attacks.get("autoattack", {}), "version": PRESETS[preset]}}


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """The AutoAttack ensemble as one attack (untargeted; needs logits). Its `rand` version
    averages `eot_iter` passes per gradient: the reference's 20 unless `eot_iter` is given."""

    Config = AutoAttackConfig
    targeted_supported = False
    any_objective = False  # FAB and Square read the logits

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if self.eot_iter > 1 and self.config.version != "rand":
            raise ValueError("AutoAttack runs EOT (eot_iter > 1) in its 'rand' version only")
        eot = self.eot_iter if self.eot_iter > 1 else EOT_ITER
        options = {"seed": self.seed, "clip": self.clip}
        result = _run_stages(self.model, x, y, self.config, options, None, eot)
        self._counts["forwards"] += sum(result.forwards.values())
        self._counts["backwards"] += sum(result.backwards.values())
        self.record(accuracy=result.accuracy, seconds=result.seconds, attacked=result.attacked)
        return result.x_adv
