"""Hostile options of every verb: exit 2, one line naming the option, no file changed.

The cases are in fuzz_verbs.py (listed) and fuzz_generated.py (drawn by hypothesis); the
machinery in fuzz_harness.py. `bench/fuzz_report.py` runs the same cases and counts them.
"""

import pytest
from fuzz_cases import (
    GENERATED,
    LISTED,
    LOADER_GENERATORS,
    VERB_GROUPS,
    check,
    explore,
    generated_params,
    listed_params,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case", listed_params(c for c in LISTED if c.group in VERB_GROUPS))
def test_listed(case, fuzz_fixtures):
    check(case, fuzz_fixtures)


@pytest.mark.parametrize(
    ("generator", "examples"),
    generated_params(g for g in GENERATED if g.name not in LOADER_GENERATORS),
)
def test_generated(generator, examples, fuzz_fixtures):
    explore(generator, examples, lambda case: check(case, fuzz_fixtures))
