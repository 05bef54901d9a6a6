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
- clips the result to `clip` and computes the success mask, the per-example distances, the
  final loss and the forward and backward passes the attack used.

Any model's objective: `loss_fn(output, y) -> (N,)` is the per-example loss the attack ascends
and `success_fn(output, y) -> (N,) bool` says where it succeeded (defaults: cross-entropy and
misclassification, `output` the logits). Targeted runs descend `loss_fn(output, target)` and
succeed where `success_fn(output, target)` is False (the default: prediction == target).
Objectives for CTC line recognisers are in `nettle.attack.objectives`. Gradient attacks take
their gradients through `loss_grad`/`input_grad`, which average over `eot_iter` passes through
a randomised model's randomness (EOT, `nettle.attack.eot`), and count every pass.

Shapes: x (N, ...) float, y (N,) class indices (or, with a custom objective, any (N, ...)
labels), target like y or None.

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
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from nettle.attack.eot import seeded_randomness
from nettle.attack.objectives import cross_entropy, margin_loss, misclassified
from nettle.nn.modes import eval_mode, model_device
from nettle.registry import Registry

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "LossFn",
    "SuccessFn",
    "create_attack",
    "cross_entropy",
    "eval_mode",
    "list_attacks",
    "margin_loss",
    "misclassified",
    "per_example_norm",
    "project",
]

log = logging.getLogger(__name__)

