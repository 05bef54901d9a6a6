import math

import torch

from nettle.config import TrainConfig
from nettle.models import create_model
from nettle.train.data import create_dataset, get_dataset_info
from nettle.train.loop import Trainer, build_optimizer
from nettle.train.lr_find import lr_find, plot_lr_find


def _model():
    info = get_dataset_info("digits")
    torch.manual_seed(0)
    return create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std, width=8)


def test_range_test_restores_everything_and_suggests_a_working_lr(tmp_path):
    data = create_dataset("digits")
    model = _model()
    cfg = TrainConfig(epochs=3, device="cpu", tensorboard=False, schedule={"name": "cosine"})
    opt = build_optimizer(model.parameters(), cfg.optim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_find(model, opt, data, num_iter=60, end_lr=10.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.state_dict()["state"] == {} and torch.equal(torch.get_rng_state(), rng)
    assert math.isfinite(result.max_lr) and result.max_lr < result.min_loss_lr
    assert result.lrs[0] == 1e-7 and all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert result.base_lr == result.max_lr / 4
    # training from the suggestion converges
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": result.max_lr})})
    trainer = Trainer(_model(), data, create_dataset("digits", "test"), cfg, batch_size=64)
    assert trainer.fit()["final"]["test_acc"] >= 0.9
    fig = plot_lr_find(result)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "learning rate"
    fig.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_range_test_restores_a_used_optimiser_state_and_parameters():
    data = create_dataset("digits")
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.tensors
    for i in range(3):  # moments and step counts that the test must not disturb
        loss = torch.nn.functional.cross_entropy(
            model(x[64 * i : 64 * (i + 1)]), y[64 * i : 64 * (i + 1)]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    result = lr_find(model, opt, data, num_iter=30, end_lr=1.0)
    assert len(result.lrs) >= 10 and opt.param_groups[0]["lr"] == 1e-3
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    assert len(opt.state) == len(state)
    for p, s in opt.state.items():
        assert p in set(model.parameters())  # the state still belongs to the model's tensors
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]), k
    # the restored optimiser still trains the model
    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(model(x[:256]), y[:256]))
    for i in range(5):
        loss = torch.nn.functional.cross_entropy(
            model(x[64 * i : 64 * (i + 1)]), y[64 * i : 64 * (i + 1)]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(torch.nn.functional.cross_entropy(model(x[:256]), y[:256])) < before
