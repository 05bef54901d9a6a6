"""CTC: best-path decoding on hand-made scores, edit distance and CER on hand-computed pairs, the
loss against hand-summed paths, the metric, and a short training run that learns to read."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from nettle.config import ConfigError, TrainConfig, load_config_dict
from nettle.measure.timing import PhaseTimer
from nettle.models import create_model
from nettle.train.ctc import (
    CTCMetric,
    CTCObjective,
    best_path,
    character_error_rate,
    ctc_loss,
    decode,
    levenshtein,
    lines_correct,
)
from nettle.train.datasets.digit_lines import DIGIT_LINES_INFO, digits_split, make_digit_lines
from nettle.train.loop import Trainer

EXAMPLE = Path(__file__).parents[2] / "examples" / "digit-lines-crnn.yaml"


def _scores(paths: list[list[int]], classes: int) -> torch.Tensor:
    """Log-probabilities (N, C, T) whose best class at step t is paths[n][t]."""
    onehot = torch.nn.functional.one_hot(torch.tensor(paths), classes).float()  # (N, T, C)
    return (5 * onehot).log_softmax(-1).permute(0, 2, 1)


def test_best_path_collapses_repeats_and_drops_blanks():
    paths = [[1, 1, 0, 1, 2, 2], [0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 0, 2]]
    classes, lengths = best_path(_scores(paths, 4))
    assert lengths.tolist() == [3, 0, 3]
    assert classes.tolist() == [
        [1, 1, 2, -1, -1, -1],
        [-1, -1, -1, -1, -1, -1],
        [3, 3, 2, -1, -1, -1],
    ]
    assert decode(_scores(paths, 4)) == [[0, 0, 1], [], [2, 2, 1]]  # label = class - 1


def test_lines_correct_compares_whole_lines():
    scores = _scores([[1, 1, 0, 1, 2, 2], [3, 0, 3, 3, 0, 2], [2, 0, 0, 0, 0, 0]], 4)
    y = torch.tensor([[3, 0, 0, 1], [2, 2, 2, -1], [1, 1, -1, -1]])  # length, labels, padding
    assert lines_correct(scores, y).tolist() == [True, False, True]
    # labels longer than the output: padded, never a shape error
    assert lines_correct(scores[..., :2], torch.tensor([[3, 0, 0, 1]] * 3)).tolist() == [False] * 3


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "abc", 3),
        ("abc", "", 3),
        ("ab", "ab", 0),
    ],
)
def test_levenshtein_hand_pairs(a, b, distance):
    assert levenshtein(a, b) == distance
    assert levenshtein(list(b), list(a)) == distance


def test_character_error_rate_sums_edits_over_reference_labels():
    assert character_error_rate([[1, 2, 3], [4]], [[1, 2, 4], [4, 5]]) == pytest.approx(2 / 5)
    assert character_error_rate([[1, 2]], [[1, 2]]) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        character_error_rate([[1], [2]], [[1]])


def test_ctc_loss_equals_the_hand_summed_paths():
    # blank 0 and label 'a' (class 1); steps p(blank), p(a) = (0.6, 0.4), (0.3, 0.7)
    probs = torch.tensor([[[0.6, 0.3], [0.4, 0.7]]])  # (N=1, C=2, T=2)
    y = torch.tensor([[1, 0]])  # one label: 'a'
    paths = 0.4 * 0.7 + 0.4 * 0.3 + 0.6 * 0.7  # aa, a-, -a
    assert float(ctc_loss(probs.log(), y)) == pytest.approx(-math.log(paths), rel=1e-6)
    # 'aa' in three steps has one path: a - a; the mean loss is per label
    probs3 = torch.tensor([[[0.5, 0.2, 0.1], [0.5, 0.8, 0.9]]])
    loss = ctc_loss(probs3.log(), torch.tensor([[2, 0, 0]]))
    assert float(loss) == pytest.approx(-math.log(0.5 * 0.2 * 0.9) / 2, rel=1e-6)


def test_metric_accumulates_over_batches():
    metric = CTCMetric()
    scores = _scores([[1, 1, 0, 1, 2, 2], [3, 0, 3, 3, 0, 2]], 4)
    y = torch.tensor([[3, 0, 0, 1], [2, 2, 1, -1]])  # right; [2, 2, 1] read for [2, 1]
    metric.update(scores[:1], y[:1])
    metric.update(scores[1:], y[1:])
    out = metric.compute()
    assert out["acc"] == 0.5
    assert out["cer"] == pytest.approx(1 / 5)
    expected = (ctc_loss(scores, y, "none") / torch.tensor([3.0, 2.0])).mean()
    assert out["loss"] == pytest.approx(float(expected), rel=1e-6)
    metric.reset()
    assert metric.sums["seen"] == 0


def test_objective_returns_the_loss_and_the_correct_lines():
    torch.manual_seed(0)
    model = create_model("crnn", in_channels=1, width=8, hidden=8)
    x, y = torch.rand(3, 1, 8, 40), torch.tensor([[2, 1, 2, -1], [1, 7, -1, -1], [3, 0, 0, 0]])
    out = CTCObjective()(model, x, y, PhaseTimer(torch.device("cpu")))
    with torch.no_grad():
        expected, right = ctc_loss(model(x), y), lines_correct(model(x), y)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert out.correct.tolist() == right.tolist()
    assert out.loss.requires_grad


def _lines(split: str, count: int, seed: int) -> TensorDataset:
    images, labels, _ = digits_split(split)
    lines = make_digit_lines(images, labels, count, seed, min_digits=2, max_digits=4)
    return TensorDataset(lines.x, lines.y)


@pytest.mark.usefixtures("one_thread")
def test_short_training_run_learns_to_read_lines():
    """2-4 digit lines, 512 of them, 8 epochs: far above chance (~0) on unseen lines."""
    torch.manual_seed(0)
    info = DIGIT_LINES_INFO
    model = create_model("crnn", in_channels=1, width=16, hidden=32, mean=info.mean, std=info.std)
    cfg = TrainConfig(
        epochs=8,
        device="cpu",
        optim={"name": "adam", "lr": 0.03, "weight_decay": 0.0},
        schedule={"name": "constant"},
        grad_clip=1.0,
        tensorboard=False,
    )
    trainer = Trainer(
        model,
        _lines("train", 512, 0),
        _lines("test", 200, 1),
        cfg,
        batch_size=16,
        objective=CTCObjective(),
    )
    trainer.fit()
    first, last = trainer.history[0], trainer.history[-1]
    assert first["test_acc"] < 0.05 and first["test_cer"] > 0.9
    assert last["test_acc"] > 0.6 and last["test_cer"] < 0.15
    assert last["train_acc"] > 0.6


def test_config_selects_ctc_and_refuses_combinations(tmp_path):
    from nettle.experiment.run import run_experiment

    cfg = load_config_dict(
        {
            "model": {"name": "crnn", "kwargs": {"width": 8, "hidden": 8}},
            "data": {"name": "digit-lines", "batch_size": 128},
            "train": {"epochs": 1, "loss": "ctc", "device": "cpu", "tensorboard": False},
        }
    )
    summary = run_experiment(cfg, tmp_path / "run")
    final = summary["final"]
    assert {"test_acc", "test_cer", "test_loss"} <= set(final)
    assert 0.0 <= final["test_acc"] <= 1.0 and 0.0 < final["test_cer"] <= 1.0
    bad = cfg.model_dump(mode="json")
    bad["train"]["strictening"] = 0.1
    with pytest.raises(
        ConfigError, match="train.loss=ctc cannot be combined with train.strictening"
    ):
        load_config_dict(bad)  # refused by the config itself, before any run dir exists
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_example_config_reads_lines(tmp_path):
    from nettle.experiment.run import run_experiment

    cfg = load_config_dict(yaml.safe_load(EXAMPLE.read_text()), source=str(EXAMPLE))
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["final"]["test_acc"] >= 0.96  # measured 0.978
    assert summary["final"]["test_cer"] <= 0.008  # measured 0.0042


def test_sequence_labels_without_ctc_loss_are_refused_by_name(tmp_path):
    from nettle.config import ExperimentConfig
    from nettle.experiment.run import run_experiment

    cfg = ExperimentConfig.model_validate(
        {"model": {"name": "crnn", "num_classes": 10}, "data": {"name": "digit-lines"}}
    )
    with pytest.raises(ValueError, match=r"train.loss=ce: data set 'digit-lines'.*train.loss: ctc"):
        run_experiment(cfg, tmp_path / "run")
