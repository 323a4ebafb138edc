"""Statistics of timing samples, the work of a stage, rates and fractions of the ceilings.

No timing is asserted anywhere: only that the arithmetic gives what it says.
"""

from __future__ import annotations

import math

import pytest

from gpudense.benchmark import stats


def test_summarize_known_values():
    st = stats.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert st == {"n": 5, "median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "min": 1.0,
                  "max": 5.0, "mean": 3.0}
    # even count: linear interpolation between the middle values
    st = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert st["median"] == 2.5 and st["q1"] == 1.75 and st["q3"] == 3.25
    assert stats.summarize([7.0])["iqr"] == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [1.0, math.nan], [[1.0]]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        stats.summarize(bad)


def test_paired_ratio():
    # per-repeat ratios 0.5, 1.0, 4.0 -> median 1.0
    assert stats.paired_ratio([1.0, 2.0, 8.0], [2.0, 2.0, 2.0]) == 1.0
    # drift cancels: both twice as slow in the second half
    assert stats.paired_ratio([1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]) == 0.5
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0], [0.0])


def test_stage_work_counts():
    b, i, o, s = 4, 3, 2, 4
    assert stats.stage_work("forward", b, i, o, s) == (2 * 4 * 3 * 2, (12 + 6 + 2 + 8) * 4)
    assert stats.stage_work("dx", b, i, o, s) == (48, (8 + 6 + 12) * 4)
    assert stats.stage_work("dw", b, i, o, s) == (48, (12 + 8 + 6) * 4)
    assert stats.stage_work("db", b, i, o, s) == (8, (8 + 2) * 4)
    assert stats.stage_work("db.sum", b, i, o, s) == stats.stage_work("db.ones", b, i, o, s)
    step = stats.stage_work("step", b, i, o, s)
    parts = [stats.stage_work(st, b, i, o, s) for st in ("forward", "dx", "dw", "db")]
    assert step == (sum(p[0] for p in parts), sum(p[1] for p in parts))
    assert stats.stage_work("torch.step", b, i, o, s) == step
    # 2 * batch * in * out operations per matrix product
    assert stats.stage_work("forward", 8192, 4096, 16384, 2)[0] == 2 * 8192 * 4096 * 16384
    with pytest.raises(ValueError):
        stats.stage_work("backward", b, i, o, s)


def test_ceiling_arithmetic():
    assert stats.copy_gbps(10**9, 0.5) == 4.0  # 1 GB read + 1 GB written in 0.5 s
    assert stats.matmul_tflops(1000, 2e-3) == pytest.approx(1.0)
    assert stats.matmul_tflops(8192, 1.0) == pytest.approx(2 * 8192**3 / 1e12)
    with pytest.raises(ValueError):
        stats.copy_gbps(1, 0.0)


def test_rates_and_fractions():
    r = stats.rates(4 * 10**12, 10**9, 2.0, peak_tflops=4.0, peak_gbps=1.0)
    assert r["tflops"] == 2.0 and r["gbps"] == 0.5
    assert r["frac_flops"] == 0.5 and r["frac_bw"] == 0.5 and r["fraction"] == 0.5
    r = stats.rates(10**6, 8 * 10**9, 1.0, peak_tflops=1.0, peak_gbps=10.0)
    assert r["fraction"] == pytest.approx(0.8)  # bandwidth-bound: the larger fraction
    r = stats.rates(10**12, 10**9, 1.0, peak_tflops=None, peak_gbps=None)
    assert math.isnan(r["frac_flops"]) and math.isnan(r["fraction"])


def test_n_rotating_sets():
    assert stats.n_rotating_sets(10, 100, budget_bytes=10_000) == 20  # 2 x cache
    assert stats.n_rotating_sets(1000, 100, budget_bytes=10_000) == 1  # one set beats the cache
    assert stats.n_rotating_sets(10, 100, budget_bytes=50) == 5  # memory budget
    assert stats.n_rotating_sets(10, 100, budget_bytes=10_000, max_sets=3) == 3
    assert stats.n_rotating_sets(100, 100, budget_bytes=1) == 1  # never 0
