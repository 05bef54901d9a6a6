import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nettle.config import TrainConfig
from nettle.train.loop import Trainer
from nettle.train.metrics import evaluate
from nettle.train.objectives import ClassificationMetric


class _Lookup(nn.Module):
    """Returns the stored logits row of each example index (input x = the index)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)
        self.unused = nn.Parameter(torch.zeros(1))  # evaluate reads the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.long().flatten()]


def _ranked(labels: list[int], ranks: list[int], classes: int) -> torch.Tensor:
    """Logits (N, classes) where the true class of example i is the ranks[i]-th highest."""
    rows = []
    for y, r in zip(labels, ranks):
        others = [c for c in range(classes) if c != y]
        order = [*others[: r - 1], y, *others[r - 1 :]]  # classes from highest to lowest
        row = torch.empty(classes)
        row[order] = torch.arange(classes, 0, -1, dtype=torch.float32)
        rows.append(row)
    return torch.stack(rows)


def test_ranked_logits_put_the_class_at_its_rank():
    logits = _ranked([4, 0, 9], [1, 3, 6], 10)
    rank = (logits > logits.gather(1, torch.tensor([[4], [0], [9]]))).sum(1) + 1
    assert rank.tolist() == [1, 3, 6]


def test_top1_and_top5_over_ten_classes_in_batches():
    labels, ranks = [4, 0, 9, 2, 7], [1, 3, 6, 1, 6]
    model = _Lookup(_ranked(labels, ranks, 10))
    data = TensorDataset(torch.arange(5).view(5, 1), torch.tensor(labels))
    out = evaluate(model, data, batch_size=2)
    assert out["acc"] == 2 / 5  # ranks 1 and 1
    assert out["top5"] == 3 / 5  # ranks 1, 3, 1; the two at rank 6 miss
    assert set(out) == {"loss", "acc", "top5"}


def test_no_top5_for_five_classes_or_fewer():
    labels, ranks = [0, 3, 1], [1, 3, 5]
    model = _Lookup(_ranked(labels, ranks, 5))
    out = evaluate(model, TensorDataset(torch.arange(3).view(3, 1), torch.tensor(labels)))
    assert out["acc"] == 1 / 3
    assert "top5" not in out


def test_top_k_sums_add_over_shards():
    logits, y = _ranked([1, 2, 3, 4], [1, 6, 5, 2], 8), torch.tensor([1, 2, 3, 4])
    a, b, whole = ClassificationMetric(), ClassificationMetric(), ClassificationMetric()
    a.update(logits[:1], y[:1])
    b.update(logits[1:], y[1:])
    whole.update(logits, y)
    merged = ClassificationMetric()
    merged.sums = {k: a.sums[k] + b.sums[k] for k in a.sums}
    got, want = merged.compute(), whole.compute()
    assert (got["acc"], got["top5"]) == (want["acc"], want["top5"]) == (1 / 4, 3 / 4)
    assert got["loss"] == pytest.approx(want["loss"])
    assert ClassificationMetric(k=1).compute() == {"loss": 0.0, "acc": 0.0}  # nothing seen


@pytest.mark.parametrize("classes", [8, 5])
def test_trainer_records_test_top5_over_five_classes(tmp_path, classes):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(40, 4, generator=g), torch.arange(40) % classes)
    torch.manual_seed(0)
    model = nn.Linear(4, classes)
    cfg = TrainConfig(epochs=2, device="cpu", tensorboard=False, seed=0)
    summary = Trainer(model, data, data, cfg, batch_size=20, run_dir=tmp_path).fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    if classes == 5:
        assert not any("test_top5" in r for r in [*epochs, summary["final"]])
        return
    expected = evaluate(model, data)["top5"]
    assert epochs[-1]["test_top5"] == summary["final"]["test_top5"] == expected
    assert "test_top5" in epochs[0]


def test_evaluation_gives_every_submodule_its_own_mode_back():
    # fine-tuning with a frozen BatchNorm: the model trains, its BatchNorm stays in eval mode
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    model.train()
    model[1].eval()
    stats = model[1].running_mean.clone()
    data = TensorDataset(torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,)))
    result = evaluate(model, data, batch_size=4)
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, stats)
    assert 0.0 <= result["acc"] <= 1.0 and result["loss"] > 0  # evaluated, in eval mode


class _Frozen(nn.Module):
    """A frozen layer plus a trainable parameter that does not change the output."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.requires_grad_(False)
        self.idle = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + 0.0 * self.idle


@pytest.mark.parametrize("limit", [2**22, 50])  # counted at the epoch's end, or every few steps
def test_training_accuracy_counts_every_prediction_of_the_epoch(tmp_path, monkeypatch, limit):
    import nettle.train.loop as loop

    monkeypatch.setattr(loop, "_PENDING_LIMIT", limit)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(45, 4, generator=g), torch.arange(45) % 3)
    torch.manual_seed(0)
    model = _Frozen(nn.Linear(4, 3))  # the predictions never change: a hand count holds
    cfg = TrainConfig(epochs=1, device="cpu", tensorboard=False, seed=0)
    Trainer(model, data, None, cfg, batch_size=8, run_dir=tmp_path).fit()
    (epoch,) = [
        r
        for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "epoch"
    ]
    with torch.no_grad():
        by_hand = (model(data.tensors[0]).argmax(1) == data.tensors[1]).sum().item()
    assert 0 < by_hand < 45 and epoch["train_acc"] == by_hand / 45
