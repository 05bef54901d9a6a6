import copy

import torch

from nettle.models import create_model
from nettle.nn.checkpointing import checkpoint_blocks


def _grads(model, x):
    torch.manual_seed(1)  # same dropout / drop-path draws in both runs
    model.zero_grad()
    model(x).square().sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_checkpointed_blocks_give_the_same_gradients():
    torch.manual_seed(0)
    base = create_model("wrn-10-2", conv="Hashed_0.5", dropout=0.3).train()
    ckpt = copy.deepcopy(base)
    wrapped = checkpoint_blocks(ckpt)
    assert wrapped == ["block1.0", "block2.0", "block3.0"]  # outermost only
    x = torch.rand(4, 3, 16, 16)
    a, b = _grads(base, x), _grads(ckpt, x)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_darts_drop_path_replays_inside_checkpoints():
    torch.manual_seed(0)
    base = create_model("darts", channels=4, layers=3, drop_path_prob=0.3).train()
    ckpt = copy.deepcopy(base)
    assert len(checkpoint_blocks(ckpt)) == 3
    x = torch.rand(2, 3, 16, 16)
    a, b = _grads(base, x), _grads(ckpt, x)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
