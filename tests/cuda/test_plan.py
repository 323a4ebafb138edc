"""The bias-gradient launch plan (gpudense.backends.cuda.plan), on the CPU.

Every element of dY is covered by exactly one pass-1 thread, 16-byte loads
are aligned, the grid stays within CUDA's limits and fills the device in one
wave, and bad arguments are refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpudense.backends.cuda.plan import (
    BLOCK,
    MAX_GRID_Y,
    MIN_ROWS_PER_THREAD,
    SINGLE_PASS_BLOCK_BYTES,
    SINGLE_PASS_ROWS_PER_THREAD,
    UNROLL,
    VECTOR_BYTES,
    accumulator_dtype,
    bias_grad_plan,
    blocks_per_sm,
    cached_plan,
    worst_case_tiles,
)

#: SM counts: H100 and H200 (132), A100 (108), a small GPU (46).
DEVICES = [132, 108, 46]


def _coverage(plan, base, ld):
    """Vectorised count of pass-1 reads per (row, column) and vector-load alignment, from the plan."""
    counts = np.zeros((plan.batch, plan.m), np.int32)
    tx = np.arange(plan.tx)
    i = np.arange(plan.vec)
    for bx in range(plan.tiles):
        tile0 = bx * plan.tx * plan.vec - (plan.head if plan.vec_path else 0)
        if plan.vec_path:
            c_first = tile0 + tx * plan.vec
            cols = c_first[:, None] + i[None, :]
        else:
            c_first = tile0 + tx
            cols = c_first[:, None] + i[None, :] * plan.tx
        vector = plan.vec_path & (c_first >= 0) & (c_first + plan.vec <= plan.m)
        if plan.batch and vector.any():
            addr = (base + np.arange(plan.batch)[:, None] * ld + c_first[vector][None, :]) * plan.itemsize
            assert (addr % 16 == 0).all(), "misaligned vector load"
        cols = cols[(cols >= 0) & (cols < plan.m)]
        for by in range(plan.n_chunks):
            r0 = by * plan.chunk_rows
            r1 = min(plan.batch, r0 + plan.chunk_rows)
            # each of the ty threads takes rows r0 + ty, + ty_count, ...: together every row once
            rows = np.concatenate([np.arange(r0 + ty, r1, plan.ty) for ty in range(plan.ty)])
            if rows.size:
                np.add.at(counts, np.ix_(rows, cols), 1)
    return counts


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 3000),
    m=st.integers(1, 300),
    itemsize=st.sampled_from([2, 4, 8]),
    offset=st.integers(0, 15),
    pad=st.integers(0, 20),
    n_sm=st.integers(1, 200),
)
def test_plan_covers_every_element_once(batch, m, itemsize, offset, pad, n_sm):
    ld = m + pad
    plan = bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=offset * itemsize, n_sm=n_sm)
    assert plan.tx * plan.ty == BLOCK and plan.tx2 * plan.ty2 == BLOCK
    assert plan.tx & (plan.tx - 1) == 0 and plan.ty2 & (plan.ty2 - 1) == 0
    assert plan.chunk_rows % (plan.ty * MIN_ROWS_PER_THREAD) == 0
    assert 1 <= plan.n_chunks <= MAX_GRID_Y
    assert plan.n_chunks * plan.chunk_rows >= batch
    assert (plan.n_chunks - 1) * plan.chunk_rows < max(batch, 1)  # no empty chunk (batch > 0)
    assert plan.tiles * plan.tx * plan.vec >= m + plan.head
    assert plan.tiles2 * plan.tx2 >= m
    ws_rows, ws_cols = plan.workspace_shape
    assert ws_cols == m and ws_rows == (0 if plan.n_chunks == 1 else plan.n_chunks)
    assert (_coverage(plan, offset, ld) == 1).all()


@pytest.mark.parametrize(
    "batch, m", [(65536, 4096), (8192, 16384), (1048576, 64), (256, 4096), (8192, 8192), (2**21, 1)]
)
@pytest.mark.parametrize("itemsize", [2, 4, 8])
@pytest.mark.parametrize("n_sm", [108, 132])
def test_plan_fills_the_device(batch, m, itemsize, n_sm):
    """Tall-narrow, short-wide and square shapes all launch at least one block per SM."""
    plan = bias_grad_plan(batch, m, itemsize=itemsize, ld=m, ptr=0, n_sm=n_sm, blocks_per_sm=4)
    blocks = plan.tiles * plan.n_chunks
    assert blocks >= n_sm, plan
    assert blocks <= max(4 * n_sm, plan.tiles), plan  # one wave of resident blocks


def test_plan_for_huge_batch_keeps_grid_y_in_range():
    plan = bias_grad_plan(2**40, 1, itemsize=2, ld=1, ptr=0, n_sm=132, blocks_per_sm=8)
    assert plan.n_chunks <= MAX_GRID_Y and plan.n_chunks * plan.chunk_rows >= 2**40
    plan = bias_grad_plan(2**31 + 7, 3, itemsize=2, ld=3, ptr=2, n_sm=10**5)
    assert plan.n_chunks <= MAX_GRID_Y and plan.n_chunks * plan.chunk_rows >= 2**31 + 7


@pytest.mark.parametrize(
    "kwargs",
    [dict(batch=-1, m=3), dict(batch=3, m=0), dict(batch=3, m=3, itemsize=3), dict(batch=3, m=3, ptr=1)],
)
def test_plan_rejects_bad_arguments(kwargs):
    args = dict(itemsize=4, ld=3, ptr=0, n_sm=4)
    args.update(kwargs)
    with pytest.raises(ValueError):
        bias_grad_plan(args.pop("batch"), args.pop("m"), **args)


def test_blocks_per_sm():
    assert blocks_per_sm(32, regs_per_sm=65536, threads_per_sm=2048) == 8
    assert blocks_per_sm(64, regs_per_sm=65536, threads_per_sm=2048) == 4
    assert blocks_per_sm(88, regs_per_sm=65536, threads_per_sm=2048) == 2
    assert blocks_per_sm(255, regs_per_sm=65536, threads_per_sm=2048) == 1


@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_each_pass1_thread_owns_one_vector_of_columns(itemsize):
    plan = bias_grad_plan(100, 50, itemsize=itemsize, ld=56, ptr=0, n_sm=4)
    assert plan.vec * itemsize == VECTOR_BYTES


def test_small_batch_is_one_launch_and_a_larger_one_is_split():
    m = 4  # float32: one column group, tx = 1, ty = BLOCK
    small = bias_grad_plan(BLOCK * SINGLE_PASS_ROWS_PER_THREAD, m, itemsize=4, ld=m, ptr=0, n_sm=132)
    assert small.ty == BLOCK and small.final_in_pass1 and small.workspace_shape == (0, m)
    large = bias_grad_plan(BLOCK * SINGLE_PASS_ROWS_PER_THREAD + 1, m, itemsize=4, ld=m, ptr=0, n_sm=132)
    assert not large.final_in_pass1 and large.workspace_shape == (large.n_chunks, m)


def test_cached_plan_is_the_plan_and_is_remembered():
    first = cached_plan(5000, 70, 2, 72, 4, 9, 4)
    assert first == bias_grad_plan(5000, 70, itemsize=2, ld=72, ptr=4, n_sm=9, blocks_per_sm=4)
    assert cached_plan(5000, 70, 2, 72, 4, 9, 4) is first


def _order(plan):
    """What fixes the summation order of a column."""
    return (plan.ty, plan.chunk_rows, plan.n_chunks, plan.ty2, plan.tx2)


@pytest.mark.parametrize("n_sm", DEVICES)
@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(0, 3 * 10**6),
    m=st.integers(1, 5000),
    itemsize=st.sampled_from([2, 4, 8]),
    bps=st.integers(1, 8),
)
def test_grid_stays_in_one_wave_and_the_order_ignores_the_address(n_sm, batch, m, itemsize, bps):
    """Every alignment and row pitch: at most one wave of blocks, and one summation order."""
    vec = VECTOR_BYTES // itemsize
    plans = [
        bias_grad_plan(batch, m, itemsize=itemsize, ld=m + pad, ptr=off * itemsize, n_sm=n_sm, blocks_per_sm=bps)
        for off in range(vec) for pad in (0, 1, vec)
    ]
    slots = n_sm * bps
    worst = worst_case_tiles(m, itemsize)
    for p in plans:
        assert p.tiles <= worst
        assert p.tiles * p.n_chunks <= max(slots, worst), p  # within the wave (or one chunk of a wider grid)
    assert len({_order(p) for p in plans}) == 1


@pytest.mark.parametrize("n_sm", DEVICES)
@pytest.mark.parametrize("itemsize", [2, 4, 8])
@pytest.mark.parametrize("batch, m", [(1048576, 64), (65536, 4096), (8192, 16384), (4096, 61), (300000, 7)])
def test_misaligned_dy_stays_in_one_wave(n_sm, itemsize, batch, m):
    """The shapes of the benchmark with dy one element off a 16-byte boundary."""
    for bps in (1, 2, 4, 6):
        aligned = bias_grad_plan(batch, m, itemsize=itemsize, ld=m, ptr=0, n_sm=n_sm, blocks_per_sm=bps)
        shifted = bias_grad_plan(batch, m, itemsize=itemsize, ld=m, ptr=itemsize, n_sm=n_sm, blocks_per_sm=bps)
        assert shifted.head == 1 or not shifted.vec_path
        for p in (aligned, shifted):
            assert p.tiles * p.n_chunks <= max(n_sm * bps, p.tiles), p
        assert _order(aligned) == _order(shifted)


def test_the_misaligned_example_of_a_tall_narrow_array():
    """(1048576, 64) float32 one element off: two tiles, and the chunks sized for them (528 slots)."""
    p = bias_grad_plan(1048576, 64, itemsize=4, ld=64, ptr=4, n_sm=132, blocks_per_sm=4)
    assert p.head == 1 and p.tiles == 2 == worst_case_tiles(64, 4)
    assert p.tiles * p.n_chunks <= 528


def test_single_pass_is_chosen_by_the_bytes_a_block_streams():
    """One chunk while a pass-1 block streams at most SINGLE_PASS_BLOCK_BYTES, split beyond."""
    assert SINGLE_PASS_BLOCK_BYTES == BLOCK * VECTOR_BYTES * UNROLL * 4 == 64 * 1024
    assert SINGLE_PASS_ROWS_PER_THREAD * BLOCK * VECTOR_BYTES == SINGLE_PASS_BLOCK_BYTES
    for itemsize in (2, 4, 8):
        for m in (1, 5, 64, 1000, 4096):
            p = bias_grad_plan(1, m, itemsize=itemsize, ld=m, ptr=0, n_sm=132)
            ty = p.ty
            rows = SINGLE_PASS_ROWS_PER_THREAD * ty  # 16 rows per thread: 64 KiB per block
            assert bias_grad_plan(rows, m, itemsize=itemsize, ld=m, ptr=0, n_sm=132).final_in_pass1
            bigger = bias_grad_plan(rows + 1, m, itemsize=itemsize, ld=m, ptr=0, n_sm=132)
            # Split, unless one chunk of tiles already fills the device.
            assert (not bigger.final_in_pass1) or worst_case_tiles(m, itemsize) * 2 > 132 * 4


def test_launch_arguments_are_built_once_per_plan():
    p = cached_plan(5000, 70, 2, 72, 4, 9, 4)
    assert p.pass1_scalars is p.pass1_scalars and p.pass2_scalars is p.pass2_scalars
    assert [type(v) for v in p.pass1_scalars] == [np.int64] * 4 + [np.int32] * 2
    assert tuple(int(v) for v in p.pass1_scalars) == (5000, 70, 72, p.chunk_rows, p.head, int(p.vec_path))
    assert tuple(int(v) for v in p.pass2_scalars) == (p.n_chunks, 70)
    assert type(p.final_flag) is np.int32 and int(p.final_flag) == int(p.final_in_pass1)


def test_accumulator_by_dtype_name_includes_bfloat16():
    from gpudense._checks import bfloat16_dtype

    assert accumulator_dtype(bfloat16_dtype()) == np.float32 == accumulator_dtype(np.float16)
    assert accumulator_dtype(np.float64) == np.float64
    with pytest.raises(TypeError, match="got int32"):
        accumulator_dtype(np.int32)
