import argparse
import importlib
import json
from pathlib import Path

import pytest

import nettle.cli
from nettle import __version__
from nettle.cli import HIDDEN_VERBS, _verbs, build_parser, main
from nettle.errors import ExitCode


def _verb_modules() -> dict[str, str]:
    """Module of src/nettle/cli with an `add_parser` -> the verb it registers, found by
    listing the folder's files (helpers such as `_sweep_search` define no `add_parser`)."""
    verbs = {}
    for path in sorted(Path(nettle.cli.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"nettle.cli.{path.stem}")
        if path.stem != "__init__" and hasattr(module, "add_parser"):
            sub = argparse.ArgumentParser().add_subparsers()
            module.add_parser(sub)
            (verbs[path.stem],) = sub.choices
    return verbs


VERB_MODULES = _verb_modules()
KNOWN = {"attack", "cloud", "count", "demo", "inspect", "lr-find", "report", "runs", "sweep"}
KNOWN |= {"train", "_job", "_preflight"}


def _listed_verbs(help_text: str) -> list[str]:
    """The verbs listed under VERB in the top-level help (wrapped help lines left out)."""
    lines = help_text.split("\n  VERB\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.split()[0] for line in lines if line[:4] == "    " and line[4:5] != " "]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nettle {__version__}"


def test_every_verb_module_is_a_verb_of_the_parser_and_hidden_ones_are_unlisted():
    # a verb module registers its own name, `_` spelled `-` (lr_find -> lr-find) except the
    # leading `_` of a hidden verb
    for module, verb in VERB_MODULES.items():
        assert verb == (module if module.startswith("_") else module.replace("_", "-"))
    hidden = sorted(v for v in VERB_MODULES.values() if v.startswith("_"))
    public = sorted(v for v in VERB_MODULES.values() if not v.startswith("_"))
    assert hidden == sorted(HIDDEN_VERBS) == ["_job", "_preflight"]
    assert set(VERB_MODULES.values()) >= KNOWN  # the listing found the verbs we know of
    assert _verbs() == sorted(m for m in VERB_MODULES if not m.startswith("_")) + list(HIDDEN_VERBS)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert sorted(sub.choices) == sorted(VERB_MODULES.values())
    # the help lists the public verbs, each with its one-line help, and no hidden one
    assert _listed_verbs(parser.format_help()) == public
    assert all(a.help for a in sub._choices_actions)


@pytest.mark.parametrize("module", sorted(VERB_MODULES))
def test_every_verb_parses_help(capsys, module):
    verb = VERB_MODULES[module]
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nettle {verb} ")


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
