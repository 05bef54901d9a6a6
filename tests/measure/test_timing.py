import pytest
import torch

from nettle.measure import timing
from nettle.measure.timing import PhaseTimer, Stopwatch, format_phases


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter we advance by hand."""
    now = [100.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return now


def test_lap_adds_running_segments_across_stop_start(clock):
    sw = Stopwatch()
    sw.start()
    clock[0] += 2.0
    assert sw.lap() == 2.0
    clock[0] += 3.0  # running, belongs to lap 2
    sw.stop()
    clock[0] += 100.0  # stopped: not counted
    sw.start()
    clock[0] += 4.0
    assert sw.lap() == 7.0
    assert sw.lap_times() == [2.0, 7.0]
    assert sw.elapsed() == 9.0


def test_wrong_time_calls_do_nothing(clock):
    sw = Stopwatch()
    assert sw.lap() is None  # lap before start
    sw.stop()  # stop before start
    assert sw.lap_times() == [] and not sw.running and sw.elapsed() == 0.0
    sw.start()
    clock[0] += 1.0
    sw.start()  # start while running: the segment keeps its origin
    clock[0] += 1.0
    sw.stop()
    sw.stop()  # stop while stopped
    assert sw.lap() is None  # lap while stopped
    clock[0] += 5.0
    sw.start()
    clock[0] += 1.0
    assert sw.lap() == 3.0
    assert sw.lap_times() == [3.0]


def test_lap_times_is_a_copy(clock):
    sw = Stopwatch()
    sw.start()
    sw.lap()
    sw.lap_times().append(99.0)
    assert sw.lap_times() == [0.0]


def test_phase_timer(clock):
    t = PhaseTimer()
    for _ in range(3):
        with t.phase("forward"):
            clock[0] += 1.0
        with t.phase("attack"):
            clock[0] += 3.0
    assert t.totals() == {"forward": 3.0, "attack": 9.0}
    assert t.fractions() == {"forward": 0.25, "attack": 0.75}
    assert t.stats()["attack"].median == 3.0 and t.stats()["attack"].count == 3
    text = format_phases(t)
    assert "attack" in text and "75.0%" in text
    disabled = PhaseTimer(enabled=False)
    with disabled.phase("x"):
        pass
    assert disabled.totals() == {}


def test_phase_timer_records_time_on_exception(clock):
    t = PhaseTimer()
    with pytest.raises(RuntimeError), t.phase("forward"):
        clock[0] += 2.0
        raise RuntimeError
    assert t.totals() == {"forward": 2.0}


def test_phase_peak_memory_is_not_measured_on_the_cpu(clock):
    t = PhaseTimer("cpu")
    with t.phase("forward"):
        x = torch.ones(2**20)  # 4 MiB: timed, but no per-phase peak on the CPU
        clock[0] += 1.0
    assert float(x.sum()) == 2**20
    assert t.totals() == {"forward": 1.0} and t.peak_memory() == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_phase_peak_memory_is_the_allocator_peak_of_each_phase():
    device = torch.device("cuda")
    t = PhaseTimer(device)
    keep = torch.ones(2**20, device=device)  # 4 MiB allocated before: in every phase's peak
    base = torch.cuda.memory_allocated(device)
    with t.phase("small"):
        a = torch.ones(2**20, device=device)  # 4 MiB
        del a
    with t.phase("big"):
        b = torch.ones(16 * 2**20, device=device)  # 64 MiB
        del b
    with t.phase("small"):  # nothing allocated: the phase keeps its larger earlier peak
        pass
    peaks = t.peak_memory()
    assert list(peaks) == ["small", "big"]
    assert 4 * 2**20 <= peaks["small"] - base < 6 * 2**20
    assert 64 * 2**20 <= peaks["big"] - base < 66 * 2**20
    assert t.stats()["small"].count == 2
    del keep


def test_elapsed_while_running_and_phase_timer_add_reset(clock):
    sw = Stopwatch()
    sw.start()
    clock[0] += 1.5
    assert sw.elapsed() == 1.5 and sw.running
    assert sw.lap_times() == []  # no lap closed yet
    t = PhaseTimer()
    t.add("data", 0.5)
    t.add("data", 1.5)
    assert t.totals() == {"data": 2.0} and t.stats()["data"].median == 1.0
    t.reset()
    assert t.totals() == {} and t.fractions() == {}


def test_phase_timer_records_nothing_while_suspended():
    timer = PhaseTimer()
    with timer.phase("compile"), timer.suspended():
        with timer.phase("forward"):
            pass
        assert not timer.enabled
    assert timer.enabled and list(timer.stats()) == ["compile"]
    with timer.phase("forward"):
        pass
    assert [s.count for s in timer.stats().values()] == [1, 1]
