"""The attack protocol: a thin base class, its result, the registry and the factory.

An attack is built with `create_attack(name, model, **config)` and called as
`attack(x, y, target=None) -> AttackResult`. Subclasses write only `perturb(x, y, target)`; the
base class

- validates the config (a dataclass owned by the attack; an unknown key is an error naming it)
  and the inputs (x in the valid range `clip`, default [0, 1], models normalise inside);
- puts the model in eval mode and restores every module's previous mode, also on errors;
- moves the inputs to the model's device and the result back to the caller's device;
- runs with gradients enabled (also under a caller's `torch.no_grad()`), taking gradients with
  respect to the input only (`torch.autograd.grad`), so parameters, their `requires_grad` and
  their `.grad` are never touched;
- seeds a private `torch.Generator` (never the global RNG) from `seed`, for determinism;
- clips the result to `clip` and computes the success mask (untargeted: prediction != label;
  targeted: prediction == target), the per-example distances and the final loss.

Shapes: x (N, ...) float, y (N,) class indices, target (N,) class indices or None.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from nettle.attack import create_attack
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> result = create_attack("fgsm", model, eps=0.1)(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
    >>> result.x_adv.shape, result.success.dtype, float(result.linf.max()) <= 0.1 + 1e-6
    (torch.Size([2, 1, 2, 2]), torch.bool, True)
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nettle.registry import Registry

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "create_attack",
    "list_attacks",
    "margin_loss",
    "per_example_norm",
    "project",
]

log = logging.getLogger(__name__)

ATTACKS: Registry[type[Attack]] = Registry("attack")


@dataclass
class AttackResult:
    """Adversarial inputs, which of them fool the model, and per-example measurements.

    Attributes:
        x_adv: adversarial inputs (N, ...), on the caller's device, inside the valid range.
        success: (N,) bool; untargeted: prediction != label, targeted: prediction == target.
        linf: (N,) L-infinity distance of `x_adv` to the input.
        l2: (N,) L2 distance.
        l0: (N,) number of changed features.
        loss: (N,) cross-entropy of the adversarial logits to the label (to the target when
            targeted).
        extras: attack-specific numbers (steps, gradient evaluations, queries, constants...).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    l0: torch.Tensor
    loss: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of examples on which the attack succeeded."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def per_example_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example `linf` or `l2` norm of (N, ...) as (N, 1, ..., 1), ready to broadcast."""
    flat = v.flatten(1)
    out = flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
    return out.view(-1, *([1] * (v.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations (N, ...) onto the `norm` ball of radius `eps`, per example."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * torch.clamp(eps / (per_example_norm(delta, "l2") + 1e-12), max=1.0)


def margin_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-example logit margin, negative exactly when the attack succeeds.

    Untargeted: `Z_y - max_{i != y} Z_i`; targeted: `max_{i != t} Z_i - Z_t`. The "other" logit
    excludes the class with -inf, so it stays right when every logit is negative.
    """
    cls = target if target is not None else y
    onehot = F.one_hot(cls, logits.shape[1]).bool()
    real = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.masked_fill(onehot, float("-inf")).amax(1)
    return other - real if target is not None else real - other


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class Attack:
    """Base class: subclasses set `Config` (a dataclass) and write `perturb`.

    Args:
        model: a classifier returning logits (N, K) for inputs in the valid range.
        clip: the valid input range (low, high).
        seed: seed of the attack's private generator; None draws a fresh one per call.
        autocast: opt-in fast path: run the attack's forward/backward passes under
            `torch.autocast` with this dtype (e.g. `torch.bfloat16`); the success mask is
            still computed at full precision.
        channels_last: opt-in: hand 4-d inputs to the model in channels-last memory format
            (the model's own parameters are left as they are).
        **config: the attack's options (fields of its `Config`).
    """

    Config: ClassVar[type] = type(None)
    targeted_supported: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        clip: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        **config: Any,
    ) -> None:
        names = {f.name for f in dataclasses.fields(self.Config)}
        unknown = [k for k in config if k not in names]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no option {', '.join(map(repr, unknown))}; "
                f"options: {', '.join(sorted(names))}"
            )
        if not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip}")
        self.model = model
        self.clip = (float(clip[0]), float(clip[1]))
        self.seed = seed
        self.autocast = autocast
        self.channels_last = channels_last
        self.config = self.Config(**config)
        self.generator: torch.Generator | None = None
        self._extras: dict[str, Any] = {}
        self._warned_no_grad = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, clip={self.clip}, seed={self.seed})"

    @property
    def device(self) -> torch.device:
        """The model's device, where the attack runs."""
        return _model_device(self.model)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> AttackResult:
        """Attack the batch `x` with labels `y` (and `target` classes when targeted)."""
        self._check_inputs(x, y, target)
        home, dev = x.device, self.device
        x0, y0 = x.detach().to(dev), y.to(dev)
        if self.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        t0 = target.to(dev) if target is not None else None
        self.generator = torch.Generator(device=dev)
        if self.seed is not None:
            self.generator.manual_seed(self.seed)
        else:
            self.generator.seed()
        self._extras = {}
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            fast = torch.autocast(dev.type, self.autocast) if self.autocast else nullcontext()
            with torch.enable_grad(), fast:
                x_adv = self.perturb(x0, y0, t0).detach().clamp(*self.clip)
            with torch.no_grad():
                logits = self.model(x_adv)
        finally:
            _restore_modes(self.model, modes)
        cls = t0 if t0 is not None else y0
        success = logits.argmax(1) == cls if t0 is not None else logits.argmax(1) != y0
        delta = (x_adv - x0).flatten(1)
        return AttackResult(
            x_adv=x_adv.contiguous().to(home),
            success=success.to(home),
            linf=delta.abs().amax(1).to(home),
            l2=delta.norm(dim=1).to(home),
            l0=(delta != 0).sum(1).to(home),
            loss=F.cross_entropy(logits.float(), cls, reduction="none").to(home),
            extras={
                k: v.to(home) if isinstance(v, torch.Tensor) else v for k, v in self._extras.items()
            },
        )

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Return adversarial versions of `x` (the base class clips them to the range)."""
        raise NotImplementedError

    def record(self, **extras: Any) -> None:
        """Store attack-specific numbers for this call's `AttackResult.extras`."""
        self._extras.update(extras)

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        if target is not None and not self.targeted_supported:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        if x.dim() < 2 or not x.is_floating_point():
            raise ValueError(f"x must be a float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
        for name, t in (("y", y), ("target", target)):
            if t is not None and (t.shape != x.shape[:1] or t.is_floating_point()):
                raise ValueError(f"{name} must be class indices of shape ({len(x)},)")
        lo, hi = self.clip
        if x.numel() and (x.min() < lo - 1e-6 or x.max() > hi + 1e-6):
            raise ValueError(
                f"inputs must lie in the valid range [{lo:g}, {hi:g}] (got "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]); normalise inside the model"
            )

    # --- helpers for gradient attacks -------------------------------------------------------

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-example loss to *ascend*: CE to the label, or minus CE to the target."""
        if target is not None:
            return -F.cross_entropy(logits, target, reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    def input_grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed loss w.r.t. `x` only, and the per-example loss.

        A model that does not let gradients reach its input gets a zero gradient (logged once),
        so the attack fails visibly instead of raising; robustness checks then flag masking.
        """
        x = x.detach().requires_grad_(True)
        loss = self.loss(self.model(x), y, target)
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        if grad is None:
            if not self._warned_no_grad:
                log.warning("%s: the model gives no input gradient", type(self).__name__)
                self._warned_no_grad = True
            grad = torch.zeros_like(x)
        return grad, loss.detach()


def _restore_modes(model: nn.Module, modes: list[tuple[nn.Module, bool]]) -> None:
    """Restore each module's train/eval flag (the top-level `train()` runs first)."""
    model.train(modes[0][1])
    for module, training in modes:
        module.training = training


def create_attack(name: str, model: nn.Module, **config: Any) -> Attack:
    """Build the attack registered as `name` on `model`.

    Args:
        name: a registered attack (see `list_attacks`), case-insensitive.
        model: the classifier to attack.
        **config: `clip=`, `seed=` and the attack's own options.

    Raises:
        UnknownNameError: for an unknown attack name (the message lists the known ones).
        ValueError: for an unknown or invalid option (the message names it).
    """
    return ATTACKS.get(name)(model, **config)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()
