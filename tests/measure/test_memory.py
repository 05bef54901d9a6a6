import subprocess
import sys

import pytest
import torch

from nettle.measure.memory import MemoryMeter, current_rss

SCRIPT = """
import time
import torch
from nettle.measure.memory import MemoryMeter, measure_peak_memory
with MemoryMeter("cpu") as meter:
    x = torch.ones(16 * 1024 * 1024)  # 64 MiB of float32
    x.add_(1)
    time.sleep(0.3)  # the sampler runs between Python steps (it needs the GIL)
    del x

def step():
    y = torch.ones(32 * 1024 * 1024)  # 128 MiB, more than the 64 MiB freed above
    time.sleep(0.3)
    return float(y[0])

value, peak = measure_peak_memory(step, "cpu")
print(meter.method, meter.peak_bytes, value, peak)
"""


def test_cpu_peak_sees_a_64_mib_tensor():
    # a fresh process: memory freed by earlier tests could be reused without raising the RSS
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    method, peak, value, fn_peak = out.stdout.split()
    assert method == "cpu-rss"
    assert int(peak) >= 60 * 2**20
    assert float(value) == 1.0 and int(fn_peak) >= 60 * 2**20
    assert current_rss() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_the_allocator_peak_above_the_start():
    keep = torch.ones(2**20, device="cuda")  # allocated before: not part of the peak
    with MemoryMeter("cuda") as meter:
        x = torch.ones(16 * 2**20, device="cuda")  # 64 MiB
        del x
    assert meter.method == "cuda-allocator"
    assert 64 * 2**20 <= meter.peak_bytes < 66 * 2**20
    del keep
