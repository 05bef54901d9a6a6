import torch

from nettle.models.darts import DARTS, drop_path


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_darts_shapes_aux_head_and_attention_points():
    torch.manual_seed(0)
    model = DARTS(conv="Conv", channels=8, layers=5, auxiliary=True, drop_path_prob=0.2)
    assert model.reduction_indices == [1, 3]
    assert model.at_layers == ["cells.0", "cells.2"]
    x = torch.rand(2, 3, 32, 32)
    out = model.train()(x)
    assert out.shape == (2, 10) and model.aux_logits.shape == (2, 10)
    model.eval()
    assert model(x).shape == (2, 10) and model.aux_logits is None
    (out.sum() + 0).backward()
    names = dict(model.named_modules())
    assert all(n in names for n in model.at_layers)


def test_drop_path_keeps_or_zeroes_whole_examples():
    torch.manual_seed(0)
    x = torch.ones(1000, 2, 2)
    y = drop_path(x, 0.2, training=True)
    per_example = y.flatten(1)
    assert set(per_example.unique().tolist()) <= {0.0, 1.25}
    assert 0.15 < (per_example[:, 0] == 0).float().mean().item() < 0.25
    assert torch.equal(drop_path(x, 0.2, training=False), x)


def test_darts_sep_has_the_published_parameter_count():
    # Gray et al. 2019 (count.py): 3,349,342 parameters, auxiliary head off
    assert _params(DARTS(num_classes=10)) == 3_349_342


def test_drop_path_schedule_and_auxiliary_loss():
    from nettle.measure.timing import PhaseTimer
    from nettle.train.objectives import CrossEntropy

    torch.manual_seed(0)
    model = DARTS(conv="Conv", channels=8, layers=5, auxiliary=True, drop_path_prob=0.2)
    model.on_epoch_start(5, 10)
    assert model.drop_path_prob == 0.1
    out = CrossEntropy()(
        model.train(), torch.rand(2, 3, 32, 32), torch.tensor([1, 2]), PhaseTimer()
    )
    assert "aux" in out.parts
    expected = (
        torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 2])) + 0.4 * out.parts["aux"]
    )
    torch.testing.assert_close(out.loss, expected)
