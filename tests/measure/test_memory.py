import subprocess
import sys

import pytest
import torch

from nettle.measure.memory import MemoryMeter

MiB = 2**20

SCRIPT = """
import time
import torch
from nettle.measure.memory import MemoryMeter, current_rss, measure_peak_memory
torch.ones(1024).add_(1)  # the first ops map pages of their own (~13 MiB): not in the blocks
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
before = current_rss()
kept = torch.ones(16 * 1024 * 1024)  # 64 MiB, kept
grown = current_rss() - before
status = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(meter.method, meter.peak_bytes, value, peak, grown, current_rss(), int(status.split()[1]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_peak_is_the_resident_growth_of_a_known_tensor():
    # a fresh process: memory freed by earlier tests could be reused without raising the RSS
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    method, peak, value, fn_peak, grown, rss, status_kib = out.stdout.split()
    assert method == "cpu-rss"
    # the peak above the level at entry: the tensor's pages, not the process's whole RSS
    assert 63 * MiB <= int(peak) <= 68 * MiB
    assert float(value) == 1.0 and 127 * MiB <= int(fn_peak) <= 132 * MiB
    # current_rss is the kernel's resident set (VmRSS, in KiB) and grows with a kept tensor
    assert abs(int(rss) - int(status_kib) * 1024) <= MiB
    assert 63 * MiB <= int(grown) <= 66 * MiB


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_the_allocator_peak_above_the_start():
    keep = torch.ones(2**20, device="cuda")  # allocated before: not part of the peak
    with MemoryMeter("cuda") as meter:
        x = torch.ones(16 * 2**20, device="cuda")  # 64 MiB
        del x
    assert meter.method == "cuda-allocator"
    assert 64 * MiB <= meter.peak_bytes < 66 * MiB
    del keep
