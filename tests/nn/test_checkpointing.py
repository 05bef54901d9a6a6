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


def test_blocks_are_found_through_what_the_model_declares():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    # the zoo network sits behind a Normalize first module: the declaration is still found
    assert checkpoint_blocks(model)[:2] == ["net.layer1.0", "net.layer1.1"]
    assert len(checkpoint_blocks(create_model("resnet18", num_classes=3))) == 8


def test_a_model_of_ones_own_declares_its_blocks():
    class Block(torch.nn.Sequential):
        pass

    class Net(torch.nn.Sequential):
        checkpoint_block_types = (Block,)

    net = Net(Block(torch.nn.Linear(2, 2), torch.nn.Tanh()), torch.nn.Linear(2, 1))
    assert checkpoint_blocks(net) == ["0"]
    assert checkpoint_blocks(torch.nn.Sequential(Block(torch.nn.Linear(2, 2)))) == []


def test_checkpointing_does_not_import_the_zoo():
    import subprocess
    import sys

    code = "import sys, nettle.nn.checkpointing; print('nettle.models' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
