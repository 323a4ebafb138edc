"""The launch plan of the bias-gradient kernel: pure Python, no CuPy.

:func:`bias_grad_plan` turns a ``(batch, m)`` array, its layout and the
device's size into the grid, block, chunk size and workspace of the two
passes of ``kernels/bias_grad.cu``. The plan fixes the order in which the
kernel adds, so it is what the tests' NumPy model of the kernel
(``tests/kernel_emulation.py``) follows to predict its result bit for bit.

The constants the kernel shares with the plan (:data:`BLOCK`, :data:`UNROLL`,
:data:`VECTOR_BYTES`) are defined here only; the kernel receives them as
``-D`` compiler options (:func:`gpudense.backends.cuda.loader.kernel_defines`).

The same plan drives the fused activation-gradient kernel
(``kernels/bias_act.cu``), whose bias sum follows the same order.

The plan's cost model, in *rounds*: a pass-1 thread issues
:data:`UNROLL` 16-byte loads, then adds them; one such round costs about one
memory latency (0.5-1 us) while the device is not bandwidth-bound. A
one-chunk plan runs ``tiles`` blocks and each thread needs
``ceil(batch / ty) / UNROLL`` rounds. Splitting the batch into chunks shortens
that to a round or two, but adds a second launch, the workspace and pass 2's
own round trip: together about :data:`SINGLE_PASS_ROUNDS` rounds. So a batch
is summed in one chunk (one launch, no workspace) when each pass-1 block
streams at most :data:`SINGLE_PASS_BLOCK_BYTES` bytes, 16 bytes per thread
and row for ``SINGLE_PASS_ROUNDS * UNROLL`` rows; beyond that, splitting pays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Threads per block of both bias-gradient passes (``GPUDENSE_BLOCK`` in the kernel).
BLOCK = 256
#: Rows each thread loads before its first add (``GPUDENSE_UNROLL`` in the kernel).
UNROLL = 4
#: Fewest rows a pass-1 thread adds (chunks are a multiple of this times block.y).
MIN_ROWS_PER_THREAD = 2
#: Bytes per vector load (``GPUDENSE_VECTOR_BYTES`` in the kernel).
VECTOR_BYTES = 16
#: What splitting the batch costs, in rounds of UNROLL loads (see the module docstring):
#: a second launch (2-4 us), the workspace written and read, and pass 2's own round.
SINGLE_PASS_ROUNDS = 4
#: A batch is one chunk (one launch, no workspace) when each pass-1 block streams at most
#: this many bytes: 256 threads x 16 bytes x 16 rows = 64 KiB.
SINGLE_PASS_BLOCK_BYTES = BLOCK * VECTOR_BYTES * UNROLL * SINGLE_PASS_ROUNDS
#: The same bound in rows per pass-1 thread (16).
SINGLE_PASS_ROWS_PER_THREAD = SINGLE_PASS_BLOCK_BYTES // (BLOCK * VECTOR_BYTES)
#: Largest grid.y the CUDA launch accepts.
MAX_GRID_Y = 65535
#: The type the kernels add in (also the workspace's dtype), by dtype name, bfloat16 included
#: (its dtype needs ml_dtypes, so names are the keys).
ACCUMULATOR_BY_NAME = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
                       "float16": np.dtype(np.float32), "bfloat16": np.dtype(np.float32)}


def accumulator_dtype(dtype: object) -> np.dtype:
    """The type the kernels add ``dtype``'s values in: float64 for float64, else float32.

    Raises:
        TypeError: not float16, bfloat16, float32 or float64.

    Example:
        >>> accumulator_dtype(np.float16)
        dtype('float32')
    """
    name = np.dtype(dtype).name
    if name not in ACCUMULATOR_BY_NAME:
        raise TypeError(f"the kernels sum float16, bfloat16, float32 or float64; got {name}")
    return ACCUMULATOR_BY_NAME[name]


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
    ld: int  #: row pitch in elements, as given
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

    @functools.cached_property
    def pass1_scalars(self) -> tuple[np.int64, np.int64, np.int64, np.int64, np.int32, np.int32]:
        """Pass 1's size arguments, built once per plan: ``(batch, m, ld, chunk_rows, head, vec_path)``."""
        i64, i32 = np.int64, np.int32
        return (i64(self.batch), i64(self.m), i64(self.ld), i64(self.chunk_rows), i32(self.head),
                i32(self.vec_path))

    @functools.cached_property
    def pass2_scalars(self) -> tuple[np.int64, np.int64]:
        """Pass 2's size arguments, built once per plan: ``(n_chunks, m)``."""
        return (np.int64(self.n_chunks), np.int64(self.m))

    @functools.cached_property
    def final_flag(self) -> np.int32:
        """``final_pass`` as the kernel takes it (1: pass 1 writes ``db``)."""
        return np.int32(self.final_in_pass1)


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
    n_chunks)``. The number of chunks is the largest that keeps
    :func:`worst_case_tiles` ``* n_chunks`` within ``n_sm * blocks_per_sm``
    (one wave of resident blocks: the whole device busy and no straggling
    partial wave, whether ``dy`` is tall and narrow, short and wide or
    square, and whatever its address), with at least ``MIN_ROWS_PER_THREAD``
    rows per thread; a batch whose pass-1 blocks would each stream at most
    :data:`SINGLE_PASS_BLOCK_BYTES` is one chunk, summed in a single launch
    (the module docstring gives the cost model behind that bound). Pass 2
    reduces the ``n_chunks`` partial sums of each column with ``(tx2, ty2)``
    blocks, ``tx2`` a power of two up to 32 columns.

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
    rows_step = ty * MIN_ROWS_PER_THREAD
    # One wave: tiles * n_chunks <= the resident-block slots (a second, partial
    # wave of a few blocks would run on a few SMs only and could add a third
    # to the time), as many chunks as fit otherwise. The tile count is taken
    # at its worst over all addresses, so a misaligned dy (one more tile) stays
    # in the wave too, and the chunking, hence the order, ignores the address.
    want_chunks = max(1, (n_sm * blocks_per_sm) // worst_case_tiles(m, itemsize))
    if _ceil_div(batch, ty) * BLOCK * VECTOR_BYTES <= SINGLE_PASS_BLOCK_BYTES:
        want_chunks = 1  # small in bytes: one launch beats a split (see the module docstring)
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
        batch=batch, m=m, itemsize=itemsize, ld=ld, vec=vec, vec_path=vec_path, head=head,
        tx=tx, ty=ty, tiles=tiles, chunk_rows=chunk_rows, n_chunks=n_chunks,
        tx2=tx2, ty2=ty2, tiles2=tiles2,
    )


