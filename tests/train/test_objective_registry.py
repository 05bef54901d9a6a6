import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nettle.compress.bayes import BayesObjective
from nettle.config import ConfigError, load_config_dict
from nettle.experiment.objective import build_objective, objective_name
from nettle.train.adversarial import MadryPGD
from nettle.train.ctc import CTCObjective
from nettle.train.detection import DetectionObjective
from nettle.train.logic_objective import LogicObjective
from nettle.train.objective_registry import OBJECTIVES, register_objective
from nettle.train.objectives import CrossEntropy
from nettle.train.seq2seq import Seq2SeqObjective

CASES = [
    ({}, "ce", CrossEntropy),
    ({"train": {"loss": "ctc"}}, "ctc", CTCObjective),
    ({"train": {"loss": "bce"}}, "logic", LogicObjective),
    ({"train": {"strictening": 0.1}}, "logic", LogicObjective),
    ({"adversarial": {"mode": "madry", "steps": 2}}, "adversarial", MadryPGD),
    ({"bayes": {"threshold": -2.5}}, "bayes", BayesObjective),
    ({"distill": {"teacher": "runs/teacher"}}, "distill", None),
    ({"train": {"loss": "seq2seq"}}, "seq2seq", Seq2SeqObjective),
    ({"train": {"loss": "detection"}}, "detection", DetectionObjective),
]


def test_every_section_has_a_registered_builder():
    assert OBJECTIVES.names() == [
        "adversarial",
        "bayes",
        "ce",
        "ctc",
        "detection",
        "distill",
        "logic",
        "seq2seq",
    ]


@pytest.mark.parametrize(("section", "name", "kind"), CASES)
def test_the_one_section_that_is_on_picks_the_objective(section, name, kind):
    cfg = load_config_dict(section)
    assert objective_name(cfg) == name
    if kind is None:  # distill needs a teacher on disk: tests/compress/test_student.py
        return
    train_set = TensorDataset(torch.rand(7, 1, 8, 8), torch.zeros(7, dtype=torch.long))
    objective, facts = build_objective(cfg, nn.Linear(2, 2), train_set, torch.device("cpu"))
    assert type(objective) is kind
    assert facts == {}


def test_bayes_builder_counts_the_training_examples_and_keeps_the_threshold():
    cfg = load_config_dict({"bayes": {"threshold": -2.5}})
    train_set = TensorDataset(torch.rand(7, 1, 8, 8), torch.zeros(7, dtype=torch.long))
    objective, _ = build_objective(cfg, nn.Linear(2, 2), train_set, torch.device("cpu"))
    assert (objective.num_examples, objective.threshold) == (7, -2.5)


def test_plain_cross_entropy_keeps_label_smoothing():
    cfg = load_config_dict({"train": {"label_smoothing": 0.1}})
    objective, _ = build_objective(cfg, nn.Linear(2, 2), [], torch.device("cpu"))
    assert objective.label_smoothing == 0.1


def test_two_sections_on_are_refused_with_the_config_reason():
    cfg = load_config_dict({"bayes": {}})
    both = cfg.model_copy(update={"adversarial": load_config_dict({"adversarial": {}}).adversarial})
    with pytest.raises(ConfigError, match="adversarial training cannot be combined"):
        objective_name(both)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_objective("bayes", when=None)(lambda *args: (None, {}))
