"""Batched adversarial attacks: `create_attack(name, model, **config)`, one file per attack."""

from nettle.attack import apgd as _apgd
from nettle.attack import cw as _cw
from nettle.attack import fgsm as _fgsm
from nettle.attack import jsma as _jsma
from nettle.attack import maxconf as _maxconf
from nettle.attack import pgd as _pgd
from nettle.attack import spsa as _spsa
from nettle.attack.base import ATTACKS, Attack, AttackResult, create_attack, list_attacks
from nettle.attack.evaluate import RobustnessResult, evaluate_robustness, format_robustness

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "RobustnessResult",
    "create_attack",
    "evaluate_robustness",
    "format_robustness",
    "list_attacks",
]
del _apgd, _cw, _fgsm, _jsma, _maxconf, _pgd, _spsa