def worst_case_tiles(m: int, itemsize: int) -> int:
    """Pass-1 column tiles of an ``m``-column array at its worst alignment.

    A tile is ``tx * vec`` columns; on the 16-byte path the tiles start up to
    ``vec - 1`` columns before column 0 (the ``head``), which can add one
    tile. The plan sizes its chunks from this count, which depends on ``(m,
    itemsize)`` alone.

    Example:
        >>> worst_case_tiles(60, 4), worst_case_tiles(64, 4)  # 64 columns + a head need two tiles
        (1, 2)
    """
    m, itemsize = int(m), int(itemsize)
    vec = VECTOR_BYTES // itemsize
    tx = min(32, _pow2_ceil(_ceil_div(m, vec)))
    return _ceil_div(m + vec - 1, tx * vec)


@functools.lru_cache(maxsize=512)
def cached_plan(batch: int, m: int, itemsize: int, ld: int, ptr16: int, n_sm: int, bps: int) -> BiasGradPlan:
    """:func:`bias_grad_plan`, remembered for the 512 most recent argument tuples.

    The launch path calls it with ``ptr16 = address % VECTOR_BYTES`` (all the
    plan reads of the address), so one training loop's few shapes are planned
    once each.
    """
    return bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=ptr16, n_sm=n_sm, blocks_per_sm=bps)
