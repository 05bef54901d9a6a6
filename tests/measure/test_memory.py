import time

import torch

from nettle.measure.memory import MemoryMeter, current_rss


def test_cpu_peak_sees_a_64_mib_tensor():
    with MemoryMeter("cpu") as meter:
        x = torch.ones(16 * 1024 * 1024)  # 64 MiB of float32
        x.add_(1)
        time.sleep(0.3)  # the sampler runs between Python steps (it needs the GIL)
        del x
    assert meter.method == "cpu-rss"
    assert meter.peak_bytes >= 60 * 2**20
    assert current_rss() > 0
