"""CPU-side checks of the CUDA backend: launch plan, summation order, kernel files, fallback, NVTX.

Nothing here needs a GPU. The bias-gradient kernel is simulated thread by
thread from the index formulas of kernels/bias_grad.cu (a literal, slow
model); the simulation checks that every element of dY is read exactly once,
that 16-byte loads are aligned and in bounds, and that the plan's fast NumPy
emulation (used by the GPU tests as a bitwise reference) adds in the same
order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpudense.backends.cuda.backend import (
    BLOCK,
    ENTRY_POINTS,
    MAX_GRID_Y,
    MIN_ROWS_PER_THREAD,
    _with_line_directive,
    bias_grad_plan,
    blocks_per_sm,
    emulate_bias_grad,
    kernel_source,
)

REPO = Path(__file__).resolve().parents[2]
ACC = {2: np.float32, 4: np.float32, 8: np.float64}
DTYPE = {2: np.float16, 4: np.float32, 8: np.float64}


# --------------------------------------------------------------------------
# A literal model of kernels/bias_grad.cu
# --------------------------------------------------------------------------


def _tree_literal(sm, ty_count, n):
    """sm[ty][i] lists; level s: rows [0, s) += rows [s, 2s), as gpudense_tree."""
    s = ty_count // 2
    while s > 0:
        for ty in range(s):
            for i in range(n):
                sm[ty][i] = sm[ty][i] + sm[ty + s][i]
        s //= 2
    return sm[0]


def simulate_kernel(mem, base, ld, plan, out=None, accumulate=False, reads=None):
    """Run both passes thread by thread on the flat host array ``mem``.

    dY[r, c] lives at mem[base + r * ld + c]. Every read is checked: in
    bounds of dY, and 16-byte aligned for vector loads. ``reads`` (batch, m)
    counts the reads of each element.
    """
    acc_t = ACC[plan.itemsize]
    t = DTYPE[plan.itemsize]
    batch, m, vec = plan.batch, plan.m, plan.vec
    zero = acc_t(0)

    def load(r, c):
        assert 0 <= r < batch and 0 <= c < m, f"read outside dY: row {r}, column {c}"
        if reads is not None:
            reads[r, c] += 1
        return acc_t(mem[base + r * ld + c])

    ws = {}
    final = {}
    for bx in range(plan.tiles):
        for by in range(plan.n_chunks):
            tile0 = bx * plan.tx * vec - (plan.head if plan.vec_path else 0)
            row_begin = by * plan.chunk_rows
            row_end = min(batch, row_begin + plan.chunk_rows)
            cols_of = {}
            partial = {}
            for ty in range(plan.ty):
                for tx in range(plan.tx):
                    if plan.vec_path:
                        c_first, c_step = tile0 + tx * vec, 1
                    else:
                        c_first, c_step = tile0 + tx, plan.tx
                    cols = [c_first + i * c_step for i in range(vec)]
                    cols_of[tx] = cols
                    acc = [zero] * vec
                    rows = list(range(row_begin + ty, row_end, plan.ty))
                    if plan.vec_path and c_first >= 0 and c_first + vec <= m:
                        for r in rows:
                            assert ((base + r * ld + c_first) * plan.itemsize) % 16 == 0, "misaligned vector load"
                    # The kernel loads UNROLL rows, then adds them in row order: the same order as this.
                    for r in rows:
                        for i, c in enumerate(cols):
                            if 0 <= c < m:
                                acc[i] = acc_t(acc[i] + load(r, c))
                    partial[(tx, ty)] = acc
            # tree per thread column tx, component i
            for tx in range(plan.tx):
                table = [list(partial[(tx, ty)]) for ty in range(plan.ty)]
                res = _tree_literal(table, plan.ty, vec)
                for i, c in enumerate(cols_of[tx]):
                    if 0 <= c < m:
                        if plan.final_in_pass1:
                            assert c not in final, f"column {c} written twice"
                            final[c] = res[i]
                        else:
                            assert (by, c) not in ws, f"workspace ({by}, {c}) written twice"
                            ws[(by, c)] = res[i]
    if not plan.final_in_pass1:
        assert len(ws) == plan.n_chunks * m, "workspace not fully written"
        ws_reads = {}
        for bx in range(plan.tiles2):
            table = {}
            for ty in range(plan.ty2):
                for tx in range(plan.tx2):
                    c = bx * plan.tx2 + tx
                    acc = zero
                    if c < m:
                        for k in range(ty, plan.n_chunks, plan.ty2):
                            ws_reads[(k, c)] = ws_reads.get((k, c), 0) + 1
                            acc = acc_t(acc + ws[(k, c)])
                    table[(tx, ty)] = acc
            for tx in range(plan.tx2):
                c = bx * plan.tx2 + tx
                col = [[table[(tx, ty)]] for ty in range(plan.ty2)]
                res = _tree_literal(col, plan.ty2, 1)[0]
                if c < m:
                    assert c not in final, f"column {c} written twice"
                    final[c] = res
        assert set(ws_reads.values()) == {1} and len(ws_reads) == plan.n_chunks * m
    assert sorted(final) == list(range(m)), "some column of db never written"
    s = np.array([final[c] for c in range(m)], acc_t)
    if accumulate:
        s = np.asarray(out).astype(acc_t) + s
    return s.astype(t)


def _layout(rng, batch, m, itemsize, offset, pad, order="rows"):
    """dY values in a flat buffer: element offset ``offset``, row pitch ``m + pad`` (or negative)."""
    t = DTYPE[itemsize]
    ld = m + pad
    values = rng.standard_normal((batch, m)).astype(t)
    n = offset + max(batch, 1) * abs(ld) + 16
    mem = np.full(n, np.nan, t)  # anything read that is not dY poisons the sum
    if order == "reversed":  # rows stored last to first: negative pitch
        base = offset + (batch - 1) * ld if batch else offset
        ld = -ld
    else:
        base = offset
    for r in range(batch):
        mem[base + r * ld : base + r * ld + m] = values[r]
    return values, mem, base, ld


CASES = [
    # batch, m, itemsize, element offset, row padding
    (1, 1, 4, 0, 0),
    (1, 1, 2, 3, 0),
    (0, 5, 4, 0, 0),
    (7, 1, 8, 0, 0),
    (37, 3, 4, 1, 0),
    (64, 13, 2, 5, 3),
    (129, 33, 4, 0, 0),
    (129, 33, 4, 2, 3),
    (150, 67, 2, 7, 5),
    (200, 17, 8, 1, 1),
    (300, 40, 4, 3, 4),
    (513, 9, 2, 0, 7),
    (2100, 1, 4, 1, 0),  # ty = 256 and several chunks
    (2300, 5, 2, 3, 3),
]


@pytest.mark.parametrize("batch, m, itemsize, offset, pad", CASES)
@pytest.mark.parametrize("n_sm", [1, 7, 132])
def test_literal_kernel_model_reads_everything_once_and_matches_the_emulation(
    rng, batch, m, itemsize, offset, pad, n_sm
):
    values, mem, base, ld = _layout(rng, batch, m, itemsize, offset, pad)
    plan = bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=base * itemsize, n_sm=n_sm)
    assert plan.vec_path == (batch <= 1 or (ld * itemsize) % 16 == 0)
    reads = np.zeros((batch, m), np.int64)
    got = simulate_kernel(mem, base, ld, plan, reads=reads)
    assert (reads == 1).all(), "every dY element must be read exactly once"
    want = emulate_bias_grad(values, plan)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    exact = values.astype(np.float64).sum(axis=0)
    u = np.finfo(ACC[itemsize]).eps / 2
    bound = np.finfo(DTYPE[itemsize]).eps / 2 * np.abs(exact) + batch * u * np.abs(values).astype(np.float64).sum(0)
    assert (np.abs(got.astype(np.float64) - exact) <= bound * 1.0001 + 1e-300).all()


def test_literal_model_with_negative_pitch_and_accumulate(rng):
    values, mem, base, ld = _layout(rng, 90, 21, 4, 4, 3, order="reversed")
    assert ld < 0
    plan = bias_grad_plan(90, 21, itemsize=4, ld=ld, ptr=base * 4, n_sm=5)
    assert plan.vec_path  # |ld| * 4 = 96 bytes, a multiple of 16
    old = rng.standard_normal(21).astype(np.float32)
    got = simulate_kernel(mem, base, ld, plan, out=old, accumulate=True)
    want = emulate_bias_grad(values, plan, old, accumulate=True)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_order_depends_only_on_shape_dtype_and_device(rng, itemsize):
    """Aligned, misaligned and strided layouts share the order, so db is bitwise the same."""
    batch, m = 1000, 45
    plans = [
        bias_grad_plan(batch, m, itemsize=itemsize, ld=m + pad, ptr=off * itemsize, n_sm=9)
        for off in range(8) for pad in (0, 1, 3, 19)
    ]
    keys = {(p.ty, p.chunk_rows, p.n_chunks, p.ty2, p.tx2) for p in plans}
    assert len(keys) == 1
    assert {p.vec_path for p in plans} == {True, False}
    assert len({p.head for p in plans}) > 1
    values = rng.standard_normal((batch, m)).astype(DTYPE[itemsize])
    first = emulate_bias_grad(values, plans[0])
    for p in plans[1:]:
        np.testing.assert_array_equal(emulate_bias_grad(values, p), first)


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


def test_emulation_empty_batch_and_accumulate(rng):
    plan = bias_grad_plan(0, 6, itemsize=2, ld=6, ptr=0, n_sm=4)
    np.testing.assert_array_equal(emulate_bias_grad(np.zeros((0, 6), np.float16), plan), np.zeros(6, np.float16))
    old = rng.standard_normal(6).astype(np.float16)
    np.testing.assert_array_equal(
        emulate_bias_grad(np.zeros((0, 6), np.float16), plan, old, accumulate=True), old
    )


def test_blocks_per_sm():
    assert blocks_per_sm(32, regs_per_sm=65536, threads_per_sm=2048) == 8
    assert blocks_per_sm(64, regs_per_sm=65536, threads_per_sm=2048) == 4
    assert blocks_per_sm(88, regs_per_sm=65536, threads_per_sm=2048) == 2
    assert blocks_per_sm(255, regs_per_sm=65536, threads_per_sm=2048) == 1


# --------------------------------------------------------------------------
# Kernel source
# --------------------------------------------------------------------------


def test_kernel_source_is_found_and_names_every_entry_point():
    source, path = kernel_source("bias_grad.cu")
    assert Path(path).name == "bias_grad.cu" and Path(path).is_file()
    for name in ENTRY_POINTS:
        assert f"{name}" in source
    code = _with_line_directive(source, path)
    assert code.startswith('#line 1 "') and code.splitlines()[0].endswith('bias_grad.cu"')
    assert code.endswith(source)


def test_kernel_source_missing_file_names_where_it_looked():
    from gpudense.backends.cuda.backend import KernelBuildError

    with pytest.raises(KernelBuildError, match="no_such_kernel.cu"):
        kernel_source("no_such_kernel.cu")


def test_wheel_ships_the_kernels_and_an_installed_gpudense_finds_them(tmp_path):
    """Build the wheel from a copy of the tree, install it with --target, load the source there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "gpudense", src / "gpudense", ignore=ignore)
    shutil.copytree(REPO / "kernels", src / "kernels", ignore=ignore)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )
    (wheel,) = wheels.glob("gpudense-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "gpudense/kernels/bias_grad.cu" in names, names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import gpudense; from gpudense.backends.cuda.backend import kernel_source;"
        "src, path = kernel_source('bias_grad.cu');"
        "print(gpudense.__file__); print(path); print('bias_grad_pass2_f16' in src)"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe, str(target)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    module_file, path, found = res.stdout.split()
    assert Path(module_file).resolve().is_relative_to(target.resolve()), module_file
    assert Path(path).resolve() == (target / "gpudense" / "kernels" / "bias_grad.cu").resolve()
    assert found == "True"
