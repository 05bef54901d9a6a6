import subprocess
import sys

from nettle.measure.memory import current_rss

SCRIPT = """
import time
import torch
from nettle.measure.memory import MemoryMeter
with MemoryMeter("cpu") as meter:
    x = torch.ones(16 * 1024 * 1024)  # 64 MiB of float32
    x.add_(1)
    time.sleep(0.3)  # the sampler runs between Python steps (it needs the GIL)
    del x
print(meter.method, meter.peak_bytes)
"""


def test_cpu_peak_sees_a_64_mib_tensor():
    # a fresh process: memory freed by earlier tests could be reused without raising the RSS
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    method, peak = out.stdout.split()
    assert method == "cpu-rss"
    assert int(peak) >= 60 * 2**20
    assert current_rss() > 0
