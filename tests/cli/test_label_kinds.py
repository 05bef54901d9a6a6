"""A loss that does not fit the data set's labels is refused in one line, before a run dir."""

from __future__ import annotations

import pytest
import yaml

from nettle.cli import main


@pytest.mark.parametrize(
    ("model", "data", "loss", "says"),
    [
        ("simple-cnn", "digit-scenes", "ce", "has boxes; set train.loss: detection"),
        ("tiny-yolo", "digits", "detection", "has one class per example; set train.loss: ce"),
        ("attention-ocr", "digits", "seq2seq", "has one class per example; set train.loss: ce"),
        ("tiny-yolo", "digit-lines", "detection", "has sequence labels; set train.loss: ctc or"),
        ("crnn", "digit-scenes", "ctc", "has boxes; set train.loss: detection"),
    ],
)
def test_labels_and_loss_must_fit(tmp_path, capsys, model, data, loss, says):
    path = tmp_path / "c.yaml"
    cfg = {"model": {"name": model}, "data": {"name": data}, "train": {"loss": loss, "epochs": 1}}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"train.loss={loss}" in err and says in err
    assert not (tmp_path / "run").exists()
