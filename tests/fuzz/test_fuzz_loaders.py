"""Hostile files for every loader (configs, sweep files, checkpoints, the store, MNIST, CIFAR-10,
image folders): exit 2, one line naming the file or field, no file changed, no run dir left.

The cases are in fuzz_loaders.py (listed) and fuzz_generated.py (drawn by hypothesis).
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


@pytest.mark.parametrize("case", listed_params(c for c in LISTED if c.group not in VERB_GROUPS))
def test_listed(case, fuzz_fixtures):
    check(case, fuzz_fixtures)


@pytest.mark.parametrize(
    ("generator", "examples"), generated_params(g for g in GENERATED if g.name in LOADER_GENERATORS)
)
def test_generated(generator, examples, fuzz_fixtures):
    explore(generator, examples, lambda case: check(case, fuzz_fixtures))
