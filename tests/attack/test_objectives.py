"""Attacks on models that are not classifiers: CTC line readers and a segmentation example."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nettle.attack import create_attack, evaluate_robustness
from nettle.attack.objectives import ctc_lines, decoded_rows, get_objective
from nettle.train.ctc import decode, lines_correct

CENTRES = torch.tensor([0.5, 0.1, 0.9])  # blank, label 0, label 1


class ColumnReader(nn.Module):
    """A fixed CTC reader of 1 x 1 x T images: column t is the class whose centre is nearest
    to its value (blank 0.5, label 0 at 0.1, label 1 at 0.9). Output (N, 3, T) log-probs."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(40.0), requires_grad=False)

    def forward(self, x):
        v = x.flatten(1)[:, None, :]  # (N, 1, T)
        return (-self.scale * (v - CENTRES[None, :, None]) ** 2).log_softmax(1)


def _lines(n: int, length: int = 3):
    """Lines of `length` digits in {0, 1}, each followed by a blank column; label rows."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n, length), generator=g)
    cols = torch.stack([CENTRES[labels + 1], torch.full_like(labels, 0.5, dtype=torch.float)], 2)
    x = cols.flatten(1)[:, None, None, :]  # (N, 1, 1, 2 * length)
    y = torch.cat([torch.full((n, 1), length), labels], 1)
    return x, y


def test_ctc_objective_success_is_a_changed_decoding():
    model, (x, y) = ColumnReader(), _lines(32)
    objective = ctc_lines()
    assert lines_correct(model(x), y).all()  # the reader reads every clean line
    kw = {"loss_fn": objective.loss_fn, "success_fn": objective.success_fn}
    # eps 0.05 cannot move any column nearer another centre; 0.35 moves 0.1 past 0.3
    small = create_attack("pgd", model, seed=0, eps=0.05, alpha=0.02, steps=10, **kw)(x, y)
    assert not small.success.any()
    big = create_attack("pgd", model, seed=0, eps=0.35, alpha=0.1, steps=10, **kw)(x, y)
    with torch.no_grad():
        out = model(big.x_adv)
    refs = [row[1:].tolist() for row in y]
    changed = torch.tensor([d != r for d, r in zip(decode(out), refs, strict=True)])
    assert torch.equal(big.success, changed) and changed.all()
    assert (big.loss > small.loss).all()  # the CTC loss of the label row rose
    # targeted: the decoding of another line's image is reached
    rows = decoded_rows(model(x.flip(0)))
    targeted = create_attack("pgd", model, seed=0, eps=0.45, alpha=0.1, steps=20, **kw)
    hit = targeted(x, y, target=rows)
    assert torch.equal(hit.success, lines_correct(model(hit.x_adv), rows))
    assert hit.success.float().mean() >= 0.9


def test_decoded_rows_read_back_as_the_decoding():
    out = torch.randn(5, 4, 9).log_softmax(1)
    assert lines_correct(out, decoded_rows(out)).all()
    assert get_objective("ctc-lines").error_name == "cer"
    with pytest.raises(ValueError, match="unknown objective 'boxes'; known: classification"):
        get_objective("boxes")


def test_robustness_of_a_line_reader_reports_line_accuracy_and_cer():
    model, (x, y) = ColumnReader(), _lines(40)
    res = evaluate_robustness(
        model, (x, y), {"pgd": {"steps": 10}}, [0.05, 0.35], objective=ctc_lines(), batch_size=16
    )
    assert res.objective == "ctc-lines" and res.error_name == "cer"
    assert res.clean_accuracy == 1.0 and res.clean_error == 0.0
    assert res.accuracy["pgd"] == {0.05: 1.0, 0.35: 0.0}
    assert res.errors["pgd"][0.05] == 0.0 and res.errors["pgd"][0.35] > 0.3
    assert res.warnings == []


def test_classifier_only_attacks_refuse_another_objective():
    model = ColumnReader()
    objective = ctc_lines()
    for name in ("cw", "spsa", "jsma", "maxconf"):
        with pytest.raises(ValueError, match="attacks classifiers only"):
            create_attack(name, model, loss_fn=objective.loss_fn)
    with pytest.raises(ValueError, match="loss 'dlr' needs a classifier's logits"):
        x, y = _lines(2)
        create_attack("apgd", model, loss="dlr", loss_fn=objective.loss_fn)(x, y)


def _example():
    path = Path(__file__).parents[2] / "examples" / "attack_segmentation.py"
    spec = importlib.util.spec_from_file_location("attack_segmentation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_segmentation_example_runs_on_a_tiny_model():
    seg = _example()
    out = seg.main(n=64, steps=60, eps=(0.01, 0.3), checks=False)
    assert out["clean_iou"] > 0.9
    # success is exactly "the image's mean IoU fell below 0.5"
    assert torch.equal(out["success"], out["iou_after"] < 0.5)
    assert out["adversarial_iou"] < out["clean_iou"]
    res = out["robustness"]
    assert res.objective == "segmentation" and res.clean_accuracy == 1.0
    assert res.accuracy["pgd"][0.3] < res.accuracy["pgd"][0.01]
    # by hand: mean IoU of a prediction with one of two classes half right
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, :] = 1.0  # predicts class 1 on the top row
    mask = torch.tensor([[[1, 0], [0, 0]]])
    # class 0: inter 2, union 3; class 1: inter 1, union 2 -> (2/3 + 1/2) / 2
    assert seg.mean_iou(logits, mask).item() == pytest.approx(7 / 12)


@pytest.mark.slow
def test_nettle_attack_scores_a_crnn_run_by_lines_and_cer(tmp_path, capsys):
    from nettle.cli import main
    from nettle.config import load_config_dict
    from nettle.experiment.evaluation import _test_tensors
    from nettle.experiment.run import run_experiment
    from nettle.models.build import load_run_model
    from nettle.train.ctc import CTCMetric

    cfg = load_config_dict(
        {
            "name": "lines",
            "model": {"name": "crnn", "kwargs": {"width": 4, "hidden": 4}},
            "data": {"name": "digit-lines", "batch_size": 32, "subset": 64},
            "train": {"epochs": 1, "loss": "ctc", "device": "cpu", "tensorboard": False},
        }
    )
    run_experiment(cfg, tmp_path / "run")
    argv = ["attack", str(tmp_path / "run"), "--attacks", "fgsm,pgd", "--eps", "0.05,0.3"]
    code = main([*argv, "--set", "pgd.steps=2", "--limit", "24", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == "ctc-lines" and out["error_name"] == "cer"
    # the clean numbers are the trainer's metric on the same lines
    model = load_run_model(tmp_path / "run")
    x, y = _test_tensors(cfg.data)
    metric = CTCMetric()
    with torch.no_grad():
        metric.update(model(x[:24]), y[:24])
    clean = metric.compute()
    assert out["clean_accuracy"] == pytest.approx(clean["acc"])
    assert out["clean_error"] == pytest.approx(clean["cer"])
    for name in ("fgsm", "pgd"):
        assert out["accuracy"][name]["0.3"] <= out["accuracy"][name]["0.05"] <= clean["acc"]
        assert out["errors"][name]["0.05"] >= clean["cer"] - 1e-9
        assert out["cost"][name]["0.05"]["backwards"] >= 0
    saved = json.loads(Path(out["saved"]).read_text())
    assert saved["settings"]["objective"] == "ctc-lines"
