"""The optimiser of a training config."""

from __future__ import annotations

from typing import Any

import torch

from nettle.config import OptimConfig

__all__ = ["build_optimizer"]


def build_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with `cfg.weight_decay` as the default decay."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
