"""Host data streamed to the GPU a batch at a time: pinned staging buffers and a second CuPy stream.

:func:`stream_batches` is :meth:`CupyBackend.stream_batches
<gpudense.backends.cuda.CupyBackend.stream_batches>`: training data that do
not fit in device memory (or :class:`~gpudense.datasets.Rows` of a
memory-mapped file) reach the device through two slots, each a pinned host
buffer and a device buffer. While the device computes batch ``k`` from one
slot, the host gathers batch ``k + 1`` into the other slot's pinned buffer
and a copy stream uploads it; the compute stream waits for that upload only
when it reaches batch ``k + 1`` (an event, not a host wait). The copy stream
in turn waits (an event) until the compute stream is done with the batch
that last used the slot, and the host waits for a slot's previous upload
before it overwrites the pinned buffer.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np


def stream_batches(cp: Any, x: Any, y: Any, order: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """Batches ``(xb, yb)`` of host rows as CuPy arrays, each upload overlapped with the previous batch's compute.

    Args:
        cp: The ``cupy`` module.
        x: Host features ``(n, n_features)``: a NumPy array or
            :class:`~gpudense.datasets.Rows`.
        y: Host int labels ``(n,)``, or None (then every ``yb`` is None).
        order: Host row indices to visit, or None for the rows in turn.
        batch_size: Rows per batch; the last may be smaller.

    Yields:
        ``(xb, yb)`` on the current device, ready on the current stream. A
        batch's buffers are reused two batches later: use it before asking
        for the next but one.
    """
    import cupyx

    n = int(x.shape[0] if order is None else order.shape[0])
    if n == 0:
        return
    m, width = min(batch_size, n), int(x.shape[1])
    host_x = [cupyx.empty_pinned((m, width), x.dtype) for _ in range(2)]
    host_y = [cupyx.empty_pinned((m,), np.int64) for _ in range(2)]
    dev_x = [cp.empty((m, width), x.dtype) for _ in range(2)]
    dev_y = [cp.empty((m,), cp.int64) for _ in range(2)]
    compute = cp.cuda.get_current_stream()
    copy_stream = cp.cuda.Stream(non_blocking=True)
    uploaded: list[Any] = [None, None]  # the slot's last upload is done (recorded on the copy stream)
    used: list[Any] = [None, None]  # the compute stream is done with the slot's last batch

    def stage(k: int) -> tuple[Any, Any]:
        slot, start = k % 2, k * batch_size
        rows = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        count = min(batch_size, n - start)
        if uploaded[slot] is not None:
            uploaded[slot].synchronize()  # the pinned buffer is no longer being read
        hx, hy = host_x[slot][:count], host_y[slot][:count]
        hx[...] = x[rows]
        if y is not None:
            hy[...] = y[rows]
        if used[slot] is not None:
            copy_stream.wait_event(used[slot])
        dx, dy = dev_x[slot][:count], dev_y[slot][:count]
        dx.set(hx, stream=copy_stream)
        if y is not None:
            dy.set(hy, stream=copy_stream)
        uploaded[slot] = copy_stream.record()
        return dx, (None if y is None else dy)

    try:
        ahead = stage(0)
        for k in range((n + batch_size - 1) // batch_size):
            slot = k % 2
            compute.wait_event(uploaded[slot])
            yield ahead
            used[slot] = compute.record()
            if (k + 1) * batch_size < n:
                ahead = stage(k + 1)  # the host gathers, and the copy stream uploads, while the device computes k
    finally:
        copy_stream.synchronize()  # no upload may outlive its buffers
