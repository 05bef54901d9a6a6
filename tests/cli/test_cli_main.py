import pytest

from nettle import __version__
from nettle.cli import build_parser, main


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
