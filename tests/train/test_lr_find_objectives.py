"""The range test trains on the run's own objective: CTC for the CRNN (and training from its
suggestion reads lines), sigmoid-MSE for a logic run, and the Trainer's stepping protocol
(replays, after_step, checkpointed objective state restored)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from nettle.cli import main
from nettle.config import load_config
from nettle.experiment.objective import build_objective
from nettle.experiment.run import run_experiment
from nettle.loss_output import LossOutput
from nettle.measure.timing import PhaseTimer
from nettle.models.build import build_model
from nettle.nn.logic_losses import sigmoid_mse_loss, to_multi_hot
from nettle.train.data import create_dataset
from nettle.train.logic_objective import LogicObjective
from nettle.train.lr_find import lr_find
from nettle.train.objectives import CrossEntropy

EXAMPLE = Path(__file__).parents[2] / "examples" / "digit-lines-crnn.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def _lr_find_cli(config, tmp_path, capsys, *extra):
    """`nettle lr-find CONFIG ... --json -o DIR`: the suggestions and the recorded sweep."""
    out = tmp_path / "lr"
    assert main(["lr-find", str(config), *extra, "--json", "-o", str(out)]) == 0
    found = json.loads(capsys.readouterr().out)
    return found, json.loads((out / "lr_find.json").read_text())


def _crnn_from_its_suggestion(tmp_path, capsys, overrides, lr_find_args):
    """Range test on the CRNN example, then two epochs of its one-cycle schedule peaking at
    the suggested max_lr; returns (the sweep, the run's final metrics)."""
    sets = [a for o in overrides for a in ("--set", o)]
    found, sweep = _lr_find_cli(EXAMPLE, tmp_path, capsys, *lr_find_args, *sets)
    assert sweep["max_lr"] == found["max_lr"] == sweep["min_loss_lr"] / 10
    assert 1e-4 < found["max_lr"] < 1.0
    peak = f"train.schedule.max_lr={found['max_lr']}"
    cfg = load_config(EXAMPLE, [*overrides, "train.epochs=2", "train.tensorboard=false", peak])
    return sweep, run_experiment(cfg, tmp_path / "run")["final"]


def test_lr_find_suggests_a_rate_for_the_ctc_crnn_that_trains_it(tmp_path, capsys):
    """The CTC example (refused before the range test used the run's objective): 2,000 lines,
    batches of 32; two epochs from the suggestion read most unseen lines (measured 73%)."""
    overrides = ["data.batch_size=32", "data.subset=2000"]
    sweep, final = _crnn_from_its_suggestion(
        tmp_path, capsys, overrides, ["--iters", "20", "--start-lr", "1e-4"]
    )
    start = sweep["losses"][0]  # the CTC loss per label of the untrained model (measured 17.6)
    assert start > 5
    assert final["train_loss"] < start / 10 and final["test_loss"] < start / 10
    assert final["test_acc"] > 0.5 and final["test_cer"] < 0.15  # chance: ~0 lines, CER ~1


@pytest.mark.slow
def test_lr_find_on_the_unchanged_crnn_example_then_two_epochs(tmp_path, capsys):
    """The example as it is (batches of 64, all 4,000 lines, the default 100-step sweep):
    max_lr 0.061 measured; after its 126 steps 43% of unseen lines read exactly."""
    sweep, final = _crnn_from_its_suggestion(tmp_path, capsys, [], [])
    assert len(sweep["lrs"]) > 50 and sweep["stopped_early"]
    assert final["train_loss"] < sweep["losses"][0] / 10
    assert final["test_acc"] > 0.25  # chance: ~0


def test_a_sigmoid_mse_range_test_records_the_sigmoid_mse_loss(tmp_path, capsys):
    tree = {
        "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
        "data": {"name": "digits", "batch_size": 32},
        "train": {"device": "cpu", "loss": "sigmoid_mse", "seed": 3},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tree))
    _, sweep = _lr_find_cli(config, tmp_path, capsys, "--iters", "5")
    # the CLI's model, objective and first batch (of the seeded order), built again directly
    cfg = load_config(config)
    torch.manual_seed(3)
    model = build_model(cfg).train()
    data = create_dataset("digits")
    objective, _ = build_objective(cfg, model, data, torch.device("cpu"))
    assert isinstance(objective, LogicObjective)
    first = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))[:32]
    x, y = data.tensors[0][first], data.tensors[1][first]
    with torch.no_grad():
        loss = objective(model, x, y, PhaseTimer()).loss
        logits = model(x)
    assert sweep["losses"][0] == float(loss)
    assert float(loss) == pytest.approx(float(sigmoid_mse_loss(logits, to_multi_hot(y, 10))))
    assert abs(float(loss) - float(F.cross_entropy(logits, y))) > 1.0  # not the CE of before


class _Replayed:
    """Cross-entropy that records its batches, steps taken and checkpointed state."""

    replays = 3

    def __init__(self):
        self.batches: list[torch.Tensor] = []
        self.steps = 0
        self.counter = torch.zeros(())
        self.inner = CrossEntropy()

    def __call__(self, model, x, y, timer) -> LossOutput:
        self.batches.append(x)
        self.counter += 1
        return self.inner(model, x, y, timer)

    def after_step(self, model):
        self.steps += 1

    def extra_state(self):
        return {"counter": self.counter}

    def load_extra_state(self, state):
        self.counter = state["counter"]


def test_replays_after_step_and_objective_state_follow_the_trainer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = create_dataset("digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    objective = _Replayed()
    timer = PhaseTimer()
    result = lr_find(model, opt, data, 16, num_iter=7, objective=objective, timer=timer)
    assert len(result.lrs) == 7 and objective.steps == 7
    same = [torch.equal(a, b) for a, b in zip(objective.batches, objective.batches[1:])]
    assert same == [True, True, False, True, True, False]  # each batch stepped on 3 times
    assert float(objective.counter) == 0.0  # its checkpointed state put back
    assert timer.stats()["forward"].count == 7  # the timer given is the one the objective used
