"""The attack protocol: a thin base class, its result, the registry and the factory.

An attack is built with `create_attack(name, model, **config)` and called as
`attack(x, y, target=None) -> AttackResult`. Subclasses write only `perturb(x, y, target)`; the
base class puts the model in eval mode (and restores its mode, also on errors), moves inputs to
the model's device and the result back to the caller's, clips to the valid input range, leaves
the model's parameters and their gradients untouched (gradients are taken with respect to the
input only), seeds a private generator for determinism, and computes the success mask
(untargeted: prediction != label; targeted: prediction == target).

Inputs are images in the valid range `clip` (default [0, 1]; models normalise inside).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nettle.registry import Registry

__all__ = ["ATTACKS", "Attack", "AttackResult", "create_attack", "list_attacks"]

ATTACKS: Registry[type[Attack]] = Registry("attack")


@dataclass
class AttackResult:
    """Adversarial inputs, which of them fool the model, and attack-specific extras."""

    x_adv: torch.Tensor
    success: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


class Attack:
    """Base class; subclasses set `Config` (a dataclass) and write `perturb`."""

    Config: ClassVar[type] = type(None)
    targeted_supported: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        clip: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        **config: Any,
    ) -> None:
        names = {f.name for f in dataclasses.fields(self.Config)}
        unknown = [k for k in config if k not in names]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no option {', '.join(map(repr, unknown))}; "
                f"options: {', '.join(sorted(names))}"
            )
        self.model = model
        self.clip = clip
        self.seed = seed
        self.config = self.Config(**config)
        self.generator: torch.Generator | None = None

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> AttackResult:
        if target is not None and not self.targeted_supported:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        home, dev = x.device, self.device
        x0, y0 = x.detach().to(dev), y.to(dev)
        t0 = target.to(dev) if target is not None else None
        self.generator = torch.Generator(device=dev)
        if self.seed is not None:
            self.generator.manual_seed(self.seed)
        else:
            self.generator.seed()
        was_training = self.model.training
        self.model.eval()
        try:
            x_adv = self.perturb(x0, y0, t0).detach().clamp(*self.clip)
            with torch.no_grad():
                pred = self.model(x_adv).argmax(1)
        finally:
            self.model.train(was_training)
        success = pred == t0 if t0 is not None else pred != y0
        return AttackResult(x_adv.to(home), success.to(home), self.extras())

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Return adversarial versions of `x` (the base class clips them)."""
        raise NotImplementedError

    def extras(self) -> dict[str, Any]:
        """Attack-specific numbers for the result (queries, steps...)."""
        return {}

    # --- helpers for gradient attacks ----------------------------------------------------

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
        """Gradient of the summed loss w.r.t. `x` only, and the per-example loss."""
        x = x.detach().requires_grad_(True)
        loss = self.loss(self.model(x), y, target)
        if not loss.requires_grad:  # the model does not let gradients reach its input
            return torch.zeros_like(x), loss.detach()
        (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        return (torch.zeros_like(x) if grad is None else grad), loss.detach()


def create_attack(name: str, model: nn.Module, **config: Any) -> Attack:
    """Build the attack registered as `name` on `model` (`clip=`, `seed=` and its options)."""
    return ATTACKS.get(name)(model, **config)


def list_attacks() -> list[str]:
    """Registered attack names."""
    return ATTACKS.names()