ATTACKS: Registry[type[Attack]] = Registry("attack")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SuccessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AttackResult:
    """Adversarial inputs, which of them fool the model, and per-example measurements.

    Attributes:
        x_adv: adversarial inputs (N, ...), on the caller's device, inside the valid range.
        success: (N,) bool; by default untargeted: prediction != label, targeted:
            prediction == target (see `success_fn`).
        linf: (N,) L-infinity distance of `x_adv` to the input.
        l2: (N,) L2 distance.
        l0: (N,) number of changed features.
        loss: (N,) `loss_fn` of the adversarial output to the label (to the target when
            targeted); by default the cross-entropy.
        extras: attack-specific numbers (steps, gradient evaluations, queries, constants...).
        forwards: examples passed forward through the model (a batch of N counts N), including
            the final pass that scores the result when one was needed.
        backwards: examples passed backward (input gradients).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    l0: torch.Tensor
    loss: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    forwards: int = 0
    backwards: int = 0

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


class Attack:
    """Base class: subclasses set `Config` (a dataclass) and write `perturb`.

    Args:
        model: the model to attack; a classifier returning logits (N, K) by default, any model
            with `loss_fn`/`success_fn`. Inputs in the valid range.
        clip: the valid input range (low, high).
        seed: seed of the attack's private generator; None draws a fresh one per call.
        autocast: opt-in fast path: run the attack's forward/backward passes under
            `torch.autocast` with this dtype (e.g. `torch.bfloat16`); the success mask is
            still computed at full precision.
        channels_last: opt-in: hand 4-d inputs to the model in channels-last memory format
            (the model's own parameters are left as they are).
        loss_fn: `(output, y) -> (N,)` per-example loss to ascend (default: cross-entropy).
        success_fn: `(output, y) -> (N,)` bool, where the attack succeeded (default:
            misclassification).
        eot_iter: gradients averaged over this many passes through a randomised model (EOT,
            `nettle.attack.eot`); gradient attacks only.
        generator: a generator on the model's device that every call uses and advances,
            instead of a fresh one seeded from `seed` (a training loop that checkpoints it).
        keep_mode: leave the modules' train/eval flags as they are instead of evaluating in
            eval mode (attacks inside a training step that take batch statistics, as fast
            adversarial training does).
        **config: the attack's options (fields of its `Config`).
    """

    Config: ClassVar[type] = type(None)
    targeted_supported: ClassVar[bool] = True
    supports_eot: ClassVar[bool] = True  # averages its input gradients under eot_iter
    any_objective: ClassVar[bool] = True  # works with any loss_fn/success_fn

    def __init__(
        self,
        model: nn.Module,
        clip: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        *,
        loss_fn: LossFn | None = None,
        success_fn: SuccessFn | None = None,
        eot_iter: int = 1,
        generator: torch.Generator | None = None,
        keep_mode: bool = False,
        **config: Any,
    ) -> None:
        name = type(self).__name__
        names = {f.name for f in dataclasses.fields(self.Config)}
        unknown = [k for k in config if k not in names]
        if unknown:
            raise ValueError(
                f"{name} has no option {', '.join(map(repr, unknown))}; "
                f"options: {', '.join(sorted([*names, 'eot_iter']))}"
            )
        if not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip}")
        if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
            raise ValueError(f"{name} eot_iter must be a whole number >= 1, got {eot_iter!r}")
        if eot_iter > 1 and not self.supports_eot:
            raise ValueError(f"{name} has no EOT mode (eot_iter must be 1)")
        if (loss_fn or success_fn) and not self.any_objective:
            raise ValueError(f"{name} attacks classifiers only (no loss_fn or success_fn)")
        self.model = model
        self.clip = (float(clip[0]), float(clip[1]))
        self.seed = seed
        self.autocast = autocast
        self.channels_last = channels_last
        self.loss_fn: LossFn = loss_fn or cross_entropy
        self.success_fn: SuccessFn = success_fn or misclassified
        self.custom_objective = loss_fn is not None or success_fn is not None
        self.eot_iter = eot_iter
        self.config = self.Config(**config)
        self.generator: torch.Generator | None = generator
        self._own_generator = generator is None
        self.keep_mode = keep_mode
        self._extras: dict[str, Any] = {}
        self._counts = {"forwards": 0, "backwards": 0}
        self._scored: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_no_grad = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, clip={self.clip}, seed={self.seed})"

    @property
    def device(self) -> torch.device:
        """The model's device, where the attack runs."""
        return model_device(self.model)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> AttackResult:
        """Attack the batch `x` with labels `y` (and `target` labels when targeted)."""
        x0, y0, t0 = self._prepare(x, y, target)
        with self._mode():
            x_adv = self._perturb(x0, y0, t0)
            output = self._scored_output(x_adv)
            if output is None:
                with torch.no_grad():
                    output = self.forward(x_adv)
        home = x.device
        cls = t0 if t0 is not None else y0
        delta = (x_adv - x0).flatten(1)
        return AttackResult(
            x_adv=x_adv.contiguous().to(home),
            success=self.success(output, y0, t0).to(home),
            linf=delta.abs().amax(1).to(home),
            l2=delta.norm(dim=1).to(home),
            l0=(delta != 0).sum(1).to(home),
            loss=self.loss_fn(output.float(), cls).detach().to(home),
            extras={
                k: v.to(home) if isinstance(v, torch.Tensor) else v for k, v in self._extras.items()
            },
            **self._counts,
        )

    def generate(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Only the adversarial inputs, on the caller's device: no success mask, distances or
        scoring pass (for training loops, which need nothing else)."""
        x0, y0, t0 = self._prepare(x, y, target)
        with self._mode():
            return self._perturb(x0, y0, t0).contiguous().to(x.device)

    def _mode(self) -> Any:
        return nullcontext() if self.keep_mode else eval_mode(self.model)

    def _prepare(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Check the inputs, move them to the model's device, reset the generator and counts."""
        self._check_inputs(x, y, target)
        dev = self.device
        x0, y0 = x.detach().to(dev), y.to(dev)
        if self.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        if self._own_generator:
            self.generator = torch.Generator(device=dev)
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            else:
                self.generator.seed()
        self._extras, self._scored = {}, None
        self._counts = {"forwards": 0, "backwards": 0}
        return x0, y0, target.to(dev) if target is not None else None

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        fast = torch.autocast(x.device.type, self.autocast) if self.autocast else nullcontext()
        with torch.enable_grad(), fast:
            return self.perturb(x, y, target).detach().clamp(*self.clip)

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Return adversarial versions of `x` (the base class clips them to the range)."""
        raise NotImplementedError

    def record(self, **extras: Any) -> None:
        """Store attack-specific numbers for this call's `AttackResult.extras`."""
        self._extras.update(extras)

    def scored(self, x: torch.Tensor, output: torch.Tensor) -> None:
        """Tell the base that `output` is the model's full-precision output at exactly `x`, so
        that, when `perturb` returns `x`, the success mask needs no extra forward pass."""
        self._scored = (x.detach(), output.detach())

    def _scored_output(self, x_adv: torch.Tensor) -> torch.Tensor | None:
        if self._scored is None or self.autocast or self.eot_iter > 1:
            return None
        x, output = self._scored
        return output if x.shape == x_adv.shape and torch.equal(x, x_adv) else None

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        if target is not None and not self.targeted_supported:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        if x.dim() < 2 or not x.is_floating_point():
            raise ValueError(f"x must be a float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
        for name, t in (("y", y), ("target", target)):
            if t is None:
                continue
            if self.custom_objective and (t.dim() < 1 or t.shape[0] != x.shape[0]):
                raise ValueError(f"{name} must hold one label per example ({len(x)}, ...)")
            if not self.custom_objective and (t.shape != x.shape[:1] or t.is_floating_point()):
                raise ValueError(f"{name} must be class indices of shape ({len(x)},)")
        lo, hi = self.clip
        if x.numel() and (x.min() < lo - 1e-6 or x.max() > hi + 1e-6):
            raise ValueError(
                f"inputs must lie in the valid range [{lo:g}, {hi:g}] (got "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]); normalise inside the model"
            )

    # --- helpers for attacks: every model call goes through them, so passes are counted ----

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output at `x`, counted (under EOT, with the attack's seeded randomness)."""
        self._counts["forwards"] += len(x)
        if self.eot_iter > 1:
            with seeded_randomness(self.generator):
                return self.model(x)
        return self.model(x)

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-example loss to *ascend*: `loss_fn` to the label, or minus it to the target."""
        if target is not None:
            return -self.loss_fn(logits, target)
        return self.loss_fn(logits, y)

    def success(
        self, output: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """(N,) bool: `success_fn` to the label, or its negation to the target."""
        if target is not None:
            return ~self.success_fn(output, target)
        return self.success_fn(output, y)

    def loss_grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient of the summed loss w.r.t. `x` only, the per-example loss and the output.

        With `eot_iter > 1` all three are averaged over that many passes, run with torch's
        global generators seeded from the attack's own (`nettle.attack.eot`). A model that does
        not let gradients reach its input gets a zero gradient (logged once), so the attack
        fails visibly instead of raising; robustness checks then flag masking.
        """
        if self.eot_iter == 1:
            return self._one_grad(x, y, target)
        grad = loss = output = None
        with seeded_randomness(self.generator):
            for _ in range(self.eot_iter):
                g, lo, out = self._one_grad(x, y, target)
                grad = g if grad is None else grad.add_(g)
                loss = lo if loss is None else loss.add_(lo)
                output = out if output is None else output.add_(out)
        k = self.eot_iter
        return grad.div_(k), loss.div_(k), output.div_(k)

    def _one_grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        output = self.model(x)
        loss = self.loss(output, y, target)
        self._counts["forwards"] += len(x)
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
            self._counts["backwards"] += len(x)
        if grad is None:
            if not self._warned_no_grad:
                log.warning("%s: the model gives no input gradient", type(self).__name__)
                self._warned_no_grad = True
            grad = torch.zeros_like(x)
        return grad, loss.detach(), output.detach()

    def input_grad(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed loss w.r.t. `x` only, and the per-example loss (`loss_grad`)."""
        grad, loss, _ = self.loss_grad(x, y, target)
        return grad, loss


def create_attack(name: str, model: nn.Module, **config: Any) -> Attack:
    """Build the attack registered as `name` on `model`.

    Args:
        name: a registered attack (see `list_attacks`), case-insensitive.
        model: the model to attack.
        **config: `clip=`, `seed=`, `loss_fn=`, `success_fn=`, `eot_iter=` and the attack's
            own options.

    Raises:
        UnknownNameError: for an unknown attack name (the message lists the known ones).
        ValueError: for an unknown or invalid option (the message names it).
    """
    return ATTACKS.get(name)(model, **config)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()
