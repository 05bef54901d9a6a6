import json

import pytest

from nettle import __version__
from nettle.cli import build_parser, main
from nettle.errors import ExitCode


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nettle {__version__}"


def test_every_verb_has_a_subparser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert {"count", "train", "demo"} <= set(sub.choices)


def test_unknown_verb_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-verb"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_an_input_error_is_one_line_without_traceback(capsys):
    assert main(["count", "no-such-model"]) == ExitCode.BAD_INPUT
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("nettle count: error: unknown model 'no-such-model'; known: ")


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_shows_the_traceback_of_an_input_error_then_the_line(capsys, flag):
    assert main([flag, "count", "no-such-model"]) == ExitCode.BAD_INPUT
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any(line.startswith("nettle.registry.UnknownNameError: unknown model") for line in lines)
    assert lines[-1].startswith("nettle count: error: unknown model 'no-such-model'")


def test_preflight_is_a_hidden_verb_printing_one_json_line_per_run(tmp_path, capsys):
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps([{"id": "a", "config": {"model": {"name": "nope"}}}]))
    assert main(["_preflight", str(spec)]) == ExitCode.OK
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert (result["id"], result["ok"], result["oom"]) == ("a", False, False)
    assert "'nope'" in result["error"]
    assert "_preflight" not in build_parser().format_help()


def test_preflight_of_a_file_that_is_not_a_list_is_bad_input(tmp_path, capsys):
    spec = tmp_path / "runs.json"
    spec.write_text("{}")
    assert main(["_preflight", str(spec)]) == ExitCode.BAD_INPUT
    assert "expected a JSON list" in capsys.readouterr().err
