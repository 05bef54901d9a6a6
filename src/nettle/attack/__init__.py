"""Batched adversarial attacks: `create_attack(name, model, **config)(x, y, target=None)`.

One file per attack, each registered in `ATTACKS` with a typed config; `list_attacks()` names
them. Every attack runs on whole minibatches on the model's device and returns an
`AttackResult` (adversarial inputs, success mask, distances, loss, extras).
"""

from nettle.attack.apgd import APGD, APGDConfig
from nettle.attack.base import ATTACKS, Attack, AttackResult, create_attack, list_attacks
from nettle.attack.cw import CW, CWConfig
from nettle.attack.evaluate import RobustnessResult, evaluate_robustness, format_robustness
from nettle.attack.fgsm import FGSM, FGSMConfig
from nettle.attack.jsma import JSMA, JSMAConfig
from nettle.attack.maxconf import MaxConfidence, MaxConfidenceConfig
from nettle.attack.pgd import BIM, PGD, BIMConfig, PGDConfig
from nettle.attack.spsa import SPSA, SPSAConfig

__all__ = [
    "APGD",
    "ATTACKS",
    "BIM",
    "CW",
    "FGSM",
    "JSMA",
    "PGD",
    "SPSA",
    "APGDConfig",
    "Attack",
    "AttackResult",
    "BIMConfig",
    "CWConfig",
    "FGSMConfig",
    "JSMAConfig",
    "MaxConfidence",
    "MaxConfidenceConfig",
    "PGDConfig",
    "RobustnessResult",
    "SPSAConfig",
    "create_attack",
    "evaluate_robustness",
    "format_robustness",
    "list_attacks",
]
