"""Flat buffers: many named arrays laid out one after another in a single 1-D buffer.

A :class:`FlatLayout` says where each named array (a parameter, its
gradient, a slot of optimizer state) lies in a contiguous 1-D buffer: at an
offset rounded up to a multiple of :data:`ALIGN` elements, so every array
starts on a cache line (64 bytes of float32) and vector loads stay aligned;
the gaps are zeros and stay zeros. The offsets count elements, not bytes, so
one layout serves buffers of every dtype alike: the float16 parameters, their
float16 gradients and their float32 optimizer state line up element for
element. Each array is a view of its buffer (:meth:`FlatLayout.view`), and an
update of many arrays becomes one pass over the buffers: one elementwise
kernel on a GPU, cache-sized chunks (:func:`chunk_bounds`) on a CPU, one call
of a gradient all-reduce.

Example:
    >>> import numpy as np
    >>> layout = FlatLayout([("w", (3, 4)), ("b", (4,))])
    >>> layout.offsets, layout.size
    ((0, 16), 32)
    >>> buf = np.zeros(layout.size, np.float32)
    >>> layout.view(buf, "b")[:] = 1.0
    >>> float(buf.sum()), layout.view(buf, "w").shape
    (4.0, (3, 4))
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

__all__ = ["ALIGN", "CHUNK_BYTES", "FlatLayout", "FlatParams", "chunk_bounds"]

#: Every array in a flat buffer starts at a multiple of this many elements (64 bytes of float32).
ALIGN = 16
#: Bytes of one array that a CPU update handles per chunk. An Adam step touches five
#: arrays per chunk (parameter, gradient, two moments, one temporary): 1.25 MiB, within
#: the L2 or the near L3 of a current x86 core. Smaller chunks pay NumPy's per-call cost
#: (about a microsecond per operation) more often; on the build machine 128 KiB chunks
#: made an Adam step of a 784-1024-1024-10 network slower and larger ones no faster.
CHUNK_BYTES = 256 * 1024


class FlatLayout:
    """Where each named array lies in a flat buffer (of any dtype).

    Args:
        entries: ``[(name, shape), ...]`` in buffer order; names are unique.

    Attributes:
        names: The names, in order.
        shapes: Their shapes.
        offsets: Each array's first element in the buffer, a multiple of
            :data:`ALIGN`.
        sizes: Each array's element count.
        size: Elements of the whole buffer (the last array's end, aligned).
        index: ``name -> position`` in ``names``.

    Raises:
        ValueError: a name appears twice, or a shape has a negative size.
    """

    def __init__(self, entries: Sequence[tuple[str, tuple[int, ...]]]) -> None:
        step = ALIGN
        names, shapes, offsets, sizes = [], [], [], []
        end = 0
        for name, shape in entries:
            shape = tuple(int(d) for d in shape)
            if any(d < 0 for d in shape):
                raise ValueError(f"flat layout: {name} has a negative size in shape {shape}")
            names.append(name)
            shapes.append(shape)
            offsets.append(end)
            sizes.append(math.prod(shape))
            end += -(-sizes[-1] // step) * step
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"flat layout: names must be unique; {twice} appear more than once")
        self.names: tuple[str, ...] = tuple(names)
        self.shapes: tuple[tuple[int, ...], ...] = tuple(shapes)
        self.offsets: tuple[int, ...] = tuple(offsets)
        self.sizes: tuple[int, ...] = tuple(sizes)
        self.size = end
        self.index = {name: i for i, name in enumerate(names)}

    def view(self, buffer: Any, name: str) -> Any:
        """The array ``name`` as a view of ``buffer`` (NumPy or CuPy, 1-D, ``size`` elements)."""
        i = self.index[name]
        start = self.offsets[i]
        return buffer[start:start + self.sizes[i]].reshape(self.shapes[i])

    def span(self, first: int, last: int) -> tuple[int, int]:
        """``(start, stop)`` in the buffer from array ``first``'s start to array ``last``'s end (positions)."""
        return self.offsets[first], self.offsets[last] + self.sizes[last]

    def __repr__(self) -> str:
        return f"FlatLayout({len(self.names)} arrays, {self.size} elements)"


class FlatParams:
    """A model's parameters and their gradients in two flat buffers of one layout.

    :class:`~gpudense.nn.Sequential` makes one for its layers: every layer's
    ``w`` and ``b`` are views of ``params`` and its gradient arrays views of
    ``grads``, at the layout's offsets, so an optimizer can update all
    parameters in one pass and a data-parallel run all-reduce all gradients
    in one call, without copying. The gaps of the layout hold zeros.

    Args:
        layout: Where each named parameter lies.
        xp: The array module (``backend.xp``).
        dtype: The parameters' dtype.

    Attributes:
        layout: The :class:`FlatLayout`.
        params, grads: 1-D buffers of ``layout.size`` elements.
        param_views, grad_views: Each parameter's and each gradient's view,
            in the layout's order.

    Example:
        >>> import numpy as np
        >>> flat = FlatParams(FlatLayout([("w", (2, 3)), ("b", (3,))]), np, np.float32)
        >>> flat.param_views[1].shape, flat.params.size
        ((3,), 32)
    """

    def __init__(self, layout: FlatLayout, xp: Any, dtype: Any) -> None:
        self.layout = layout
        self.params = xp.zeros(layout.size, dtype=dtype)
        self.grads = xp.zeros(layout.size, dtype=dtype)
        self.param_views = [layout.view(self.params, n) for n in layout.names]
        self.grad_views = [layout.view(self.grads, n) for n in layout.names]

    def __repr__(self) -> str:
        return f"FlatParams({len(self.layout.names)} arrays, {self.layout.size} elements of {self.params.dtype})"


def chunk_bounds(n: int, itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` pairs that cover ``range(n)`` in chunks of ``chunk_bytes`` worth of items.

    Example:
        >>> list(chunk_bounds(10, 4, chunk_bytes=16))
        [(0, 4), (4, 8), (8, 10)]
    """
    step = max(1, chunk_bytes // itemsize)
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)
