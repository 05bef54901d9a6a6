"""The `nettle` command line: one module per verb, each thin (parse, call the library, print).

Each verb module defines `add_parser(subparsers)` and a `run(args) -> int` it sets as the
parser's default `func`. Verbs are found by listing this package: a new module with an
`add_parser` is a new verb (modules whose names start with `_` are helpers, not verbs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from nettle import __version__
from nettle.config import ConfigError
from nettle.errors import ExitCode
from nettle.experiment.store import StoreError
from nettle.registry import UnknownNameError

__all__ = ["build_parser", "main"]


HIDDEN_VERBS = ("_job", "_preflight")  # run by the sweep executors, not listed in the help


def _verbs() -> list[str]:
    """Names of the verb modules of this package, in alphabetical order, then hidden ones."""
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return names + list(HIDDEN_VERBS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is left to `--help`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every verb's subparser (their parsers share its class), or
    with the subparser of the verb `only` alone (a job's process imports one verb's module)."""
    import importlib

    parser = _Parser(
        prog="nettle",
        description="Measure, compress, attack and train deep networks; plan and query experiments.",
    )
    parser.add_argument("--version", action="version", version=f"nettle {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG level and show the traceback of an input error",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in [only] if only else _verbs():
        module = importlib.import_module(f"nettle.cli.{verb}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    # hidden verbs parse, but are left out of the list of verbs in the help
    sub._choices_actions = [a for a in sub._choices_actions if a.dest not in HIDDEN_VERBS]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nettle` console script; returns the exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    verb = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(verb if verb in _verbs() else None)
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UnknownNameError, FileNotFoundError, ValueError, StoreError) as exc:
        # errors of the user's input: one line (after the traceback with -v)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"nettle {args.verb}: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print(f"nettle {args.verb}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # the reader went away (`nettle runs | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
