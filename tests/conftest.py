"""Fixtures shared by every test folder."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread until the end of the test module, then the earlier count again.

    Tiny ops on a shared, loaded 2-core machine crawl when two threads spin for them. A module
    opts in with `pytestmark = pytest.mark.usefixtures("one_thread")` (set up before its other
    module fixtures, trained models included); a test or a module fixture may request it too.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
