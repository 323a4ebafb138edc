"""The launch plan of the bias-gradient kernel: pure Python, no CuPy.

:func:`bias_grad_plan` turns a ``(batch, m)`` array, its layout and the
device's size into the grid, block, chunk size and workspace of the two
passes of ``kernels/bias_grad.cu``. The plan fixes the order in which the
kernel adds, so it is what :func:`gpudense.backends.cuda.emulate_bias_grad`
follows to predict the kernel's result bit for bit.

The constants the kernel shares with the plan (:data:`BLOCK`, :data:`UNROLL`,
:data:`VECTOR_BYTES`) are defined here only; the kernel receives them as
``-D`` compiler options (:func:`gpudense.backends.cuda.loader.kernel_defines`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ACCUMULATOR",
    "BLOCK",
    "MAX_GRID_Y",
    "MIN_ROWS_PER_THREAD",
    "SINGLE_PASS_ROWS_PER_THREAD",
    "UNROLL",
    "VECTOR_BYTES",
    "BiasGradPlan",
    "bias_grad_plan",
    "blocks_per_sm",
    "cached_plan",
]

#: Threads per block of both bias-gradient passes (``GPUDENSE_BLOCK`` in the kernel).
BLOCK = 256
#: Rows each thread loads before its first add (``GPUDENSE_UNROLL`` in the kernel).
UNROLL = 4
#: Fewest rows a pass-1 thread adds (chunks are a multiple of this times block.y).
MIN_ROWS_PER_THREAD = 2
#: A batch of at most this many rows per pass-1 thread is summed in one chunk (one launch).
SINGLE_PASS_ROWS_PER_THREAD = 8
#: Bytes per vector load (``GPUDENSE_VECTOR_BYTES`` in the kernel).
VECTOR_BYTES = 16
#: Largest grid.y the CUDA launch accepts.
MAX_GRID_Y = 65535
#: The type the kernel adds in, per element type (also the workspace's dtype).
ACCUMULATOR = {
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float16): np.dtype(np.float32),
}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class BiasGradPlan:
    """How the bias-gradient kernel covers a ``(batch, m)`` array; see :func:`bias_grad_plan`."""

    batch: int
    m: int
    itemsize: int
    vec: int  #: columns per pass-1 thread (16 bytes of elements)
    vec_path: bool  #: 16-byte loads (row pitch a multiple of 16 bytes)
    head: int  #: elements from the 16-byte boundary before column 0 to column 0 (vector path)
    tx: int  #: pass-1 block.x (threads across columns)
    ty: int  #: pass-1 block.y (threads down the batch)
    tiles: int  #: pass-1 grid.x (column tiles of tx * vec columns)
    chunk_rows: int  #: rows per batch chunk
    n_chunks: int  #: pass-1 grid.y
    tx2: int  #: pass-2 block.x
    ty2: int  #: pass-2 block.y
    tiles2: int  #: pass-2 grid.x

    @property
    def final_in_pass1(self) -> bool:
        """One chunk: pass 1 writes ``db`` itself and pass 2 is not launched."""
        return self.n_chunks == 1

    @property
    def workspace_shape(self) -> tuple[int, int]:
        """Shape of the partial-sum workspace (accumulator dtype); ``(0, m)`` when not needed."""
        return (0 if self.final_in_pass1 else self.n_chunks, self.m)

    @property
    def grid1(self) -> tuple[int, int, int]:
        return (self.tiles, self.n_chunks, 1)

    @property
    def block1(self) -> tuple[int, int, int]:
        return (self.tx, self.ty, 1)

    @property
    def grid2(self) -> tuple[int, int, int]:
        return (self.tiles2, 1, 1)

    @property
    def block2(self) -> tuple[int, int, int]:
        return (self.tx2, self.ty2, 1)


def blocks_per_sm(num_regs: int, *, regs_per_sm: int, threads_per_sm: int, block: int = BLOCK) -> int:
    """Resident blocks of ``block`` threads per SM for a kernel using ``num_regs`` registers per thread.

    Registers are allocated per warp in units of 256 (8 per thread); the
    result is between 1 and ``threads_per_sm // block``.

    Args:
        num_regs: Registers per thread of the kernel (``RawKernel.num_regs``).
        regs_per_sm: The device's ``MaxRegistersPerMultiprocessor``.
        threads_per_sm: The device's ``MaxThreadsPerMultiProcessor``.
        block: Threads per block.

    Returns:
        How many blocks fit on one SM at once, at least 1.

    Example:
        >>> blocks_per_sm(64, regs_per_sm=65536, threads_per_sm=2048)
        4
    """
    per_thread = max(8, _ceil_div(int(num_regs), 8) * 8)
    by_regs = int(regs_per_sm) // (per_thread * block)
    by_threads = int(threads_per_sm) // block
    return max(1, min(by_regs, by_threads))


def bias_grad_plan(
    batch: int,
    m: int,
    *,
    itemsize: int,
    ld: int,
    ptr: int,
    n_sm: int,
    blocks_per_sm: int = 4,
) -> BiasGradPlan:
    """The launch plan of the bias-gradient kernel for a ``(batch, m)`` array.

    Pure Python, so it is tested on the CPU. Each pass-1 thread owns
    ``vec = VECTOR_BYTES // itemsize`` columns; ``tx`` threads across (a
    power of two, at most 32, enough for ``ceil(m / vec)`` column groups) and
    ``ty = BLOCK // tx`` threads down the batch. The grid is ``(tiles,
    n_chunks)``; the number of chunks is the largest that keeps ``tiles *
    n_chunks`` within ``n_sm * blocks_per_sm`` (one wave of resident blocks:
    the whole device busy and no straggling partial wave, whether ``dy`` is
    tall and narrow, short and wide or square), with at least
    ``MIN_ROWS_PER_THREAD`` rows per thread; a batch of at most
    ``SINGLE_PASS_ROWS_PER_THREAD * ty`` rows is one chunk, summed in a
    single launch. Pass 2 reduces the ``n_chunks`` partial sums of each
    column with ``(tx2, ty2)`` blocks, ``tx2`` a power of two up to 32 columns.

    The summation order of a column depends on ``ty``, ``chunk_rows``,
    ``n_chunks`` and ``ty2`` only, which are functions of ``(batch, m,
    itemsize, n_sm, blocks_per_sm)``: not of the address or row pitch, which
    only choose between 16-byte and element loads and shift the tiles by
    ``head`` columns. The same values give bitwise the same ``db`` whether
    ``dy`` is contiguous, strided or misaligned.

    Args:
        batch: Rows of ``dy`` (may be 0).
        m: Columns of ``dy`` (at least 1).
        itemsize: Bytes per element: 8, 4 or 2.
        ld: Row pitch in elements (``dy.strides[0] // itemsize``; any sign).
        ptr: Address of ``dy[0, 0]``, a multiple of ``itemsize``.
        n_sm: Streaming multiprocessors on the device.
        blocks_per_sm: Resident pass-1 blocks per SM (see :func:`blocks_per_sm`).

    Returns:
        A :class:`BiasGradPlan`.

    Raises:
        ValueError: a size or the address is out of range.

    Example:
        >>> p = bias_grad_plan(1048576, 64, itemsize=4, ld=64, ptr=0, n_sm=132)
        >>> p.grid1[0] * p.grid1[1] >= 132, p.vec_path
        (True, True)
    """
    batch, m, itemsize, ld, ptr = int(batch), int(m), int(itemsize), int(ld), int(ptr)
    if batch < 0 or m < 1:
        raise ValueError(f"bias_grad_plan needs batch >= 0 and m >= 1; got batch={batch}, m={m}")
    if itemsize not in (2, 4, 8):
        raise ValueError(f"itemsize must be 2, 4 or 8; got {itemsize}")
    if ptr % itemsize:
        raise ValueError(f"ptr {ptr:#x} is not a multiple of the itemsize {itemsize}")
    if n_sm < 1 or blocks_per_sm < 1:
        raise ValueError(f"n_sm and blocks_per_sm must be >= 1; got {n_sm}, {blocks_per_sm}")
    vec = VECTOR_BYTES // itemsize
    # The order-defining part: from the shape, dtype and device only.
    groups = _ceil_div(m, vec)
    tx = min(32, _pow2_ceil(groups))
    ty = BLOCK // tx
    nominal_tiles = _ceil_div(groups, tx)
    rows_step = ty * MIN_ROWS_PER_THREAD
    # One wave: tiles * n_chunks <= the resident-block slots (a second, partial
    # wave of a few blocks would run on a few SMs only and could add a third
    # to the time), as many chunks as fit otherwise.
    want_chunks = max(1, (n_sm * blocks_per_sm) // nominal_tiles)
    if batch <= ty * SINGLE_PASS_ROWS_PER_THREAD:
        want_chunks = 1  # tiny batch: one launch beats splitting it over more blocks
    chunk_rows = max(rows_step, _ceil_div(_ceil_div(batch, want_chunks), rows_step) * rows_step)
    n_chunks = max(1, _ceil_div(batch, chunk_rows))
    if n_chunks > MAX_GRID_Y:
        chunk_rows = _ceil_div(_ceil_div(batch, MAX_GRID_Y), rows_step) * rows_step
        n_chunks = _ceil_div(batch, chunk_rows)
    # Pass 2: down to 8 columns (32-byte rows) per block while that gives more
    # blocks than SMs, so that a narrow db with many chunks is read by many threads.
    tx2 = min(32, _pow2_ceil(m))
    while tx2 > 8 and _ceil_div(m, tx2) < n_sm:
        tx2 //= 2
    ty2 = BLOCK // tx2
    tiles2 = _ceil_div(m, tx2)
    # The address-dependent part: which loads, and where the tiles start.
    vec_path = batch <= 1 or (ld * itemsize) % VECTOR_BYTES == 0
    head = (ptr % VECTOR_BYTES) // itemsize if vec_path else 0
    tiles = _ceil_div(m + head, tx * vec)
    return BiasGradPlan(
        batch=batch, m=m, itemsize=itemsize, vec=vec, vec_path=vec_path, head=head,
        tx=tx, ty=ty, tiles=tiles, chunk_rows=chunk_rows, n_chunks=n_chunks,
        tx2=tx2, ty2=ty2, tiles2=tiles2,
    )


@functools.lru_cache(maxsize=512)
def cached_plan(batch: int, m: int, itemsize: int, ld: int, ptr16: int, n_sm: int, bps: int) -> BiasGradPlan:
    """:func:`bias_grad_plan`, remembered for the 512 most recent argument tuples.

    The launch path calls it with ``ptr16 = address % VECTOR_BYTES`` (all the
    plan reads of the address), so one training loop's few shapes are planned
    once each.
    """
    return bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=ptr16, n_sm=n_sm, blocks_per_sm=bps)
