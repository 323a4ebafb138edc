"""The CuPy streaming pipeline's ordering, checked on the CPU with a stand-in for CUDA streams.

:func:`gpudense.backends.cuda.streaming.stream_batches` overlaps uploads with
compute; its correctness rests on three orderings: the compute stream waits
for a batch's upload, the copy stream waits until the compute stream is done
with the device buffer it overwrites, and the host waits for an upload before
refilling its pinned buffer. The stand-in queues every stream's work and runs
it only as the schedule under test allows, a wait on an event holding a
stream back until the event's point is reached. Two hostile schedules (uploads
as early as allowed and compute as late as possible, and the reverse) catch a
missing wait as wrong data in the batches the compute stream reads.

As strict as CuPy where the pipeline leans on it: ``ndarray.set`` refuses a
host array that is not a ``numpy.ndarray`` or differs in shape or dtype
(``cupy/_core/core.pyx``, ``_ndarray_base.set``), and device arrays are used
only through slicing and ``set``.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from gpudense.backends.cuda.streaming import stream_batches


class Event:
    def __init__(self, stream, pos):
        self.stream, self.pos = stream, pos

    def synchronize(self):
        self.stream.advance(self.pos, force=True)


class Stream:
    def __init__(self, sched, name):
        self.sched, self.name, self.ops, self.done = sched, name, [], 0
        sched.streams[name] = self

    def record(self):
        return Event(self, len(self.ops))

    def wait_event(self, event):
        self.ops.append(("wait", event))
        self.sched.poke()

    def enqueue(self, fn):
        self.ops.append(("run", fn))
        self.sched.poke()

    def synchronize(self):
        self.advance(len(self.ops), force=True)

    def advance(self, upto, *, force):
        """Run queued work up to ``upto``; a wait on another stream forces it only with ``force``."""
        while self.done < upto:
            kind, op = self.ops[self.done]
            if kind == "wait":
                if op.stream.done < op.pos:
                    if not force:
                        return
                    op.stream.advance(op.pos, force=True)
            else:
                op()
            self.done += 1


class Scheduler:
    def __init__(self, eager):
        self.streams, self.eager = {}, eager

    def poke(self):
        stream = self.streams.get(self.eager)
        if stream is not None:
            stream.advance(len(stream.ops), force=False)


class DeviceArray:
    def __init__(self, a, sched):
        self.a, self.sched = a, sched
        self.shape, self.dtype = a.shape, a.dtype

    def __getitem__(self, key):
        return DeviceArray(self.a[key], self.sched)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: shape/dtype {arr.shape}/{arr.dtype} into {self.shape}/{self.dtype}")
        target = self.a
        (stream or self.sched.streams["compute"]).enqueue(lambda: np.copyto(target, arr))


def _fake_cupy(sched):
    cp = types.SimpleNamespace(int64=np.int64)
    cp.empty = lambda shape, dtype: DeviceArray(np.full(shape, -1, dtype), sched)
    compute = Stream(sched, "compute")
    cp.cuda = types.SimpleNamespace(get_current_stream=lambda: compute,
                                    Stream=lambda non_blocking=False: Stream(sched, "copy"))
    return cp, compute


@pytest.mark.parametrize("eager", ["copy", "compute"])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_every_batch_reads_its_own_rows_whatever_the_schedule(monkeypatch, eager, batch_size):
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(
        empty_pinned=lambda shape, dtype: np.full(shape, -2, dtype)))
    sched = Scheduler(eager)
    cp, compute = _fake_cupy(sched)
    x = np.arange(40.0).reshape(20, 2)
    y = np.arange(20) * 10
    order = np.random.default_rng(batch_size).permutation(20)
    seen = []
    for xb, yb in stream_batches(cp, x, y, order, batch_size):
        # The "model" reads the batch on the compute stream, when that stream gets to it.
        compute.enqueue(lambda xb=xb, yb=yb: seen.append((xb.a.copy(), yb.a.copy())))
    compute.synchronize()
    assert len(seen) == -(-20 // batch_size)
    np.testing.assert_array_equal(np.concatenate([s[0] for s in seen]), x[order])
    np.testing.assert_array_equal(np.concatenate([s[1] for s in seen]), y[order])


def test_rows_in_turn_and_no_labels(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(
        empty_pinned=lambda shape, dtype: np.full(shape, -2, dtype)))
    cp, compute = _fake_cupy(Scheduler("copy"))
    x = np.arange(10.0).reshape(5, 2)
    seen = []
    for xb, yb in stream_batches(cp, x, None, None, 2):
        assert yb is None
        compute.enqueue(lambda xb=xb: seen.append(xb.a.copy()))
    compute.synchronize()
    np.testing.assert_array_equal(np.concatenate(seen), x)
