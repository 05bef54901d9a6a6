"""Files that are not checkpoints: one `CheckpointError` line naming the file, no torch advice."""

import os
import pickle
import zipfile

import pytest
import torch

from nettle.cli import main
from nettle.config import dump_config, load_config_dict
from nettle.errors import ExitCode
from nettle.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def _single_byte(path):
    path.write_bytes(b"\x80")


def _text(path):
    path.write_text("model: resnet18\nepochs: 3\n")


def _other_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")


def _torch_zip_with_code(path):
    torch.save({"model": {}, "payload": _RunsCode()}, path, pickle_module=pickle)


def _plain_pickle_with_code(path):
    path.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=4))


def _truncated(path):
    save_checkpoint({"model": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])


def _random_bytes(path):
    path.write_bytes(bytes(range(200, 256)) * 4)


HOSTILE = {
    "single byte": (_single_byte, "truncated or corrupt: a pickle that ends early"),
    "text": (_text, "a text file, not a checkpoint"),
    "other zip": (_other_zip, "a zip archive without data.pkl, so not written by torch.save"),
    "torch zip with code": (_torch_zip_with_code, "loading it would call posix.system"),
    "plain pickle with code": (_plain_pickle_with_code, "a plain pickle, not a torch.save file"),
    "truncated": (_truncated, "truncated or corrupt: a damaged zip archive"),
    "random bytes": (_random_bytes, "not a checkpoint: it starts with 0xc8c9"),
    "empty": (lambda p: p.write_bytes(b""), "truncated or corrupt: the file is empty"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_load_checkpoint_names_the_file_and_what_is_expected(tmp_path, kind):
    make, reason = HOSTILE[kind]
    path = tmp_path / "last.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unreadable checkpoint ({reason}")
    assert message.endswith(
        "; expected a torch.save file of a dict of tensors and plain values with a 'model' entry"
    )
    assert "\n" not in message and "weights_only" not in message


def test_a_checkpoint_without_tensors_in_its_model_state_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": {"w": [1.0, 2.0]}}, path)
    with pytest.raises(CheckpointError, match=r"c\.pt: its model state holds values that are"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=r"c\.pt: not a nettle checkpoint \(no model"):
        load_checkpoint(path)


def _snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")
    }


@pytest.mark.parametrize("kind", HOSTILE)
def test_attack_on_a_hostile_checkpoint_is_one_line(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    HOSTILE[kind][0](path)
    before = _snapshot(tmp_path)
    assert main(["attack", str(path)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err
    assert err.splitlines() == [
        f"nettle attack: error: {path}: " + err.split(f"{path}: ", 1)[1].strip()
    ]
    assert HOSTILE[kind][1] in err
    assert _snapshot(tmp_path) == before


def test_inspect_of_a_run_with_a_hostile_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config_dict({})))
    _text(run / "checkpoints" / "best.pt")
    before = _snapshot(tmp_path)
    assert main(["inspect", str(run), "-o", str(tmp_path / "out")]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"nettle inspect: error: {run / 'checkpoints' / 'best.pt'}: unreadable checkpoint (a text "
        "file, not a checkpoint); expected a torch.save file of a dict of tensors and plain "
        "values with a 'model' entry"
    ]
    assert _snapshot(tmp_path) == before
