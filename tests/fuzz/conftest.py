"""The tiny trained run every fuzz case copies from, built once per test session."""

import pytest
from fuzz_harness import build_fixtures


@pytest.fixture(scope="session")
def fuzz_fixtures(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("fuzz-fixtures"))
