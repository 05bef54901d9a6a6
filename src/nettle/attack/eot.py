"""Expectation over transformation (EOT) for randomised models: seeded randomness and detection.

A model that draws random numbers in its forward pass (random input noise, random resizing and
padding, dropout left on) gives a different gradient at every call; one draw's gradient is a
poor ascent direction, and an attack that follows it can report a robustness the model does not
have (Athalye, Carlini & Wagner 2018, "Obfuscated gradients give a false sense of security",
arXiv:1802.00420, section 4.1.2). EOT (Athalye et al. 2018, "Synthesizing robust adversarial
examples", arXiv:1707.07397) ascends the expected loss instead: the gradient averaged over
`eot_iter` forward/backward passes. Every gradient attack takes `eot_iter=` (the base class
averages in `Attack.loss_grad`).

The model's randomness comes from torch's global generators; the attack must not disturb them
and must be reproducible, so each averaged gradient runs inside `seeded_randomness`: the global
generators are forked, seeded from the attack's private generator, and restored afterwards.

`nettle.attack.masking.is_randomised` tells whether a model is randomised; the evaluation flags
one evaluated without EOT.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded_randomness"]


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@contextmanager
def seeded_randomness(generator: torch.Generator) -> Iterator[None]:
    """Run the block with torch's global generators seeded from `generator`, then restore them.

    The seed is drawn from `generator` (advancing it), so a seeded attack sees the same model
    randomness on every run, and the caller's global random state is left as it was.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        yield
