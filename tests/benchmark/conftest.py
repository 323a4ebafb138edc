"""A stand-in for the CuPy backend, NumPy underneath, so the GPU code paths of the benchmark run on a CPU.

It has the parts of CuPy the benchmark reaches through ``backend.xp``:
``cuda.Event`` (timestamps from ``time.perf_counter``), ``cuda.get_current_stream``,
``cuda.get_elapsed_time``, ``cuda.Device``, ``cuda.runtime.getDeviceProperties``
and ``memGetInfo``, and ``get_default_memory_pool``. What it times is the CPU;
the tests that use it check what the code computes and writes, never a time.
"""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from gpudense.backends.numpy_backend import NumpyBackend


class _Event:
    def __init__(self):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        assert self.t is not None, "synchronize() before record()"


class _StandInCupy:
    """NumPy, plus the CUDA facts and events the benchmark asks of CuPy."""

    L2_BYTES = 1 << 20

    def __init__(self):
        runtime = types.SimpleNamespace(
            getDeviceProperties=lambda device_id: {"l2CacheSize": self.L2_BYTES, "name": b"stand-in"},
            memGetInfo=lambda: (8 << 30, 16 << 30),
        )
        self.cuda = types.SimpleNamespace(
            Event=_Event, get_current_stream=lambda: "stream",
            get_elapsed_time=lambda start, end: (end.t - start.t) * 1e3,
            Device=lambda: types.SimpleNamespace(id=0), runtime=runtime,
        )
        self.freed = 0

    def get_default_memory_pool(self):
        def free_all_blocks():
            self.freed += 1
        return types.SimpleNamespace(free_all_blocks=free_all_blocks)

    def __getattr__(self, name):
        return getattr(np, name)


class StandInCupyBackend(NumpyBackend):
    name = "cupy"

    def __init__(self):
        super().__init__()
        self.xp = _StandInCupy()

    def describe(self):
        return {"device": "0: stand-in (NumPy underneath)", "nvtx": "none"}


@pytest.fixture
def stand_in_cupy(monkeypatch):
    """``get_backend("cupy")`` returns the stand-in for the test's duration."""
    import gpudense.backends as backends

    be = StandInCupyBackend()
    real = backends.get_backend
    monkeypatch.setattr(backends, "get_backend", lambda name="auto": be if name == "cupy" else real(name))
    monkeypatch.delenv("CUPY_TF32", raising=False)
    return be


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """``gpudense bench`` warns on a busy machine; what the tests read must not depend on the machine's load."""
    from gpudense.benchmark import machine

    monkeypatch.setattr(machine, "busy_warning", lambda: None)
