"""Batched adversarial attacks: `create_attack(name, model, **config)(x, y, target=None)`.

One file per attack, each registered in `ATTACKS` with a typed config; `list_attacks()` names
them. Every attack runs on whole minibatches on the model's device and returns an
`AttackResult` (adversarial inputs, success mask, distances, loss, extras).
"""

from nettle.attack.apgd import APGD, APGDConfig
from nettle.attack.apgd_t import APGDT, APGDTConfig
from nettle.attack.autoattack import AutoAttack, AutoAttackConfig, AutoAttackResult, run_autoattack
from nettle.attack.base import ATTACKS, Attack, AttackResult, create_attack, list_attacks
from nettle.attack.cw import CW, CWConfig
from nettle.attack.evaluate import RobustnessResult, evaluate_robustness, format_robustness
from nettle.attack.fab import FAB, FABT, FABConfig, FABTConfig
from nettle.attack.fgsm import FGSM, FGSMConfig
from nettle.attack.jsma import JSMA, JSMAConfig
from nettle.attack.maxconf import MaxConfidence, MaxConfidenceConfig
from nettle.attack.pgd import BIM, PGD, BIMConfig, PGDConfig
from nettle.attack.spsa import SPSA, SPSAConfig
from nettle.attack.square import Square, SquareConfig

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "BIM",
    "CW",
    "FAB",
    "FABT",
    "FGSM",
    "JSMA",
    "PGD",
    "SPSA",
    "APGDConfig",
    "APGDTConfig",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "AutoAttackConfig",
    "AutoAttackResult",
    "BIMConfig",
    "CWConfig",
    "FABConfig",
    "FABTConfig",
    "FGSMConfig",
    "JSMAConfig",
    "MaxConfidence",
    "MaxConfidenceConfig",
    "PGDConfig",
    "RobustnessResult",
    "SPSAConfig",
    "Square",
    "SquareConfig",
    "create_attack",
    "evaluate_robustness",
    "format_robustness",
    "list_attacks",
    "run_autoattack",
]
