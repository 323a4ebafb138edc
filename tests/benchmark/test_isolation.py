"""Keeping contenders apart: the spin-down wait and the record of torch's BLAS (no timing is asserted)."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from gpudense.benchmark import isolation


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread CPU time is read from /proc")
def test_other_threads_cpu_time_counts_a_busy_thread_and_not_the_caller():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    before = isolation.other_threads_cpu_s()
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        worker.join(timeout=0.2)
        after = isolation.other_threads_cpu_s()  # while the worker lives: its /proc entry goes with it
    finally:
        stop.set()
        worker.join()
    assert before is not None and after is not None
    assert after > before  # the worker's CPU time shows up


def test_spin_down_waits_until_the_other_threads_have_been_quiet_for_quiet_s(monkeypatch):
    # other threads busy (a whole poll interval of CPU per reading) for 10 readings, then idle
    readings = iter([0.0] + [0.002 * k for k in range(1, 11)] + [0.02] * 1000)
    calls = []

    def fake_cpu():
        calls.append(1)
        return next(readings)

    monkeypatch.setattr(isolation, "other_threads_cpu_s", fake_cpu)
    fake_clock(monkeypatch)
    waited = isolation.spin_down(quiet_s=0.01, max_s=5.0, poll_s=0.002)
    assert len(calls) == 1 + 10 + 5  # the busy readings, then 0.01 s of quiet ones
    assert waited == pytest.approx(0.002 * 15)


def fake_clock(monkeypatch):
    """A clock that moves only when spin_down sleeps, so that a loaded machine cannot stretch a poll."""
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(isolation.time, "sleep", sleep)
    monkeypatch.setattr(isolation.time, "perf_counter", lambda: now[0])


def test_spin_down_gives_up_after_max_s(monkeypatch):
    readings = iter(0.01 * k for k in range(10**6))  # always busy
    monkeypatch.setattr(isolation, "other_threads_cpu_s", lambda: next(readings))
    fake_clock(monkeypatch)
    assert isolation.spin_down(quiet_s=0.01, max_s=0.05, poll_s=0.002) == pytest.approx(0.05)


def test_spin_down_records_its_waits():
    settle = isolation.SpinDown(quiet_s=0.004, max_s=0.05)
    for _ in range(3):
        assert settle() >= 0.0
    summary = settle.summary()
    assert summary["blocks"] == 3 and summary["waits_s"]["n"] == 3
    assert (summary["quiet_s"], summary["max_s"]) == (0.004, 0.05)


def test_torch_facts_read_torchs_build_and_threads(monkeypatch):
    config = ("PyTorch built with:\n  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 1 for x\n"
              "  - OpenMP 201511 (a.k.a. OpenMP 4.5)\n  - CPU capability usage: AVX512\n"
              "  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, USE_MKL=ON\n")
    fake = types.SimpleNamespace(
        __version__="9.9.9+cpu",
        __config__=types.SimpleNamespace(show=lambda: config,
                                         parallel_info=lambda: "ATen/Parallel:\nATen parallel backend: OpenMP\n"),
        backends=types.SimpleNamespace(mkl=types.SimpleNamespace(is_available=lambda: True),
                                       mkldnn=types.SimpleNamespace(is_available=lambda: False)),
        get_num_threads=lambda: 3, get_num_interop_threads=lambda: 1,
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    facts = isolation.torch_facts()
    assert facts == {
        "version": "9.9.9+cpu", "blas": "mkl",
        "blas_version": "Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 1 for x",
        "cpu_capability": "AVX512", "threads": 3, "interop_threads": 1, "parallel": "OpenMP",
        "openmp": "OpenMP 201511 (a.k.a. OpenMP 4.5)", "mkl": True, "mkldnn": False,
    }


def test_torch_facts_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert isolation.torch_facts() == {"version": "not importable (ModuleNotFoundError)"}
