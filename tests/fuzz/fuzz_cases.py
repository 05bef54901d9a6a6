"""The fuzz cases: hand-listed ones (`LISTED`) and generated ones (`GENERATED`).

Shared by the tests of this folder and `bench/fuzz_report.py`. `KNOWN_DEFECTS` names the
listed cases that still break the promise (each a strict expected failure in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from fuzz_datasets import dataset_cases
from fuzz_generated import GENERATED, Generator
from fuzz_harness import Case, Fixtures, problems, run_case, work_folder
from fuzz_loaders import loader_cases
from fuzz_many_runs import many_run_cases
from fuzz_verbs import verb_cases
from hypothesis import HealthCheck, given, settings

__all__ = [
    "GENERATED",
    "GROUPS",
    "KNOWN_DEFECTS",
    "LISTED",
    "LOADER_GENERATORS",
    "VERB_GROUPS",
    "Generator",
    "check",
    "explore",
    "generated_params",
    "listed_params",
]

GROUPS = (
    "cli",
    "train",
    "attack",
    "count",
    "inspect",
    "lr-find",
    "sweep plan",
    "sweep run",
    "sweep search",
    "runs",
    "report",
    "demo",
    "cloud prices",
    "config",
    "sweep file",
    "checkpoint",
    "store",
    "mnist",
    "cifar10",
    "imagefolder",
)
"""The verbs, then the loaders, in the order the bench reports them."""
VERB_GROUPS = frozenset(GROUPS[:13])
"""The groups of test_fuzz_cli.py; the loaders' are in test_fuzz_loaders.py."""
LOADER_GENERATORS = ("random files", "flipped checkpoints", "truncated stores")

_IMAGE = "images are decoded only while training: refused, but the run dir is left"

KNOWN_DEFECTS: dict[str, str] = {
    "lr-find: --end-lr 1e308": (
        "the learning rates overflow to inf: lr_find.png is written, then lr_find.json fails "
        "with an error that names neither the option nor the file"
    ),
    "lr-find: num_classes below the data's": "labels are not checked against model.num_classes",
    "config: lr: '1e-3' (a string)": "a numeric string for a float field is read as a number",
    "config: width: 0": "simple-cnn of width 0 is built and fails in training: a traceback",
    "imagefolder: random bytes as an image": _IMAGE,
    "imagefolder: an empty image": _IMAGE,
    "imagefolder: text named .png": _IMAGE,
    "imagefolder: half a PNG": _IMAGE,
    "imagefolder: a PNG claiming 10**10 pixels": _IMAGE,
    "imagefolder: num_classes below the classes": (
        "labels of an image folder are not checked against model.num_classes: a traceback"
    ),
}
"""Case id -> what is still wrong (the reproducer is the case's command line)."""

LISTED: list[Case] = verb_cases() + many_run_cases() + loader_cases() + dataset_cases()

_ids = [c.id for c in LISTED]
assert len(_ids) == len(set(_ids)), sorted({i for i in _ids if _ids.count(i) > 1})
assert {c.group for c in LISTED} <= set(GROUPS)
assert set(KNOWN_DEFECTS) <= set(_ids), sorted(set(KNOWN_DEFECTS) - set(_ids))


def explore(generator: Generator, examples: int, visit: Callable[[Case], None]) -> None:
    """Draw `examples` cases of `generator` and call `visit` on each (derandomized: the same
    cases in every run, in the tests and in the bench alike)."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(generator.cases)
    def draw(case: Case) -> None:
        visit(case)

    draw()


def check(case: Case, fixtures: Fixtures) -> None:
    """Run `case` in a fresh work folder and assert that it kept the promise."""
    with work_folder() as work:
        out = run_case(case, fixtures, work)
    found = problems(case, out)
    assert not found, f"{case.id}: {'; '.join(found)}\n  argv: {out.argv}\n  stderr: {out.stderr}"


def listed_params(cases: Iterable[Case]) -> list[Any]:
    """pytest params of `cases`: slow ones marked slow, known defects strict xfails."""
    params = []
    for case in cases:
        marks = [pytest.mark.slow] if case.slow else []
        if case.id in KNOWN_DEFECTS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[case.id]))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def generated_params(generators: Iterable[Generator]) -> list[Any]:
    """pytest params (generator, examples): the default draw, and a bigger one marked slow."""
    params = []
    for g in generators:
        params.append(pytest.param(g, g.examples, id=g.name))
        params.append(
            pytest.param(g, g.slow_examples, id=f"{g.name} (more)", marks=pytest.mark.slow)
        )
    return params
