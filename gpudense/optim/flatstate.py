"""Optimizer state in flat buffers, and the chunked CPU update that walks them.

The optimizer groups a model's parameters by array type and dtype (one group
for a :class:`~gpudense.nn.MLP`). A :class:`StateGroup` lays the group's
parameters out in one :class:`~gpudense.flat.FlatLayout` and keeps every
state slot (Adam's ``m`` and ``v``, SGD's momentum, the float32 master copy
of 16-bit parameters) as one flat buffer over that layout; the optimizer's
``state[slot][name]`` arrays are views of these buffers.

On the GPU a step is one elementwise kernel per buffer
(:meth:`gpudense.backends.Backend.optimizer_update`). On the CPU it walks the
buffers in chunks of :data:`~gpudense.flat.CHUNK_BYTES` per array with
in-place NumPy operations (:func:`run_chunks`): every operation of the update
runs on a chunk while it is in the L2 cache, instead of streaming whole
arrays through memory once per operation.

Subnormal numbers. When a ReLU unit stops firing, its gradients are exactly
zero and Adam's ``m`` decays by ``b1`` every step, through the subnormal
range (below ``numpy.finfo(dtype).tiny``, 1.2e-38 in float32) before it
reaches zero; on many x86 CPUs arithmetic on subnormal numbers is 10-100
times slower. The update therefore sets every entry of the fast-decaying
state (Adam's ``m``, SGD's momentum) whose magnitude is below ``tiny`` to
zero (of its sign) after each step, and every :data:`FLUSH_PERIOD` steps of a parameter
does the same for the slowly decaying state (Adam's ``v``) and for the
parameter itself (its float32 master for 16-bit parameters). Such values
move a parameter by far less than its rounding error, so the results are
those of exact arithmetic as closely as before; only the time changes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from gpudense._checks import wide_dtype
from gpudense.flat import FlatLayout, chunk_bounds

#: Every this many steps of a parameter, its slowly decaying state and the parameter itself
#: are flushed of subnormal numbers too (the fast-decaying state is flushed every step).
FLUSH_PERIOD = 16


class StateGroup:
    """Parameters of one array type and dtype, and their optimizer state in flat buffers.

    Args:
        backend: The backend of the parameters.
        dtype: Their dtype; the state is kept in ``wide_dtype(dtype)``.
        names, shapes: The parameters, in the model's order.
        positions: Where each lies in the model's ``param_grads()`` list.
        slots: The state slots to keep (the master slot is added for 16-bit dtypes).
        master_slot: The name of the master slot.
        array_type: The parameters' array type (``numpy.ndarray``, ``cupy.ndarray``).

    Attributes:
        layout: The :class:`~gpudense.flat.FlatLayout` of the group.
        wide: The state dtype.
        master: Whether the parameters keep a wide master copy.
        buffers: ``slot -> 1-D array`` of ``layout.size`` elements, zeros
            where no state has been made.
        slices: Per parameter, ``slot -> its 1-D part of the slot's buffer``.
    """

    def __init__(self, backend: Any, dtype: Any, names: Sequence[str], shapes: Sequence[tuple[int, ...]],
                 positions: Sequence[int], slots: Sequence[str], master_slot: str, array_type: type) -> None:
        self.backend = backend
        self.array_type = array_type
        self.dtype = np.dtype(dtype)
        self.wide = wide_dtype(self.dtype)
        self.master = self.wide != self.dtype
        self.master_slot = master_slot
        self.names = tuple(names)
        self.positions = tuple(positions)
        self.layout = FlatLayout(list(zip(names, shapes)))
        kept = [s for s in slots if s != master_slot] + ([master_slot] if self.master else [])
        xp = backend.xp
        self.buffers: dict[str, Any] = {s: xp.zeros(self.layout.size, dtype=self.wide) for s in kept}
        #: The model's flat buffers (:class:`~gpudense.flat.FlatParams`) when laid out as this group.
        self.model_flat: Any = None
        self.slices: list[dict[str, Any]] = []
        for start, size in zip(self.layout.offsets, self.layout.sizes):
            self.slices.append({s: buf[start:start + size] for s, buf in self.buffers.items()})

    def matches(self, flat: Any) -> bool:
        """Whether ``flat`` (a model's :class:`~gpudense.flat.FlatParams`) has this group's layout, dtype and array type."""
        return (flat.layout.names == self.layout.names and flat.layout.shapes == self.layout.shapes
                and type(flat.params) is self.array_type and np.dtype(flat.params.dtype) == self.dtype)

    def view(self, slot: str, name: str) -> Any:
        """The state ``slot`` of parameter ``name``, in the parameter's shape (a view of the buffer)."""
        return self.layout.view(self.buffers[slot], name)

    def clear(self) -> None:
        """Set every state buffer to zero."""
        for buf in self.buffers.values():
            buf.fill(0)


def signature(pgs: Sequence[Any]) -> tuple[Any, ...]:
    """What the groups depend on: each parameter's name, shape, dtype and array type, in order."""
    return tuple((pg.name, tuple(pg.param.shape), pg.param.dtype, type(pg.param)) for pg in pgs)


def build_groups(pgs: Sequence[Any], slots: Sequence[str], master_slot: str,
                 backend_of: Callable[..., Any]) -> list[StateGroup]:
    """One :class:`StateGroup` per (array type, dtype) of the parameters in ``pgs``, in first-seen order."""
    keys: dict[tuple[Any, np.dtype], list[int]] = {}
    for k, pg in enumerate(pgs):
        keys.setdefault((type(pg.param), np.dtype(pg.param.dtype)), []).append(k)
    groups = []
    for (array_type, dtype), positions in keys.items():
        members = [pgs[k] for k in positions]
        backend = backend_of(members[0].param)
        groups.append(StateGroup(backend, dtype, [pg.name for pg in members],
                                 [tuple(pg.param.shape) for pg in members], positions, slots, master_slot,
                                 array_type))
    return groups


class Scratch:
    """Temporaries of one chunk for the CPU update: three arrays of the state dtype and a mask."""

    def __init__(self, xp: Any, dtype: np.dtype, n: int) -> None:
        self.a = xp.empty(n, dtype=dtype)
        self.b = xp.empty(n, dtype=dtype)
        self.g = xp.empty(n, dtype=dtype)
        self.mask = xp.empty(n, dtype=bool)


def flush_small(xp: Any, a: Any, tiny: Any, scratch: Any, mask: Any, *, signed: bool = True) -> None:
    """Multiply the entries of ``a`` whose magnitude is below ``tiny`` by zero (``scratch``, ``mask``: temporaries).

    A subnormal entry becomes a zero of its sign; every other entry is
    multiplied by one, unchanged (NaN and inf included). The multiply by a
    mask has no branch per entry, so it costs the same whatever share of the
    entries is flushed or already zero (a masked copy slows down several
    times where dead units leave many zeros). ``signed=False`` is for
    arrays known to be >= 0 (Adam's ``v``), which need no ``abs``.
    """
    if signed:
        xp.abs(a, out=scratch)
        xp.greater_equal(scratch, tiny, out=mask)
    else:
        xp.greater_equal(a, tiny, out=mask)
    xp.multiply(a, mask, out=a)


def run_chunks(xp: Any, scratches: Sequence[Scratch], chunk: Callable[..., None], w: Any, g: Any,
               state: Sequence[Any], p_low: Any, pool: Any = None) -> None:
    """Call ``chunk(w, g, state, scratch_a, scratch_b, mask)`` on cache-sized pieces of 1-D arrays.

    Args:
        xp: The array module.
        scratches: Temporaries of at least one chunk, one set per thread.
        chunk: The update of one piece, in place on ``w`` and ``state``.
        w: The array to update: the parameter, or its wide master copy.
        g: The gradient (the parameter's dtype; cast to ``w``'s piece by piece
            when they differ).
        state: The state slots' arrays, as ``w``.
        p_low: The 16-bit parameter rewritten from ``w`` after each piece, or None.
        pool: A ``concurrent.futures`` executor with ``len(scratches) - 1``
            workers, or None. With it, and at least two chunks per thread, the
            chunks are split into that many contiguous parts, one per thread
            (NumPy releases the GIL inside each operation, so the parts run
            at once on as many cores).
    """
    bounds = list(chunk_bounds(int(w.shape[0]), w.dtype.itemsize))
    threads = len(scratches)
    if pool is None or threads < 2 or len(bounds) < 2 * threads:
        _run_part(scratches[0], chunk, w, g, state, p_low, bounds)
        return
    per = -(-len(bounds) // threads)
    parts = [bounds[i:i + per] for i in range(0, len(bounds), per)]
    futures = [pool.submit(_run_part, scratches[k], chunk, w, g, state, p_low, part)
               for k, part in enumerate(parts[1:], start=1)]
    _run_part(scratches[0], chunk, w, g, state, p_low, parts[0])
    for f in futures:
        f.result()


def _run_part(scratch: Scratch, chunk: Callable[..., None], w: Any, g: Any, state: Sequence[Any], p_low: Any,
              bounds: Sequence[tuple[int, int]]) -> None:
    for lo, hi in bounds:
        k = hi - lo
        gc = g[lo:hi]
        if gc.dtype != w.dtype:
            cast = scratch.g[:k]
            cast[...] = gc
            gc = cast
        wc = w[lo:hi]
        chunk(wc, gc, [s[lo:hi] for s in state], scratch.a[:k], scratch.b[:k], scratch.mask[:k])
        if p_low is not None:
            p_low[lo:hi] = wc
