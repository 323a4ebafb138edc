"""The timers and the two ways of taking samples, driven by fake timers (no timing is asserted)."""

from __future__ import annotations

import contextlib
import types

import pytest

from gpudense.benchmark import timing


def test_split_repeats():
    assert timing.split_repeats(10, 4) == [3, 3, 2, 2]
    assert timing.split_repeats(3, 4) == [1, 1, 1]
    assert sum(timing.split_repeats(20, 4)) == 20
    with pytest.raises(ValueError):
        timing.split_repeats(0, 4)


def test_run_rounds_calls_each_stage_with_rotating_sets():
    calls: list[tuple[str, int]] = []

    class FakeTimer:
        kind = "fake"
        t = 0.0

        def time(self, fn):
            fn()
            FakeTimer.t += 1.0
            return FakeTimer.t

    fns = {name: (lambda k, name=name: calls.append((name, k))) for name in ("a", "b")}
    s = timing.run_rounds(fns, n_sets=3, repeats=5, warmup=1, timer=FakeTimer(),
                          nvtx=lambda name: contextlib.nullcontext(), rounds=2)
    assert [len(v) for v in s.values()] == [5, 5]
    # shares [3, 2]; per round and stage: one warm-up call, then the timed calls,
    # timed call i on set i % 3
    assert [k for name, k in calls if name == "a"] == [0, 0, 1, 2, 0, 0, 1]
    assert [name for name, _ in calls] == ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3


class _CountingTimer:
    """Every call timed costs 1e-4 s: the time of a block is 1e-4 s per call it makes."""

    kind = "fake"

    def __init__(self, calls):
        self.calls = calls

    def time(self, fn):
        before = len(self.calls)
        fn()
        return 1e-4 * (len(self.calls) - before)


def test_time_per_call_groups_calls_to_the_minimum_sample_length():
    calls: list[int] = []
    times = timing.time_per_call(calls.append, _CountingTimer(calls), warmup=2, repeat=3,
                                 min_sample_s=5e-4)
    # 2 warm-up calls, 1 calibration call of 1e-4 s -> 5 calls per sample, 3 samples
    assert calls == list(range(2 + 1 + 5 * 3))
    assert times == pytest.approx([1e-4] * 3)


def test_time_per_call_caps_the_calls_per_sample():
    calls: list[int] = []
    times = timing.time_per_call(calls.append, _CountingTimer(calls), warmup=0, repeat=2,
                                 min_sample_s=1.0, max_inner=4)
    assert len(calls) == 1 + 4 * 2 and len(times) == 2
    with pytest.raises(ValueError):
        timing.time_per_call(calls.append, _CountingTimer(calls), repeat=0)


def test_cuda_timer_records_events_on_the_current_stream_and_returns_seconds():
    """The one CUDA-event timer, against a stand-in for CuPy's ``cuda`` module."""
    log = []
    stream = object()

    class Event:
        def record(self, s=None):
            log.append(("record", self, s))

        def synchronize(self):
            log.append(("sync", self))

    def elapsed(start, end):
        assert log[-1] == ("sync", end)  # read only after the end event completed
        return 2.5  # milliseconds

    cuda = types.SimpleNamespace(Event=Event, get_current_stream=lambda: stream,
                                 get_elapsed_time=elapsed)
    timer = timing.CudaTimer(types.SimpleNamespace(cuda=cuda))
    assert timer.kind == "cuda-events"
    seconds = timer.time(lambda: log.append(("work",)))
    assert seconds == pytest.approx(2.5e-3)
    assert log == [("record", timer.start, stream), ("work",), ("record", timer.end, stream),
                   ("sync", timer.end)]


def test_timer_for_picks_cuda_events_only_for_cupy():
    assert isinstance(timing.timer_for(types.SimpleNamespace(name="numpy")), timing.CpuTimer)
    fake_xp = types.SimpleNamespace(cuda=types.SimpleNamespace(Event=object))
    assert isinstance(timing.timer_for(types.SimpleNamespace(name="cupy", xp=fake_xp)), timing.CudaTimer)
    assert timing.CpuTimer().time(lambda: None) >= 0.0


def test_run_rounds_alternates_the_order_and_settles_before_every_block():
    calls: list[str] = []
    settles: list[int] = []

    class FakeTimer:
        kind = "fake"

        def time(self, fn):
            fn()
            return 1.0

    fns = {name: (lambda k, name=name: calls.append(name)) for name in ("a", "b", "c")}
    timing.run_rounds(fns, n_sets=1, repeats=4, warmup=1, timer=FakeTimer(),
                      nvtx=lambda name: contextlib.nullcontext(), rounds=2, alternate=True,
                      settle=lambda: settles.append(len(calls)))
    # round 1: a b c, round 2: c b a; each block one warm-up call and two timed calls
    assert calls == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["c"] * 3 + ["b"] * 3 + ["a"] * 3
    assert settles == [0, 3, 6, 9, 12, 15]  # before every block, none inside one


def test_run_rounds_warms_each_block_up_for_at_least_min_warmup_s():
    import time

    stamps: dict[str, list[float]] = {"a": [], "b": []}

    class FakeTimer:
        kind = "fake"

        def time(self, fn):
            fn()
            return 1.0

    fns = {name: (lambda k, name=name: stamps[name].append(time.perf_counter())) for name in stamps}
    samples = timing.run_rounds(fns, n_sets=2, repeats=1, warmup=1, timer=FakeTimer(),
                                nvtx=lambda name: contextlib.nullcontext(), rounds=1, min_warmup_s=0.02)
    assert samples == {"a": [1.0], "b": [1.0]}
    for name, ts in stamps.items():
        assert len(ts) >= 3  # the warm-up calls, then the one timed call
        assert ts[-1] - ts[0] >= 0.02  # the timed call came only after 0.02 s of warm-up calls
