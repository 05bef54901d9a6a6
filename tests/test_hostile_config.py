"""Hostile config and sweep files: one line naming the problem, exit 2, nothing written."""

import subprocess
import sys
import time
import tracemalloc

import pytest

from nettle.cli import main
from nettle.config import ConfigError, load_config, load_config_dict
from nettle.errors import ExitCode
from nettle.safe_yaml import MAX_BYTES, YAMLInputError, load_yaml

_MAIN = "import sys; from nettle.cli import main; sys.exit(main())"


def _bomb() -> str:
    """About 400 bytes of nested aliases standing for 9**9 strings."""
    lines = ["    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"    {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "model:\n  kwargs:\n" + "\n".join(lines) + "\n"


def _snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")
    }


def _refused(argv, capsys, folder):
    """Run the CLI; assert exit 2, one line on stderr, no traceback, `folder` unchanged."""
    before = _snapshot(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nettle {argv[0]}: error: "), err
    assert _snapshot(folder) == before
    return lines[0]


def test_alias_bomb_is_refused_within_a_second_and_little_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert len(path.read_bytes()) < 450
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match=r"bomb\.yaml: line \d+: the document expands"):
            load_config(path)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 100 * 2**20


def test_alias_bomb_in_a_real_process_is_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _MAIN, "train", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"nettle train: error: {path}: line 8: the document expands to more than 100,000 "
        "values (aliases of aliases?); write the values out or use fewer aliases"
    ]
    assert _snapshot(tmp_path) == before


def test_alias_bomb_in_a_sweep_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text("name: s\nbase:\n" + _bomb().replace("\n", "\n  ", 1))
    line = _refused(["sweep", "plan", str(path)], capsys, tmp_path)
    assert "expands to more than" in line


def test_aliases_that_stay_small_still_work():
    tree = load_yaml("a: &x {lr: 0.1}\nb: *x\nc: {<<: *x, momentum: 0.5}")
    assert tree == {"a": {"lr": 0.1}, "b": {"lr": 0.1}, "c": {"lr": 0.1, "momentum": 0.5}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train:\n  epochs: 2\n  epochs: 3\n",
            "line 3: key 'epochs' is given twice (first on line 2)",
        ),
        ("a: &a [*a]\n", "line 1: alias *a refers to a value that holds it"),
        ("x: " + "[" * 60 + "]" * 60 + "\n", "line 1: nested deeper than 50 levels"),
        ("train: {epochs: 2\n", "not valid YAML: line 2, column 1"),
        ("a: \x00\n", "not valid YAML: character 4: special characters are not allowed"),
    ],
)
def test_yaml_problems_name_the_line(tmp_path, capsys, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = _refused(["train", str(path)], capsys, tmp_path)
    assert line.startswith(f"nettle train: error: {path}: {expected}")


def test_non_utf8_and_oversized_files_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert _refused(["train", str(latin)], capsys, tmp_path) == (
        f"nettle train: error: {latin}: not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"
    )
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_BYTES // 10 + 1))
    line = _refused(["train", str(big)], capsys, tmp_path)
    assert f"{big}: larger than 1,000,000 bytes" in line
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert _refused(["train", str(folder)], capsys, tmp_path).endswith(
        f"{folder}: a folder, not a config file"
    )


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("train: {epochs: true}", "train.epochs: expected an integer, got a boolean (true)"),
        (
            "train: {optim: {lr: .inf}}",
            "train.optim.lr: Input should be a finite number (got .inf)",
        ),
        (
            "train: {optim: {lr: .nan}}",
            "train.optim.lr: Input should be a finite number (got .nan)",
        ),
        (
            "bayes: {threshold: -.inf}",
            "bayes.threshold: Input should be a finite number (got -.inf)",
        ),
        (
            "train: {optim: {betas: [0.9, .inf]}}",
            "train.optim.betas.1: Input should be a finite number (got .inf)",
        ),
        ("train: {epochs: '3'}", "train.epochs: expected an integer, got the string '3'"),
        ("train: {optim: {lr: '0.1'}}", "train.optim.lr: expected a number, got the string '0.1'"),
        (
            "train: {schedule: {milestones: [0.5, yes]}}",
            "train.schedule.milestones: item 1: expected a number, got a boolean (true)",
        ),
        (
            "data: {augment: {flip: 1}}",
            "data.augment.flip: expected true or false, got the integer 1",
        ),
        ("train: {device: 0}", "train.device: Input should be a valid string (got 0)"),
        ("train: {epochs: many}", "train.epochs: Input should be a valid integer"),
        ("name: 2024-01-01", "name: a date (2024-01-01) is not a config value; quote it"),
        ("model: {kwargs: {1: 2}}", "model.kwargs: key 1 is not a string; quote it"),
        ("train: {optmi: {}}", "train.optmi: unknown key; known: epochs, seed, device, optim"),
    ],
)
def test_values_keep_their_type(tmp_path, capsys, monkeypatch, yaml_text, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    line = _refused(["train", str(path)], capsys, tmp_path)
    assert line.startswith(f"nettle train: error: {path}: ")
    assert expected in line


def test_overrides_are_typed_yaml_scalars():
    cfg = load_config_dict({}, ["train.epochs=3", "train.optim.lr=1e-3", "data.augment.flip=true"])
    assert (cfg.train.epochs, cfg.train.optim.lr, cfg.data.augment.flip) == (3, 0.001, True)
    assert load_yaml("lr: 1e-3")["lr"] == 0.001  # YAML 1.1 would read the string "1e-3"
    assert load_config_dict({"train": {"optim": {"lr": 1}}}).train.optim.lr == 1.0
    for bad, message in [
        ("train.epochs=true", "train.epochs: expected an integer, got a boolean (true)"),
        ("train.optim.lr=.inf", "train.optim.lr: Input should be a finite number (got .inf)"),
        ("train.epochs='3'", "expected an integer, got the string '3'"),
        ("train.epochs=[1", "--set 'train.epochs=[1': not valid YAML: line 1, column 3"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config_dict({}, [bad])
        assert message in str(info.value) and "\n" not in str(info.value)


def test_overrides_cannot_smuggle_an_alias_bomb():
    value = (
        "{a: &a [1,1,1,1,1,1,1,1,1,1], "
        + ", ".join(f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]" for p, n in zip("abcde", "bcdef"))
        + "}"
    )
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config_dict({}, [f"model.kwargs={value}"])


def test_yaml_input_error_is_a_value_error():
    with pytest.raises(YAMLInputError, match=r"^s: line 2: key 'a' is given twice"):
        load_yaml("a: 1\na: 2\n", source="s")
    assert issubclass(YAMLInputError, ValueError)
