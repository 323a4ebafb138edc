"""The benchmark harness: statistics and ceiling arithmetic, the JSON layout, a CLI run.

No timing is asserted anywhere: only that the harness computes what it says
from the samples it took, and writes what it promises.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpudense import benchmark as bench
from gpudense.backends.numpy_backend import NumpyBackend
from gpudense.cli import main


# -- statistics -----------------------------------------------------------------

def test_summarize_known_values():
    st = bench.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert st == {"n": 5, "median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "min": 1.0,
                  "max": 5.0, "mean": 3.0}
    # even count: linear interpolation between the middle values
    st = bench.summarize([1.0, 2.0, 3.0, 4.0])
    assert st["median"] == 2.5 and st["q1"] == 1.75 and st["q3"] == 3.25
    assert bench.summarize([7.0])["iqr"] == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [1.0, math.nan], [[1.0]]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        bench.summarize(bad)


def test_paired_ratio():
    # per-repeat ratios 0.5, 1.0, 4.0 -> median 1.0
    assert bench.paired_ratio([1.0, 2.0, 8.0], [2.0, 2.0, 2.0]) == 1.0
    # drift cancels: both twice as slow in the second half
    assert bench.paired_ratio([1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]) == 0.5
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0], [0.0])


def test_split_repeats():
    assert bench.split_repeats(10, 4) == [3, 3, 2, 2]
    assert bench.split_repeats(3, 4) == [1, 1, 1]
    assert sum(bench.split_repeats(20, 4)) == 20
    with pytest.raises(ValueError):
        bench.split_repeats(0, 4)


# -- work and ceilings ---------------------------------------------------------------

def test_stage_work_counts():
    b, i, o, s = 4, 3, 2, 4
    assert bench.stage_work("forward", b, i, o, s) == (2 * 4 * 3 * 2, (12 + 6 + 2 + 8) * 4)
    assert bench.stage_work("dx", b, i, o, s) == (48, (8 + 6 + 12) * 4)
    assert bench.stage_work("dw", b, i, o, s) == (48, (12 + 8 + 6) * 4)
    assert bench.stage_work("db", b, i, o, s) == (8, (8 + 2) * 4)
    assert bench.stage_work("db.sum", b, i, o, s) == bench.stage_work("db.ones", b, i, o, s)
    step = bench.stage_work("step", b, i, o, s)
    parts = [bench.stage_work(st, b, i, o, s) for st in ("forward", "dx", "dw", "db")]
    assert step == (sum(p[0] for p in parts), sum(p[1] for p in parts))
    assert bench.stage_work("torch.step", b, i, o, s) == step
    # the issue's TFLOP count: 2 * batch * in * out per matrix product
    assert bench.stage_work("forward", 8192, 4096, 16384, 2)[0] == 2 * 8192 * 4096 * 16384
    with pytest.raises(ValueError):
        bench.stage_work("backward", b, i, o, s)


def test_ceiling_arithmetic():
    assert bench.copy_gbps(10**9, 0.5) == 4.0  # 1 GB read + 1 GB written in 0.5 s
    assert bench.matmul_tflops(1000, 2e-3) == pytest.approx(1.0)
    assert bench.matmul_tflops(8192, 1.0) == pytest.approx(2 * 8192**3 / 1e12)
    with pytest.raises(ValueError):
        bench.copy_gbps(1, 0.0)


def test_rates_and_fractions():
    r = bench.rates(4 * 10**12, 10**9, 2.0, peak_tflops=4.0, peak_gbps=1.0)
    assert r["tflops"] == 2.0 and r["gbps"] == 0.5
    assert r["frac_flops"] == 0.5 and r["frac_bw"] == 0.5 and r["fraction"] == 0.5
    r = bench.rates(10**6, 8 * 10**9, 1.0, peak_tflops=1.0, peak_gbps=10.0)
    assert r["fraction"] == pytest.approx(0.8)  # bandwidth-bound: the larger fraction
    r = bench.rates(10**12, 10**9, 1.0, peak_tflops=None, peak_gbps=None)
    assert math.isnan(r["frac_flops"]) and math.isnan(r["fraction"])


def test_n_rotating_sets():
    assert bench.n_rotating_sets(10, 100, budget_bytes=10_000) == 20  # 2 x cache
    assert bench.n_rotating_sets(1000, 100, budget_bytes=10_000) == 1  # one set beats the cache
    assert bench.n_rotating_sets(10, 100, budget_bytes=50) == 5  # memory budget
    assert bench.n_rotating_sets(10, 100, budget_bytes=10_000, max_sets=3) == 3
    assert bench.n_rotating_sets(100, 100, budget_bytes=1) == 1  # never 0


def test_tf32_plan():
    assert bench.tf32_plan(["float32", "tf32", "float16"], None) == {
        "here": ["float32", "float16"], "1": ["tf32"], "0": []}
    assert bench.tf32_plan(["float32", "tf32", "float16"], "1") == {
        "here": ["tf32", "float16"], "1": [], "0": ["float32"]}
    assert bench.tf32_plan(["tf32"], "0")["1"] == ["tf32"]


def test_parse_shapes_and_dtypes():
    table = bench.SHAPES["gpu"]
    assert bench.parse_shapes(None, table) == list(table.items())
    assert bench.parse_shapes("square, 2x3x4", table) == [
        ("square", (4096, 4096, 4096)), ("2x3x4", (2, 3, 4))]
    for bad in ("2x3", "0x1x1", "huge", ","):
        with pytest.raises(ValueError):
            bench.parse_shapes(bad, table)
    assert bench.parse_dtypes("float16,tf32", ["float32"]) == ["float16", "tf32"]
    with pytest.raises(ValueError):
        bench.parse_dtypes("bfloat16", ["float32"])
    assert bench.storage_dtype("tf32") == np.float32


def test_issue_default_gpu_shapes():
    assert bench.SHAPES["gpu"] == {
        "small": (128, 64, 64), "tall-narrow": (1048576, 64, 64),
        "square": (4096, 4096, 4096), "transformer": (8192, 4096, 16384)}


def test_run_rounds_calls_each_stage_with_rotating_sets():
    calls: list[tuple[str, int]] = []

    class FakeTimer:
        kind = "fake"
        t = 0.0

        def time(self, fn):
            fn()
            FakeTimer.t += 1.0
            return FakeTimer.t

    fns = {name: (lambda k, name=name: calls.append((name, k))) for name in ("a", "b")}
    s = bench.run_rounds(fns, n_sets=3, repeats=5, warmup=1, timer=FakeTimer(),
                         nvtx=lambda name: __import__("contextlib").nullcontext(), rounds=2)
    assert [len(v) for v in s.values()] == [5, 5]
    # shares [3, 2]; per round and stage: one warm-up call, then the timed calls,
    # timed call i on set i % 3
    assert [k for name, k in calls if name == "a"] == [0, 0, 1, 2, 0, 0, 1]
    assert [name for name, _ in calls] == ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3


# -- JSON layout and a run through the command line ----------------------------------------

def _valid_doc():
    row = {
        "shape": "s", "batch": 2, "n_in": 3, "n_out": 4, "dtype": "float32", "stage": "dx",
        "impl": "gpudense", "samples_s": [1e-3, 2e-3], "stats": bench.summarize([1e-3, 2e-3]),
        "flops": 48, "bytes": 100, "tflops": 1.0, "gbps": 2.0, "frac_flops": 0.5,
        "frac_bw": None, "fraction": 0.5, "ratios": {},
    }
    env = {"numpy": "2", "cpu_model": "x", "threads": 2, "torch": "no", "blas": [],
           "env_vars": {}, "python": "3"}
    return {"schema": bench.SCHEMA, "created_utc": "t", "command": [], "settings": {},
            "environment": env, "ceilings": {"copy": {"gbps": 1.0}, "matmul": {"float32": {"tflops": 1.0}}},
            "rows": [row], "notes": []}


def test_check_document_accepts_valid_and_names_what_is_wrong():
    bench.check_document(_valid_doc())
    doc = _valid_doc()
    del doc["rows"][0]["stats"]
    with pytest.raises(ValueError, match=r"rows\[0\]: missing key 'stats'"):
        bench.check_document(doc)
    doc = _valid_doc()
    doc["rows"][0]["batch"] = "2"
    with pytest.raises(ValueError, match=r"rows\[0\].batch"):
        bench.check_document(doc)
    doc = _valid_doc()
    doc["rows"][0]["samples_s"] = [1.0]
    with pytest.raises(ValueError, match="samples"):
        bench.check_document(doc)


def test_smoke_run_through_main_writes_valid_json(tmp_path, monkeypatch, fresh_backends):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    out = tmp_path / "out.json"
    table = tmp_path / "table.md"
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--threads", "1",
               "--json", str(out), "--table", str(table)])
    assert rc == 0
    doc = json.loads(out.read_text())
    bench.check_document(doc)
    assert doc["settings"]["backend"] == "numpy"
    assert doc["settings"]["threads"] == 1
    stages = {r["stage"] for r in doc["rows"]}
    assert set(bench.STAGES + ("db.sum", "db.ones")) <= stages
    for r in doc["rows"]:
        assert len(r["samples_s"]) == bench.REPEATS["smoke"]
        assert all(v > 0 for v in r["samples_s"])  # real timings of real calls
    assert doc["ceilings"]["copy"]["gbps"] > 0
    assert "float32" in doc["ceilings"]["matmul"]
    text = table.read_text()
    assert "| tiny | 8x4x3 | float32 | step |" in text


def test_plot_is_written(tmp_path, monkeypatch, fresh_backends):
    pytest.importorskip("matplotlib", reason="matplotlib is in the bench extra")
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    png = tmp_path / "p.png"
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--no-torch",
               "--threads", "1", "--shapes", "tiny", "--plot", str(png)])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_option_is_a_one_line_error(capsys, fresh_backends):
    rc = main(["bench", "--smoke", "--backend", "numpy", "--shapes", "2x3", "--no-progress"])
    assert rc == 1
    assert "BATCHxINxOUT" in capsys.readouterr().err


# -- the NumPy backend's bias gradient (BLAS gemv) ------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_bias_grad_gemv_matches_float64_sum(rng, dtype):
    be = NumpyBackend()
    dy = rng.standard_normal((5000, 7)).astype(dtype)
    ref = dy.astype(np.float64).sum(axis=0)
    # float32: each partial sum is rounded once per row added: error <= n * eps * sum|dy|
    tol = (5000 * np.finfo(dtype).eps) * np.abs(dy).astype(np.float64).sum(axis=0)
    db = be.bias_grad(dy)
    assert db.dtype == dtype
    assert np.all(np.abs(db - ref) <= tol)
    out = np.full(7, 2.0, dtype)
    be.bias_grad(dy, out, accumulate=True)
    assert np.all(np.abs(out - (ref + 2.0)) <= tol + 4 * np.finfo(dtype).eps)
    # a shorter batch afterwards reuses the cached ones vector (a slice of it)
    np.testing.assert_allclose(be.bias_grad(dy[:3]), dy[:3].astype(np.float64).sum(0),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_argv_of_round_trips_through_the_parser():
    import argparse

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ["--backend", "numpy", "--shapes", "small,2x3x4", "--repeats", "7", "--threads", "1",
            "--quick", "--no-torch", "--seed", "5", "--json", "o.json"]
    args = parser.parse_args(argv)
    again = parser.parse_args(bench.argv_of(args))
    assert vars(again) == vars(args)
    assert "--json" not in bench.argv_of(args, drop=("json",))


def test_finish_ceilings_pools_samples_and_uses_the_fastest():
    before = {"copy": {"bytes": 10**9, "samples_s": [1.0, 0.5]},
              "matmul": {"float32": {"n": 1000, "samples_s": [4e-3, 2e-3]}}}
    after = {"copy": {"bytes": 10**9, "samples_s": [0.25]},
             "matmul": {"float32": {"n": 1000, "samples_s": [3e-3]}}}
    c = bench.finish_ceilings(before, after)
    assert c["copy"]["samples_s"] == [1.0, 0.5, 0.25]
    assert c["copy"]["gbps"] == 8.0  # 2 GB moved in the fastest 0.25 s
    assert c["copy"]["gbps_median"] == 4.0
    assert c["matmul"]["float32"]["tflops"] == pytest.approx(1.0)  # 2e9 flop in 2 ms
    assert c["matmul"]["float32"]["stats"]["n"] == 3
    # a child process gets the parent's copy bandwidth instead of measuring it
    given = {"copy": {"gbps": 5.0, "how": "parent"}, "matmul": {}}
    assert bench.finish_ceilings(given, {"copy": None, "matmul": {}})["copy"]["gbps"] == 5.0


# -- the CPU copy ceiling at the run's thread count ------------------------------------------

def test_chunk_bounds_cover_the_range_contiguously():
    assert bench.chunk_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert bench.chunk_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty chunk
    assert bench.chunk_bounds(7, 1) == [(0, 7)]
    for n, parts in ((1, 1), (1000003, 2), (1000003, 7), (5, 5)):
        b = bench.chunk_bounds(n, parts)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        sizes = [hi - lo for lo, hi in b]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for bad in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            bench.chunk_bounds(*bad)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_parallel_copy_copies_every_element(rng, threads):
    src = rng.standard_normal(100_003).astype(np.float32)  # not a multiple of the thread count
    dst = np.zeros_like(src)
    with bench.ParallelCopy(dst, src, threads=threads) as copy:
        assert len(copy.pieces) == threads
        copy()
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(ValueError):
        bench.ParallelCopy(dst, src[:5], threads=2)
    with pytest.raises(ValueError):
        bench.ParallelCopy(dst, src, threads=0)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_cpu_copy_ceiling_runs_at_the_given_thread_count(threads):
    sizes = bench.CEILING_SIZES["smoke"]
    c = bench.measure_ceilings(NumpyBackend(), ["float32"], sizes=sizes, repeats=2, warmup=0,
                               threads=threads)
    n = threads or 1
    assert c["copy"]["threads"] == n
    assert f"{n} contiguous chunks by {n} threads" in c["copy"]["how"]
    assert c["copy"]["bytes"] == sizes["copy_bytes"] and len(c["copy"]["samples_s"]) == 2
    # finish_ceilings keeps the thread count with the pooled samples
    assert bench.finish_ceilings(c, c)["copy"]["threads"] == n


def test_format_percent_marks_fractions_above_the_ceiling():
    assert bench.format_percent(0.5) == "50"
    assert bench.format_percent(1.0) == "100"
    assert bench.format_percent(1.02) == "102!"  # kept as measured, not capped
    assert bench.format_percent(2.0) == "200!"
    assert bench.format_percent(None) == "-" and bench.format_percent(math.nan) == "-"


def _table_doc(frac_bw):
    doc = _valid_doc()
    doc["settings"] = {"mode": "quick", "backend": "numpy", "threads": 2}
    doc["ceilings"]["copy"].update(threads=2)
    doc["ceilings"]["matmul"]["float32"]["n"] = 64
    doc["rows"][0]["frac_bw"] = frac_bw
    return doc


def test_table_flags_a_fraction_above_one_and_explains_the_mark():
    text = bench.format_table(_table_doc(1.02))
    row = [ln for ln in text.splitlines() if ln.startswith("| s |")][0]
    assert row.split("|")[10].strip() == "50" and row.split("|")[11].strip() == "102!"
    assert "! above 100%" in text
    assert "copy 1.0 GB/s (2 threads)" in text
    text = bench.format_table(_table_doc(0.9))
    assert "! above 100%" not in text and "| 90 |" in text


# -- option checks: at once, one line, before the sweep ----------------------------------------

def _no_sweep(*args, **kwargs):
    raise AssertionError("the sweep ran although an option was bad")


@pytest.mark.parametrize("argv, what", [
    (["--repeats", "0"], "argument --repeats: expected an integer >= 1; got '0'"),
    (["--repeats", "x"], "argument --repeats: expected an integer >= 1; got 'x'"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1; got '0'"),
    (["--threads", "-1"], "argument --threads: expected an integer >= 1; got '-1'"),
    (["--warmup", "-1"], "argument --warmup: expected an integer >= 0; got '-1'"),
])
def test_bad_counts_are_rejected_by_the_parser_on_one_line(argv, what, capsys, monkeypatch):
    monkeypatch.setattr(bench, "sweep", _no_sweep)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--smoke", "--backend", "numpy", "--no-progress"] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"gpudense bench: error: {what}")


def test_zero_warmup_and_explicit_repeats_are_kept():
    import argparse

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--warmup", "0", "--repeats", "1", "--threads", "1"])
    assert (args.warmup, args.repeats, args.threads) == (0, 1, 1)


@pytest.mark.parametrize("name", ["p.pdf", "p", "p.png.txt"])
def test_plot_path_not_png_fails_before_the_sweep(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "sweep", _no_sweep)
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress",
               "--plot", str(tmp_path / name)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--plot: expected a path ending in .png" in err


@pytest.mark.parametrize("flag", ["--json", "--table", "--plot"])
def test_output_under_a_file_fails_before_the_sweep(flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "sweep", _no_sweep)
    (tmp_path / "afile").write_text("x")
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress",
               flag, str(tmp_path / "afile" / "out.png")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{flag}: cannot create the folder" in err


def test_output_that_is_a_folder_fails_before_the_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "sweep", _no_sweep)
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--json", str(tmp_path)])
    assert rc == 1
    assert "--json: expected a file path" in capsys.readouterr().err


def test_missing_output_folders_are_created_before_the_sweep(tmp_path, monkeypatch, capsys):
    paths = {flag: tmp_path / flag.strip("-") / "sub" / f"out.{ext}"
             for flag, ext in (("--json", "json"), ("--table", "md"), ("--plot", "png"))}
    seen = {}

    def fake_sweep(args, **kwargs):
        seen.update({flag: p.parent.is_dir() for flag, p in paths.items()})
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(bench, "sweep", fake_sweep)
    argv = ["bench", "--smoke", "--backend", "numpy", "--no-progress"]
    for flag, p in paths.items():
        argv += [flag, str(p)]
    assert main(argv) == 1
    assert seen == {"--json": True, "--table": True, "--plot": True}
    assert "stopped by the test" in capsys.readouterr().err


# -- the real --quick CPU sweep (issue 5: "a --quick CPU run in CI") -------------------------

def test_quick_cpu_run_writes_a_valid_document(tmp_path, monkeypatch, fresh_backends):
    """The sweep a new user runs with ``gpudense bench --quick --json out.json`` on a CPU.

    Tens of seconds on 2 cores: the real --quick shapes, repeats and ceiling sizes.
    Nothing about the times is asserted, only that every promised row and field is there.
    """
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    torch_ok = bench._torch_importable()
    out = tmp_path / "quick.json"
    argv = ["bench", "--quick", "--backend", "numpy", "--no-progress", "--json", str(out)]
    if not torch_ok:
        argv.append("--no-torch")  # CI has no torch
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    bench.check_document(doc)
    s = doc["settings"]
    assert s["mode"] == "quick" and s["backend"] == "numpy" and s["dtypes"] == ["float32"]
    assert s["repeats"] == bench.REPEATS["quick"] and s["threads"] >= 1
    assert {k: tuple(v) for k, v in s["shapes"].items()} == bench.SHAPES["cpu-quick"]
    sizes = bench.CEILING_SIZES["cpu-quick"]
    copy = doc["ceilings"]["copy"]
    assert copy["bytes"] == sizes["copy_bytes"] and copy["threads"] == s["threads"]
    assert copy["gbps"] > 0 and len(copy["samples_s"]) == 2 * bench.REPEATS["quick"]
    assert doc["ceilings"]["matmul"]["float32"]["n"] == sizes["matmul_n"]
    assert doc["ceilings"]["matmul"]["float32"]["tflops"] > 0
    want = set(bench.STAGES + ("db.sum", "db.ones") + (("torch.step",) if torch_ok else ()))
    for name, dims in bench.SHAPES["cpu-quick"].items():
        rows = [r for r in doc["rows"] if r["shape"] == name]
        assert {r["stage"] for r in rows} == want, name
        for r in rows:
            assert (r["batch"], r["n_in"], r["n_out"]) == dims
            assert len(r["samples_s"]) == bench.REPEATS["quick"]
            assert all(v > 0 for v in r["samples_s"])  # real timings of real calls
            assert r["frac_bw"] > 0 and r["gbps"] > 0
        step = next(r for r in rows if r["stage"] == "step")
        assert ("torch.step" in step["ratios"]) == torch_ok
