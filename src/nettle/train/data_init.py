"""Data-dependent initialisation: scale each layer to unit output variance on real data.

Layer-sequential unit-variance initialisation (LSUV; Mishkin & Matas, "All you need is a good
init", ICLR 2016, Algorithm 1): for every conv/linear layer in the order of
`model.named_modules()`, run a batch of training examples through the model, measure the
variance of the layer's output and divide the layer's weights by its square root, until the
variance is within `tol` of 1 or `max_iter` passes were made. Departures from the paper: the
model's own initialisation is kept instead of the paper's orthonormal pre-initialisation, and
biases are left as they are (the paper's layers start with zero bias). The forward passes run
in eval mode (BatchNorm uses its running statistics and does not update them; annealed units do
not step), under `no_grad`; only weights change.

`model.init: data` applies it once, when a run starts training (`nettle.experiment.run`); the
report (per layer: total scale, final variance, passes) goes to the run's `summary.json`. A
resumed run loads its checkpoint over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nettle.inspect.activations import eval_mode, model_device, record_layers, run_recorded

__all__ = ["DataInitReport", "data_init", "example_batch"]


@dataclass
class DataInitReport:
    """Per layer: `scale` (product of the factors applied), `variance` (the output variance
    after the last factor), `passes` (forward passes used); `converged`: every layer within
    the tolerance (a layer whose output is constant cannot be scaled and is left out)."""

    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    converged: bool = True
    examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a run's summary."""
        return {"layers": self.layers, "converged": self.converged, "examples": self.examples}


def example_batch(data: Any, n: int, seed: int = 0) -> torch.Tensor:
    """`n` inputs drawn without replacement (seeded) from a dataset of `(x, y)` pairs or a
    tensor of inputs; all of them when it has fewer."""
    size = len(data)
    if size == 0:
        raise ValueError("data init: the training data is empty")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(data, torch.Tensor):
        return data[order]
    return torch.stack([torch.as_tensor(data[int(i)][0]) for i in order])


def _layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def data_init(
    model: nn.Module,
    data: Any,
    batch_size: int = 256,
    tol: float = 0.05,
    max_iter: int = 10,
    seed: int = 0,
) -> DataInitReport:
    """Scale every Conv2d/Linear layer of `model` (in place) to unit output variance.

    Args:
        model: the network (any mode; every module's mode is restored).
        data: training examples, `(x, y)` pairs or a tensor of inputs.
        batch_size: examples in the batch the variances are measured on.
        tol: stop a layer once `|variance - 1| < tol`.
        max_iter: most rescalings per layer (each followed by a measuring pass).
        seed: which examples form the batch.

    Returns:
        What was applied to each layer.
    """
    x = example_batch(data, batch_size, seed).to(model_device(model))
    report = DataInitReport(examples=len(x))
    with eval_mode(model), torch.no_grad():
        for name in _layers(model):
            layer = model.get_submodule(name)
            scale, var, passes = 1.0, float("nan"), 0
            with record_layers(model, [name]) as out:
                while True:
                    run_recorded(model, x, out)
                    var, passes = float(out[name].float().var()), passes + 1
                    if abs(var - 1.0) < tol or not var > 0 or passes > max_iter:
                        break
                    layer.weight.mul_(var**-0.5)
                    scale *= var**-0.5
            if not var > 0:
                continue
            report.layers[name] = {"scale": scale, "variance": var, "passes": passes}
            report.converged &= abs(var - 1.0) < tol
    return report
