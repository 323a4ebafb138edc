"""The copy and matrix-product ceilings: pooling, the threaded CPU copy, the copy at a thread count."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.backends.numpy_backend import NumpyBackend
from gpudense.benchmark import ceilings
from gpudense.benchmark.config import CEILING_SIZES


def test_finish_ceilings_pools_samples_and_uses_the_fastest():
    before = {"copy": {"bytes": 10**9, "samples_s": [1.0, 0.5]},
              "matmul": {"float32": {"n": 1000, "samples_s": [4e-3, 2e-3]}}}
    after = {"copy": {"bytes": 10**9, "samples_s": [0.25]},
             "matmul": {"float32": {"n": 1000, "samples_s": [3e-3]}}}
    c = ceilings.finish_ceilings(before, after)
    assert c["copy"]["samples_s"] == [1.0, 0.5, 0.25]
    assert c["copy"]["gbps"] == 8.0  # 2 GB moved in the fastest 0.25 s
    assert c["copy"]["gbps_median"] == 4.0
    assert c["matmul"]["float32"]["tflops"] == pytest.approx(1.0)  # 2e9 flop in 2 ms
    assert c["matmul"]["float32"]["stats"]["n"] == 3
    # a child process gets the parent's copy bandwidth instead of measuring it
    given = {"copy": {"gbps": 5.0, "how": "parent"}, "matmul": {}}
    assert ceilings.finish_ceilings(given, {"copy": None, "matmul": {}})["copy"]["gbps"] == 5.0


def test_finish_ceilings_keeps_a_failed_copy_check():
    ok = {"copy": {"bytes": 8, "samples_s": [1.0], "verified": True}, "matmul": {}}
    bad = {"copy": {"bytes": 8, "samples_s": [1.0], "verified": False}, "matmul": {}}
    assert ceilings.finish_ceilings(ok, ok)["copy"]["verified"] is True
    assert ceilings.finish_ceilings(ok, bad)["copy"]["verified"] is False


def test_add_rates_uses_the_median_and_the_pooled_ceilings():
    rows = [{"dtype": "float32", "flops": 2 * 10**9, "bytes": 10**9, "stats": {"median": 1e-3}},
            {"dtype": "float16", "flops": 10**9, "bytes": 10**6, "stats": {"median": 1e-3}}]
    ceil = {"copy": {"gbps": 2000.0}, "matmul": {"float32": {"tflops": 4.0}}}
    ceilings.add_rates(rows, ceil)
    assert rows[0]["tflops"] == pytest.approx(2.0) and rows[0]["frac_flops"] == pytest.approx(0.5)
    assert rows[0]["gbps"] == pytest.approx(1000.0) and rows[0]["frac_bw"] == pytest.approx(0.5)
    assert np.isnan(rows[1]["frac_flops"])  # no float16 matrix-product ceiling


def test_chunk_bounds_cover_the_range_contiguously():
    assert ceilings.chunk_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert ceilings.chunk_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty chunk
    assert ceilings.chunk_bounds(7, 1) == [(0, 7)]
    for n, parts in ((1, 1), (1000003, 2), (1000003, 7), (5, 5)):
        b = ceilings.chunk_bounds(n, parts)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        sizes = [hi - lo for lo, hi in b]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for bad in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            ceilings.chunk_bounds(*bad)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_parallel_copy_copies_every_element(rng, threads):
    src = rng.standard_normal(100_003).astype(np.float32)  # not a multiple of the thread count
    dst = np.zeros_like(src)
    with ceilings.ParallelCopy(dst, src, threads=threads) as copy:
        assert len(copy.pieces) == threads
        copy()
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(ValueError):
        ceilings.ParallelCopy(dst, src[:5], threads=2)
    with pytest.raises(ValueError):
        ceilings.ParallelCopy(dst, src, threads=0)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_cpu_copy_ceiling_runs_at_the_given_thread_count(threads):
    sizes = CEILING_SIZES["smoke"]
    c = ceilings.measure_ceilings(NumpyBackend(), ["float32"], sizes=sizes, repeats=2, warmup=0,
                                  threads=threads)
    n = threads or 1
    assert c["copy"]["threads"] == n
    assert f"{n} contiguous chunks by {n} threads" in c["copy"]["how"]
    assert c["copy"]["bytes"] == sizes["copy_bytes"] and len(c["copy"]["samples_s"]) == 2
    assert c["copy"]["verified"] is True
    assert c["matmul"]["float32"]["n"] == sizes["matmul_n"] and len(c["matmul"]["float32"]["samples_s"]) == 2
    # finish_ceilings keeps the thread count with the pooled samples
    assert ceilings.finish_ceilings(c, c)["copy"]["threads"] == n


def test_measure_ceilings_without_the_copy():
    c = ceilings.measure_ceilings(NumpyBackend(), ["float16"], sizes=CEILING_SIZES["smoke"],
                                  repeats=1, warmup=0, copy=False)
    assert c["copy"] is None and list(c["matmul"]) == ["float16"]


def test_random_normal_has_no_zeros_and_the_asked_dtype():
    a = ceilings.random_normal(np, np.random.default_rng(0), (64, 32), np.float16, 0.5)
    assert a.dtype == np.float16 and a.shape == (64, 32)
    assert np.all(a != 0) and np.all(np.isfinite(a))
    assert 0.3 < float(a.astype(np.float32).std()) < 0.7
