"""Gradients in a few flat buckets, so that a step costs a handful of all-reduces, not one per array.

The parameters are laid out, in the model's order, in buckets of one dtype
each and at most ``bucket_bytes`` (a parameter larger than that has a bucket
of its own). Each bucket is one flat, contiguous array per step:

* where the gradients already are consecutive views into one contiguous
  buffer (a model whose gradients live in a flat buffer, see
  :mod:`gpudense.flat`), that buffer's span is all-reduced in place: no copy;
* otherwise the gradients are packed into the bucket's own flat buffer
  (allocated once, on the model's backend), the buffer is all-reduced, and
  the sums are unpacked into the gradients.

Which of the two happens is found out at every step, from the arrays'
addresses (a few comparisons per parameter): gradients that are created
anew by each backward are packed, views are not.

The same layout broadcasts the parameters from rank 0 at the start of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gpudense._checks import int_at_least
from gpudense.flat import ALIGN

#: Bucket capacity: 25 MiB, as PyTorch DDP's ``bucket_cap_mb`` default.
DEFAULT_BUCKET_BYTES = 25 * 2**20


def _address(a: Any) -> int:
    """The address of ``a``'s first element: ``a.data.ptr`` for CuPy (without importing it), else NumPy's."""
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    return int(ptr) if ptr is not None else int(a.__array_interface__["data"][0])


def _owner(a: Any) -> Any:
    """The array that owns ``a``'s memory (following ``.base``), or None when it is not an array."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a if hasattr(a, "shape") and hasattr(a, "dtype") else None


@dataclass
class Bucket:
    """One flat span of same-dtype parameters: names, shapes and offsets (in elements).

    Attributes:
        dtype: The parameters' dtype.
        names, shapes, offsets, sizes: Per parameter, in the model's order.
        size: Elements in the bucket.
        buffer: The packing buffer, allocated on the first pack (None until then).
    """

    dtype: np.dtype
    names: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    size: int = 0
    buffer: Any = None

    def add(self, name: str, shape: tuple[int, ...]) -> None:
        n = int(np.prod(shape, dtype=np.int64))
        self.names.append(name)
        self.shapes.append(tuple(shape))
        self.offsets.append(self.size)
        self.sizes.append(n)
        self.size += n

    def span(self, arrays: list[Any]) -> Any:
        """The flat span that ``arrays`` already are, one after another, inside one buffer; else None.

        True when each array is C-contiguous with the bucket's dtype and
        shape, all share one C-contiguous owner (themselves, for a bucket of
        one array), the first at some offset and each next one right after
        the previous or after a gap of fewer than :data:`gpudense.flat.ALIGN`
        elements (the padding a :class:`~gpudense.flat.FlatLayout` leaves to
        start every array on a cache line). The span includes the gaps: an
        all-reduce sums them too, and nothing reads them.
        """
        owner = _owner(arrays[0])
        if owner is None or not owner.flags.c_contiguous or owner.dtype != self.dtype:
            return None
        item = self.dtype.itemsize
        base = _address(owner)
        start = (_address(arrays[0]) - base) // item
        position = start
        for a, shape, n in zip(arrays, self.shapes, self.sizes):
            offset, rest = divmod(_address(a) - base, item)
            if (_owner(a) is not owner or a.dtype != self.dtype or tuple(a.shape) != shape
                    or not a.flags.c_contiguous or rest or not position <= offset < position + ALIGN):
                return None
            position = offset + n
        if start < 0 or position > owner.size:
            return None
        return owner.reshape(-1)[start:position]

    def pack(self, arrays: list[Any], xp: Any) -> Any:
        """Copy ``arrays`` into the packing buffer (allocated on first use); returns it."""
        if self.buffer is None:
            self.buffer = xp.empty(self.size, dtype=self.dtype)
        for a, offset, n, shape in zip(arrays, self.offsets, self.sizes, self.shapes):
            self.buffer[offset:offset + n].reshape(shape)[...] = a
        return self.buffer

    def unpack(self, arrays: list[Any]) -> None:
        """Copy the packing buffer back into ``arrays``."""
        for a, offset, n, shape in zip(arrays, self.offsets, self.sizes, self.shapes):
            a[...] = self.buffer[offset:offset + n].reshape(shape)


class GradientBuckets:
    """The bucket layout of ``model``'s parameters, and the all-reduce of their gradients through ``comm``.

    Args:
        model: Anything with ``param_grads()`` and ``backend`` (e.g.
            :class:`~gpudense.nn.MLP`).
        comm: A :class:`~gpudense.distributed.Communicator`.
        bucket_bytes: Capacity of a bucket, >= 1 (default 25 MiB).

    Attributes:
        buckets: The :class:`Bucket` list, in parameter order.

    Example:
        >>> from gpudense.nn import MLP
        >>> from gpudense.distributed import LocalCommunicator
        >>> model = MLP([4, 8, 3], backend="numpy", rng=0)
        >>> buckets = GradientBuckets(model, LocalCommunicator())
        >>> [b.names for b in buckets.buckets]
        [['0.w', '0.b', '2.w', '2.b']]
    """

    def __init__(self, model: Any, comm: Any, *, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        int_at_least("bucket_bytes", bucket_bytes, 1)
        self.model, self.comm = model, comm
        self.xp = model.backend.xp
        self.buckets: list[Bucket] = []
        for pg in model.param_grads():
            dtype = np.dtype(pg.param.dtype)
            last = self.buckets[-1] if self.buckets else None
            if last is None or last.dtype != dtype or (last.size + pg.param.size) * dtype.itemsize > bucket_bytes:
                last = Bucket(dtype)
                self.buckets.append(last)
            last.add(pg.name, tuple(pg.param.shape))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{b.size} x {b.dtype.name}" for b in self.buckets)
        return f"GradientBuckets({len(self.buckets)} bucket{'s' if len(self.buckets) != 1 else ''}: {sizes})"

    def _arrays(self, which: str) -> list[list[Any]]:
        """Per bucket, the parameters' (``which="param"``) or gradients' (``"grad"``) arrays."""
        found = {pg.name: pg for pg in self.model.param_grads()}
        out = []
        for bucket in self.buckets:
            arrays = []
            for name in bucket.names:
                a = getattr(found[name], which)
                if a is None:
                    raise RuntimeError(
                        f"parameter {name} has no gradient on rank {self.comm.rank}: "
                        "every rank must run backward before the gradients are all-reduced"
                    )
                arrays.append(a)
            out.append(arrays)
        return out

    def _each(self, which: str, collective: Callable[[Any], Any]) -> None:
        if self.comm.size == 1:  # every collective is the identity
            return
        for bucket, arrays in zip(self.buckets, self._arrays(which)):
            span = bucket.span(arrays)
            if span is not None:
                collective(span)
            else:
                collective(bucket.pack(arrays, self.xp))
                bucket.unpack(arrays)

    def allreduce(self) -> None:
        """Sum every gradient over all ranks, in place: one all-reduce per bucket.

        Raises:
            RuntimeError: a parameter has no gradient on this rank.
        """
        self._each("grad", self.comm.allreduce)

    def broadcast_params(self, root: int = 0) -> None:
        """Give every rank rank ``root``'s parameter values: one broadcast per bucket."""
        self._each("param", lambda a: self.comm.broadcast(a, root))
