import os
import subprocess
import sys

import pytest

from nettle.cli.demo import _since_start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_wall_time_counts_from_the_process_start_as_ps_does():
    ps = subprocess.run(
        ["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True, text=True
    )
    if ps.returncode != 0:
        pytest.skip("no ps")
    elapsed = int(ps.stdout.strip())  # whole seconds since this process started
    since = _since_start()
    assert since is not None and elapsed - 1 <= since <= elapsed + 2
