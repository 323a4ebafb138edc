"""emulate_bias_grad against a literal, thread-by-thread model of kernels/bias_grad.cu.

Nothing here needs a GPU. The bias-gradient kernel is simulated thread by
thread from the index formulas of kernels/bias_grad.cu (a literal, slow
model); the simulation checks that every element of dY is read exactly once,
that 16-byte loads are aligned and in bounds, and that the plan's fast NumPy
emulation (used by the GPU tests as a bitwise reference) adds in the same
order.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.backends.cuda import bias_grad_plan
from kernel_emulation import emulate_bias_grad

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


@pytest.mark.parametrize("n_sm", [132, 108, 46])
@pytest.mark.parametrize("batch, m, itemsize", [(5000, 33, 4), (3000, 20, 2), (2500, 9, 8), (600, 70, 2)])
def test_literal_model_aligned_and_misaligned_give_the_same_bits_in_one_wave(rng, n_sm, batch, m, itemsize):
    """H100/H200, A100 and a small GPU: the aligned and the misaligned layout of the same dY are
    summed in one order (bitwise the same db, equal to the emulation) by a grid within one wave."""
    results = []
    for offset in (0, 1):  # the second one element off a 16-byte boundary: a head of 1
        values, mem, base, ld = _layout(np.random.default_rng(batch + m), batch, m, itemsize, offset, 0)
        plan = bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=base * itemsize, n_sm=n_sm,
                              blocks_per_sm=4)
        assert plan.tiles * plan.n_chunks <= max(4 * n_sm, plan.tiles)
        reads = np.zeros((batch, m), np.int64)
        got = simulate_kernel(mem, base, ld, plan, reads=reads)
        assert (reads == 1).all()
        np.testing.assert_array_equal(got.view(np.uint8), emulate_bias_grad(values, plan).view(np.uint8))
        results.append((plan.head, got))
    assert results[0][0] != results[1][0] or (m * itemsize) % 16, "the two layouts differ in alignment"
    np.testing.assert_array_equal(results[0][1].view(np.uint8), results[1][1].view(np.uint8))


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



def test_emulation_empty_batch_and_accumulate(rng):
    plan = bias_grad_plan(0, 6, itemsize=2, ld=6, ptr=0, n_sm=4)
    np.testing.assert_array_equal(emulate_bias_grad(np.zeros((0, 6), np.float16), plan), np.zeros(6, np.float16))
    old = rng.standard_normal(6).astype(np.float16)
    np.testing.assert_array_equal(
        emulate_bias_grad(np.zeros((0, 6), np.float16), plan, old, accumulate=True), old
    )



def test_emulation_rejects_a_dy_that_does_not_fit_the_plan():
    plan = bias_grad_plan(4, 3, itemsize=4, ld=3, ptr=0, n_sm=2)
    with pytest.raises(ValueError, match=r"dy has shape \(3, 4\); the plan is for \(4, 3\)"):
        emulate_bias_grad(np.zeros((3, 4), np.float32), plan)
    with pytest.raises(TypeError, match="float16, float32 or float64 dy; got int32"):
        emulate_bias_grad(np.zeros((4, 3), np.int32), plan)
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        emulate_bias_grad(np.zeros((4, 3), np.float32), plan, accumulate=True)

